"""The package's layout rules: who may import whom, read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cc_executor_nb"
PURE_CORE = ("protocol.py", "errors.py", "events.py", "methods.py", "targets.py", "declare.py", "shellwords.py")


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    """The imports of ``path`` that start with one of ``prefixes``."""
    return sorted(
        name for name in imports_of(path) if any(name == p or name.startswith(p + ".") for p in prefixes)
    )


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("server"), ids=lambda p: p.name)
def test_server_imports_no_kernel_claude_ipython_or_widgets(path: Path) -> None:
    """Nothing under server/ imports the kernel side, Claude, IPython or ipywidgets."""
    assert forbidden(path, ("cc_executor_nb.kernel", "cc_executor_nb.claude", "IPython", "ipywidgets")) == []


@pytest.mark.parametrize("path", modules("claude"), ids=lambda p: p.name)
def test_claude_imports_widgets_only_in_its_renderer(path: Path) -> None:
    """Under claude/ only the renderer may import ipywidgets; nothing imports the kernel side."""
    banned = ("cc_executor_nb.kernel",) if path.name == "render.py" else ("ipywidgets", "cc_executor_nb.kernel")
    assert forbidden(path, banned) == []


@pytest.mark.parametrize("name", PURE_CORE)
def test_pure_core_imports_no_asyncio_or_io_library(name: str) -> None:
    """The shared vocabulary (protocol, errors, events, methods, targets, declare) is pure."""
    io = ("asyncio", "websockets", "socket", "subprocess", "IPython", "ipywidgets", "psutil")
    assert forbidden(PACKAGE / name, io) == []
    inner = [n for n in imports_of(PACKAGE / name) if n.startswith("cc_executor_nb.")]
    assert all(n.split(".")[1] in {Path(m).stem for m in PURE_CORE} for n in inner), inner


@pytest.mark.parametrize(
    "name",
    [
        "textview.py", "claudetext.py", "html.py", "runstate.py", "coalescer.py", "presenter.py",
        "transcript.py", "display.py", "jobsview.py",
    ],
)
def test_text_side_of_the_kernel_imports_no_widgets(name: str) -> None:
    """Text rendering works where ipywidgets is absent: only views.py imports it."""
    assert forbidden(PACKAGE / "kernel" / name, ("ipywidgets",)) == []


def test_forbidden_finds_a_relative_import(tmp_path: Path) -> None:
    """The checker resolves ``from ..kernel import x`` inside server/ (it can fail)."""
    fake = PACKAGE / "server" / "_layout_probe.py"
    fake.write_text("from ..kernel import run\nimport ipywidgets\n")
    try:
        assert forbidden(fake, ("cc_executor_nb.kernel", "ipywidgets")) == [
            "cc_executor_nb.kernel", "cc_executor_nb.kernel.run", "ipywidgets",
        ]
    finally:
        fake.unlink()


def test_package_all_lists_exactly_the_lazy_exports() -> None:
    """The package's spelled-out ``__all__`` and its lazy ``_EXPORTS`` table name the same things."""
    import cc_executor_nb

    assert sorted(cc_executor_nb.__all__) == sorted(["__version__", *cc_executor_nb._EXPORTS])
    assert all(getattr(cc_executor_nb, name) is not None for name in cc_executor_nb.__all__)


@pytest.mark.parametrize("path", [p for p in sorted(PACKAGE.rglob("*.py")) if "cluster" not in p.parts],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cluster_package_imports_dask(path: Path) -> None:
    """dask and distributed are an optional extra: only cc_executor_nb.cluster imports them."""
    assert forbidden(path, ("dask", "distributed")) == []


def test_a_local_batch_imports_neither_dask_nor_pandas() -> None:
    """Importing the package and running a batch without a cluster loads no dask, distributed or pandas."""
    import subprocess
    import sys

    code = (
        "import sys, cc_executor_nb\n"
        "from cc_executor_nb.kernel.config import CCExec\n"
        "b = cc_executor_nb.map(['echo hi'], command=True, display=False, wait=True,"
        " settings=CCExec(history_path='none'))\n"
        "assert b.results() == ['hi\\n'], b.results()\n"
        "print(sorted(m for m in ('dask', 'distributed', 'pandas') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
