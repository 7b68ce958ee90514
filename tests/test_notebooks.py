"""The example notebooks store what the current code makes, in the cells nbval ignores too.

nbval compares a fresh run with the stored outputs, except in the cells tagged
``nbval-ignore-output``: those show a run, and nbval never sees the update that puts the
final record in the widget's place. Their stored records went stale unnoticed (the exit
code on a line of its own, the Claude part's old opening tag, the batch table's old
layout), and they are what a person opening a notebook from the repository reads.
``notebooks/refresh.py`` compares the form of every stored output with a fresh run's.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def load_refresh() -> ModuleType:
    """``notebooks/refresh.py`` as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location("notebooks_refresh", NOTEBOOKS / "refresh.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


refresh = load_refresh()


def notebook_showing(*outputs: dict[str, Any]) -> Any:
    """A notebook of one code cell with ``outputs`` (each a display_data's MIME bundle)."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run = %ccexec -c 'exit 3' --wait")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data) for data in outputs]
    notebook.cells = [nbformat.v4.new_markdown_cell("A run"), cell]
    return notebook


STATUS = "<div class='ccx-status-line'><span class=\"ccx-badge\">failed</span>"
CLOCK = '<span class="ccx-clock">took 4 ms</span>'
OLD_RECORD = f'<div class="ccx-record">{STATUS}{CLOCK}</div><div class="ccx-summary">exit code 3</div></div>'
NEW_RECORD = f'<div class="ccx-record">{STATUS}<span class="ccx-exit">exit code 3</span>{CLOCK}</div></div>'


def lint_paths() -> set[str]:
    """The paths ``make lint`` hands to ruff."""
    recipe = re.search(r"^\t\$\(PY\) -m ruff check (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert recipe is not None, "no ruff step in the Makefile"
    return set(recipe.group(1).split())


def test_make_lint_checks_every_folder_of_python_code_and_notebooks() -> None:
    """``make lint`` runs ruff on every tracked folder holding Python files or notebooks: the
    example notebooks' cells went unlinted (several imports on one line, lines too long)."""
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    folders = {Path(name).parts[0] for name in tracked if len(Path(name).parts) > 1}
    assert "notebooks" in folders
    assert folders <= lint_paths(), folders - lint_paths()


def test_a_record_whose_exit_code_stands_on_its_own_line_is_stale() -> None:
    """A stored record laid out as the code used to make it is reported, with the tag that differs."""
    stored = notebook_showing({"text/html": OLD_RECORD, "text/plain": "failed · exit code 3 · took 4 ms"})
    fresh = notebook_showing({"text/html": NEW_RECORD, "text/plain": "failed · exit code 3 · took 4 ms"})
    stale = refresh.stale_cells(stored, fresh)
    assert len(stale) == 1 and stale[0].startswith("cell 1: ")
    assert "stored '<span class=\"ccx-clock\">' where a fresh run makes '<span class=\"ccx-exit\">'" in stale[0]


def test_an_opening_tag_that_gained_a_style_is_stale() -> None:
    """The same tags with another attribute (the Claude part's font size) are stale."""
    stored = notebook_showing({"text/html": '<div class="ccx-claude"><p>hi</p></div>'})
    fresh = notebook_showing({"text/html": '<div class="ccx-claude" style="font-size:14px"><p>hi</p></div>'})
    assert refresh.stale_cells(stored, fresh) != []


def test_a_text_record_with_another_line_layout_is_stale() -> None:
    """text/plain whose exit code moved to a line of its own is stale too."""
    stored = notebook_showing({"text/plain": "sh\nfailed · took 4 ms\nexit code 3\n"})
    fresh = notebook_showing({"text/plain": "sh\nfailed · exit code 3 · took 4 ms\n"})
    assert refresh.stale_cells(stored, fresh) != []


def test_outputs_differing_only_in_what_varies_from_run_to_run_are_not_stale() -> None:
    """Durations, session ids, pids, ports, a cancelled count's length and widget model ids
    change from run to run: a record that differs only in those is up to date."""
    session, other = "1ad8686f-abc4-4039-90f6-c2aca670443b", "3cf76e44-cb89-45ca-bfd6-871c2ab1a4b8"
    stored = notebook_showing(
        {
            "text/html": f'<div class="ccx-record" title="session {session}"><pre>0\n1\n2\n</pre></div>',
            "text/plain": f"took 544 ms · pid 41 · ws://127.0.0.1:43675/ws · session {session}\n0\n1\n2\n",
            "application/vnd.jupyter.widget-view+json": {"model_id": "a" * 32, "version_major": 2},
        }
    )
    fresh = notebook_showing(
        {
            "text/html": f'<div class="ccx-record" title="session {other}"><pre>0\n1\n</pre></div>',
            "text/plain": f"took 1.1 s · pid 31479 · ws://127.0.0.1:33091/ws · session {other}\n0\n1\n",
            "application/vnd.jupyter.widget-view+json": {"model_id": "b" * 32, "version_major": 2},
        }
    )
    assert refresh.stale_cells(stored, fresh) == []


def test_an_output_a_fresh_run_no_longer_makes_is_stale() -> None:
    """A stored output beyond the fresh run's (a widget's bundle left beside the record) is stale."""
    stored = notebook_showing({"text/plain": "done"}, {"text/plain": "done"})
    fresh = notebook_showing({"text/plain": "done"})
    assert refresh.stale_cells(stored, fresh) == ["cell 1: stored 6 items where a fresh run makes 3"]


def notebook_printing(*streams: tuple[str, str]) -> Any:
    """A notebook of one code cell whose outputs are ``streams``, each ``(name, text)``."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('a'); time.sleep(1); print('b')")
    cell.outputs = [nbformat.v4.new_output("stream", name=name, text=text) for name, text in streams]
    notebook.cells = [cell]
    return notebook


def test_prints_the_kernel_sent_in_two_messages_are_the_same_output_as_in_one() -> None:
    """A cell's prints reach the notebook in one stream output or in several, as the kernel's
    flush timer cut them (a slow cell between two prints): one text to a reader, and to nbval."""
    stored = notebook_printing(("stdout", "cancelled\ndone\n"))
    fresh = notebook_printing(("stdout", "cancelled\n"), ("stdout", "done\n"))
    assert refresh.stale_cells(stored, fresh, []) == []


def test_a_print_to_stderr_between_two_to_stdout_is_another_output() -> None:
    stored = notebook_printing(("stdout", "cancelled\ndone\n"))
    fresh = notebook_printing(("stdout", "cancelled\n"), ("stderr", "warning\n"), ("stdout", "done\n"))
    assert refresh.stale_cells(stored, fresh, []) == ["cell 0: stored 'done' where a fresh run makes 'stream' (item 3)"]


@pytest.mark.kernel
@pytest.mark.claude
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(path.name for path in NOTEBOOKS.glob("[0-9]*.ipynb")))
def test_the_stored_outputs_have_the_form_a_fresh_run_makes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored output of the notebook (records included) is what a fresh run makes now;
    when this fails, run ``notebooks/refresh.py NAME`` and review the diff."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    stale = refresh.check(NOTEBOOKS / name)
    assert not stale, f"{name} is stale (run notebooks/refresh.py {name}):\n" + "\n".join(stale)
