"""A notebook executed and exported by ``jupyter nbconvert`` keeps the record of its Claude runs.

The real CLI against the demo backend, in a kernel started by nbconvert (nbclient), then
the executed notebook exported to HTML: what a reader of the saved file sees with no
kernel and no widget state.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from cc_executor_nb.demo.texts import haikus

from .util import scaled

pytestmark = [pytest.mark.kernel, pytest.mark.claude, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"
HAIKU_LINES = [line for line in haikus(3).splitlines() if line and not line.startswith("Haiku")]


def nbconvert(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``jupyter nbconvert ARGS`` with this checkout on the kernel's path, in a private Jupyter home."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "IPYTHONDIR": str(tmp / "ipython"),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter"),
        "PYTHONWARNINGS": "ignore",
    }
    argv = [sys.executable, "-m", "nbconvert", *args]
    done = subprocess.run(argv, check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=scaled(150))
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def execute(tmp: Path, name: str, *cells: str) -> nbformat.NotebookNode:
    """Write a notebook of ``cells``, execute it with nbconvert, return the executed notebook."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in ("%load_ext cc_executor_nb", *cells)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp / f"{name}.ipynb")
    nbconvert(tmp, "--to", "notebook", "--execute", f"{name}.ipynb", "--output", f"{name}.out.ipynb")
    return nbformat.read(tmp / f"{name}.out.ipynb", as_version=4)


def export_html(tmp: Path, name: str) -> str:
    nbconvert(tmp, "--to", "html", f"{name}.out.ipynb", "--output", f"{name}.out.html")
    return (tmp / f"{name}.out.html").read_text(encoding="utf-8")


def outputs(notebook: nbformat.NotebookNode, cell: int = 1) -> list[dict[str, Any]]:
    return list(notebook.cells[cell].outputs)


def every_output(notebook: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in notebook.cells])


Executed = tuple[nbformat.NotebookNode, str]


def executed(tmp: Path, name: str, line: str) -> Executed:
    """A notebook running ``line``, executed by nbconvert, and its HTML export."""
    return execute(tmp, name, line), export_html(tmp, name)


@pytest.fixture(scope="module")
def sea(tmp_path_factory: pytest.TempPathFactory) -> Executed:
    """The haiku notebook, executed, and its HTML export."""
    return executed(tmp_path_factory.mktemp("sea"), "sea", '%ccexec --demo --wait "write 3 haikus about the sea"')


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Executed:
    """The same with --raw."""
    return executed(
        tmp_path_factory.mktemp("raw"), "raw", '%ccexec --demo --wait --raw "write 3 haikus about the sea"'
    )


@pytest.fixture(scope="module")
def xss(tmp_path_factory: pytest.TempPathFactory) -> Executed:
    """The markdown xss notebook."""
    return executed(tmp_path_factory.mktemp("xss"), "xss", '%ccexec --demo --wait "markdown xss"')


def test_a_run_that_ends_during_a_later_cell_is_saved_final(tmp_path: Path) -> None:
    """Without --wait, a run that ends while a later cell runs still leaves its final record in its own cell."""
    notebook = execute(tmp_path, "later", 'sea = %ccexec --demo "write 3 haikus about the sea"', "sea.wait();")
    [output] = outputs(notebook)
    assert WIDGET not in output["data"] and haikus(3) in output["data"]["text/plain"]
    assert outputs(notebook, cell=2) == []


def test_the_executed_notebook_keeps_haikus_and_footer_as_text_and_html(sea: Executed) -> None:
    """The run cell's one output is the final record: the three haikus and the footer, as text and as HTML."""
    notebook, _ = sea
    [output] = outputs(notebook)
    data = output["data"]
    assert output["output_type"] == "display_data" and WIDGET not in data
    assert haikus(3) in data["text/plain"] and haikus(3) in data["text/markdown"]
    assert all(f"{line}<br>" in data["text/html"] or f"{line}</p>" in data["text/html"] for line in HAIKU_LINES)
    assert re.search(r"\[result\] done · \$0\.\d{4} · [\d,]+ in / 61 out tokens · 1 agent turn · \d+ ms · "
                     r"claude-opus-5-5 · session [0-9a-f-]{36}", data["text/plain"])
    assert re.search(r'class="cc-footer"[^>]*>\$0\.\d{4} · [\d,]+ in / 61 out tokens · 1 agent turn', data["text/html"])


