"""Execute the example notebooks top to bottom and store their outputs in place.

nbval (``make test``) compares a fresh run of every notebook with the outputs stored
in it, so run this after changing a notebook or a behaviour a notebook shows::

    .venv/bin/python notebooks/refresh.py                  # every notebook here
    .venv/bin/python notebooks/refresh.py 02_long_thinking.ipynb
    .venv/bin/python notebooks/refresh.py --check          # say which stored outputs are stale

Each notebook runs in a fresh kernel of this interpreter, in this folder, as nbval
runs it. Neither widget state nor execution timings are stored: the notebooks stay
small and a refresh changes only what a run really changed (and the random widget
model ids, which nbval ignores).

nbval cannot see every stale output: it ignores the cells that show a run (their final
record replaces the widget by an update nbval does not follow), so a record whose layout
the code has since changed stayed in the notebooks, which is what a person opening one
from the repository reads. ``--check`` (and ``tests/test_notebooks.py``) executes each
notebook and compares the *form* of every stored output with a fresh one: the MIME types,
the HTML's tags with their attributes, and the text's lines with every number made ``N``
(what varies from run to run: durations, session ids, pids, ports, how far a cancelled
count got).
"""

from __future__ import annotations

import configparser
import re
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

__all__ = ["execute", "output_form", "refresh", "stale_cells"]

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 120
TEXT_MIMES = ("text/plain", "text/markdown")


def execute(path: Path) -> Any:
    """A fresh run of the notebook at ``path`` (an nbformat node), as :func:`refresh` stores it."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
        store_widget_state=False,
    )
    client.execute()
    return notebook


def refresh(path: Path) -> float:
    """Execute the notebook at ``path``, write it back with its outputs; return seconds taken."""
    started = time.monotonic()
    notebook = execute(path)
    seconds = time.monotonic() - started
    nbformat.write(notebook, path)
    return seconds


# Comparing the form of outputs


def sanitizers(path: Path = HERE / "nbval_sanitize.cfg") -> list[tuple[str, str]]:
    """The (regex, replacement) pairs nbval applies, read from its configuration file."""
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    return [(parser[name]["regex"], parser[name]["replace"]) for name in parser.sections()]


def _sanitized(text: str, patterns: list[tuple[str, str]]) -> str:
    for regex, replacement in patterns:
        text = re.sub(regex, replacement, text)
    return text


def text_form(text: str, patterns: list[tuple[str, str]]) -> list[str]:
    """The text's lines, sanitized, numbers as ``N``, a line repeated in a row kept once."""
    lines = re.sub(r"\d+", "N", _sanitized(text, patterns)).splitlines()
    return [line for position, line in enumerate(lines) if position == 0 or line != lines[position - 1]]


class _Tags(HTMLParser):
    """Collects an HTML fragment's tags, each with its attributes, and none of its text."""

    def __init__(self, patterns: list[tuple[str, str]]) -> None:
        super().__init__(convert_charrefs=True)
        self.patterns = patterns
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        shown = " ".join(f'{name}="{_sanitized(value or "", self.patterns)}"' for name, value in attrs)
        self.tags.append(f"<{tag} {shown}>" if shown else f"<{tag}>")

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(f"</{tag}>")


def html_form(fragment: str, patterns: list[tuple[str, str]]) -> list[str]:
    """The fragment's tags in order, with their attributes (sanitized as nbval's patterns say)."""
    parser = _Tags(patterns)
    parser.feed(fragment)
    parser.close()
    return parser.tags


def output_form(output: dict[str, Any], patterns: list[tuple[str, str]]) -> list[str]:
    """What a fresh run must make again of one stored output: its type, MIME types, the
    HTML's tags and the text's lines (see the module's docstring for what is left out)."""
    data = dict(output.get("data", {}))
    if "text" in output:
        data["stream " + output.get("name", "")] = output["text"]
    form = [output["output_type"], *sorted(data)]
    for mime in sorted(data):
        value = data[mime]
        text = "".join(value) if isinstance(value, list) else value
        if mime == "text/html":
            form += html_form(text, patterns)
        elif mime in TEXT_MIMES or mime.startswith("stream"):
            form += text_form(text, patterns)
    return form


def coalesced(outputs: list[Any]) -> list[Any]:
    """``outputs`` with each run of stream outputs of one name joined into one, as nbval reads
    them: the kernel sends a cell's prints in one message or in several (its flush timer cuts
    them when the cell is slow between two), which is one text to a reader."""
    joined: list[Any] = []
    for output in outputs:
        last = joined[-1] if joined else None
        if (output.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                and last.get("name") == output.get("name")):
            joined[-1] = {**last, "text": _text(last["text"]) + _text(output["text"])}
        else:
            joined.append(output)
    return joined


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def _first_difference(stored: list[str], fresh: list[str]) -> str:
    for position, (old, new) in enumerate(zip(stored, fresh, strict=False)):
        if old != new:
            return f"stored {old!r} where a fresh run makes {new!r} (item {position})"
    return f"stored {len(stored)} items where a fresh run makes {len(fresh)}"


def stale_cells(stored: Any, fresh: Any, patterns: list[tuple[str, str]] | None = None) -> list[str]:
    """One line for each code cell whose stored outputs differ in form from a fresh run's."""
    patterns = sanitizers() if patterns is None else patterns
    stale = []
    for index, (old, new) in enumerate(zip(stored.cells, fresh.cells, strict=True)):
        if old.cell_type != "code":
            continue
        old_form = [item for output in coalesced(old.outputs) for item in output_form(output, patterns)]
        new_form = [item for output in coalesced(new.outputs) for item in output_form(output, patterns)]
        if old_form != new_form:
            stale.append(f"cell {index}: {_first_difference(old_form, new_form)}")
    return stale


def check(path: Path) -> list[str]:
    """The stale cells of the notebook at ``path`` (it is executed, not written)."""
    return stale_cells(nbformat.read(path, as_version=4), execute(path))


def main(argv: list[str]) -> int:
    checking = "--check" in argv
    names = [name for name in argv if name != "--check"]
    paths = [HERE / name for name in names] or sorted(HERE.glob("[0-9]*.ipynb"))
    stale = 0
    for path in paths:
        if checking:
            lines = check(path)
            stale += len(lines)
            print(f"{path.name}: " + ("up to date" if not lines else "stale\n  " + "\n  ".join(lines)), flush=True)
        else:
            print(f"{path.name}: {refresh(path):.1f} s", flush=True)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
