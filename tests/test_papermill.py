"""A notebook run by papermill: parameters injected, executed headless with no stdin.

papermill's Python API executes a parametrized notebook in a kernel it starts (nbclient,
``allow_stdin`` off): a command run using a parameter, a Claude run against the demo
backend, and a permission question nobody can answer. The saved outputs must hold the
records of all three, and no traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest

from cc_executor_nb.demo.texts import haikus

from .util import scaled

pytestmark = [pytest.mark.kernel, pytest.mark.claude, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]
MIMES = ("text/plain", "text/markdown", "text/html")

CELLS = [
    ("parameters", 'greeting = "default"\ntopic = "the sea"'),
    (None, "%load_ext cc_executor_nb"),
    (None, '%ccexec -c "echo {greeting}" --wait -o echoed'),
    (None, '%ccexec --demo --wait "write 3 haikus about {topic}"'),
    (None, '%ccexec --demo --wait -o touched "bash: touch unattended.txt"'),
    (None, "print([(q.status, q.decided_by) for q in touched.permission_requests])"),
]


def parametrized_notebook(path: Path) -> None:
    """Write the notebook of ``CELLS``, the first one tagged ``parameters``."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for tag, source in CELLS:
        cell = nbformat.v4.new_code_cell(source)
        if tag:
            cell.metadata["tags"] = [tag]
        notebook.cells.append(cell)
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    """The notebook executed by papermill with ``greeting`` and ``topic`` injected."""
    tmp = tmp_path_factory.mktemp("papermill")
    return execute(tmp), tmp


def execute(tmp: Path, **options: Any) -> nbformat.NotebookNode:
    """``CELLS`` executed by papermill in ``tmp`` with ``greeting`` and ``topic`` injected."""
    parametrized_notebook(tmp / "in.ipynb")
    with pytest.MonkeyPatch.context() as patch:
        # The kernel papermill starts inherits this environment: this checkout on its path,
        # a private IPython and Jupyter home.
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        patch.setenv("IPYTHONDIR", str(tmp / "ipython"))
        patch.setenv("JUPYTER_CONFIG_DIR", str(tmp / "jupyter"))
        papermill.execute_notebook(
            str(tmp / "in.ipynb"), str(tmp / "out.ipynb"), kernel_name="python3", cwd=str(tmp),
            parameters={"greeting": "hello-from-papermill", "topic": "the sea"},
            progress_bar=False, execution_timeout=int(scaled(120)), **options,
        )
    return nbformat.read(tmp / "out.ipynb", as_version=4)


def cell_outputs(notebook: nbformat.NotebookNode, source: str) -> list[dict[str, Any]]:
    """The outputs of the one cell whose source is ``source``."""
    [cell] = [cell for cell in notebook.cells if cell.source == source]
    return list(cell.outputs)


def record(notebook: nbformat.NotebookNode, source: str) -> dict[str, str]:
    """The one display output (the run's record) of the cell ``source``."""
    [output] = [o for o in cell_outputs(notebook, source) if o["output_type"] == "display_data"]
    return dict(output["data"])


def test_the_parameters_are_injected(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    """papermill adds its injected-parameters cell after the tagged one."""
    notebook, _ = executed
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "hello-from-papermill" in injected[0].source


def test_the_command_record_holds_the_injected_parameter(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    """The -c run's record, in each MIME type, shows the command's output with the parameter's value."""
    notebook, _ = executed
    data = record(notebook, CELLS[2][1])
    assert all("hello-from-papermill" in data[mime] for mime in MIMES), data
    assert "completed" in data["text/plain"]


def test_the_claude_record_holds_the_answer(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    """The demo Claude run's record holds the haikus and its footer."""
    notebook, _ = executed
    data = record(notebook, CELLS[3][1])
    assert haikus(3) in data["text/plain"] and haikus(3) in data["text/markdown"]
    assert "[result] done" in data["text/plain"]


def test_a_question_nobody_can_answer_is_denied_clearly(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    """No stdin under papermill: the question is denied for nobody, the record says so, nothing ran."""
    notebook, tmp = executed
    data = record(notebook, CELLS[4][1])
    assert all("nobody could answer" in data[mime] for mime in MIMES), data
    assert not (tmp / "unattended.txt").exists()
    [printed] = cell_outputs(notebook, CELLS[5][1])
    assert printed["text"] == "[('denied', 'auto')]\n"


def test_no_traceback_and_no_error_output(executed: tuple[nbformat.NotebookNode, Path]) -> None:
    """No cell failed, printed a traceback, or wrote to stderr."""
    notebook, _ = executed
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], outputs
    assert "Traceback" not in json.dumps(outputs)


def test_widget_state_is_left_out_as_the_readme_says(
    executed: tuple[nbformat.NotebookNode, Path], tmp_path: Path
) -> None:
    """papermill keeps nbclient's widget state unless told ``store_widget_state=False`` (README);
    told so, the notebook has none and the records stand as before."""
    notebook, _ = executed
    assert "widgets" in notebook.metadata
    lean = execute(tmp_path, store_widget_state=False)
    assert "widgets" not in lean.metadata
    assert all("hello-from-papermill" in record(lean, CELLS[2][1])[mime] for mime in MIMES)
    assert haikus(3) in record(lean, CELLS[3][1])["text/plain"]