def test_the_html_export_shows_haikus_and_footer(sea: Executed) -> None:
    """nbconvert --to html of the executed notebook shows every haiku line and the footer."""
    _, page = sea
    assert all(line in page for line in HAIKU_LINES)
    assert re.search(r'class="cc-footer"[^>]*>\$0\.\d{4} · [\d,]+ in / 61 out tokens · 1 agent turn · \d+ ms · '
                     r"claude-opus-5-5 · session [0-9a-f-]{36}<", page)


def test_no_stream_json_line_without_raw(sea: Executed) -> None:
    """Neither the notebook's outputs nor its HTML export hold a stream-json line."""
    notebook, page = sea
    assert '{\\"type\\":' not in every_output(notebook) and '{"type":' not in every_output(notebook)
    assert '{"type":' not in page and "{&quot;type&quot;:" not in page


def test_raw_keeps_the_stream_json_lines(raw: Executed) -> None:
    """With --raw the record is the CLI's JSON lines, in the notebook and in its HTML export."""
    notebook, page = raw
    [output] = outputs(notebook)
    assert '{"type":"system","subtype":"init"' in output["data"]["text/plain"]
    # The export's sanitizer writes the record's &quot; as a quote (the escaped form came from the
    # widget state nbclient had saved, which now holds no output).
    assert '{"type":"system","subtype":"init"' in page.split('<script type="application/vnd.jupyter.widget-state')[0]


def test_the_xss_answer_is_text_in_the_notebook_and_its_export(xss: Executed) -> None:
    """The markdown xss answer reaches the saved HTML and the export as escaped text, never as markup."""
    notebook, page = xss
    [output] = outputs(notebook)
    for text in (output["data"]["text/html"], page):
        assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;script&gt;alert(2)&lt;/script&gt;" in text
        assert "<img src=x" not in text and "<script>alert(2)" not in text
    assert "<h1>Demo report</h1>" in output["data"]["text/html"]


def widget_state(notebook: nbformat.NotebookNode) -> str:
    """The widget state nbclient saved in the notebook's metadata, as JSON."""
    return json.dumps(notebook.metadata.get("widgets", {}))


def test_a_huge_answer_is_not_kept_in_the_saved_widget_state(tmp_path: Path) -> None:
    """A 2 MB answer leaves a notebook of about its record's size: the widget state nbclient saves holds none of it."""
    notebook = execute(tmp_path, "huge", '%ccexec --demo --wait "huge reply"')
    [output] = outputs(notebook)
    assert "000199990|" in output["data"]["text/plain"]  # the record: the answer's first 200,000 characters
    saved = (tmp_path / "huge.out.ipynb").read_text(encoding="utf-8")
    assert "001999990|" not in saved  # the answer's last characters, beyond the record's cut
    assert len(widget_state(notebook)) < 100_000 and len(saved) < len(json.dumps(output)) + 150_000


def test_a_commands_huge_output_is_not_kept_in_the_saved_widget_state(tmp_path: Path) -> None:
    """A -c run printing 50 MB keeps its output's tail in its record only, not in the saved widget state."""
    script = tmp_path / "print.py"
    script.write_text("import sys\nfor i in range(500_000):\n    sys.stdout.write(f'line {i:06d} {87 * \"x\"}\\n')\n")
    notebook = execute(tmp_path, "print", f'%ccexec --wait -c "{sys.executable} {script}"')
    [output] = outputs(notebook)
    assert "line 499999 " in output["data"]["text/plain"]
    assert "line 499999 " not in widget_state(notebook) and len(widget_state(notebook)) < 50_000
