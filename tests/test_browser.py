"""The example notebooks in JupyterLab, in a real headless Chromium, checked as a person sees them.

JupyterLab serves a temporary copy of ``notebooks/`` on 127.0.0.1 with a token; Playwright
drives Debian's Chromium (``/usr/bin/chromium``; no browser is downloaded), runs every cell
with Run > Run All Cells and reads the rendered widgets from the page. Screenshots go to
``test-artifacts/browser/`` (the path is printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .util import eventually, scaled

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# JupyterLab settings for a quiet, predictable page: every cell stays in the DOM (no
# windowing), the notebook's kernel starts without a "Select Kernel" dialog even when
# the page asks before the kernel specs have loaded, and no news or update checks
# (there is no network to ask).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none",
        "autoStartDefaultKernel": True,
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
# Any alert() the page runs (the demo's XSS payloads call alert) is recorded instead.
TRAP_ALERTS = "window.alert = () => { window.__xss = (window.__xss || 0) + 1; };"
# One snapshot of a run's widget, read from the DOM in one go.
VIEW_STATE = """cell => {
  const run = cell.querySelector('.ccx-run');
  if (!run) return null;
  const text = selector => {
    const node = run.querySelector(selector);
    return node ? node.textContent.trim() : null;
  };
  // A turn's text stands among its tool cards, in as many answer boxes as it has parts.
  const answers = [...run.querySelectorAll('.cc-answer')].map(node => node.textContent.trim());
  const heart = run.querySelector('.ccx-heart');
  const silence = (run.textContent.match(/no output for (?:\\d+ (?:h|min) )?\\d+ (?:s|min)/) || [null])[0];
  return {
    status: text('span.ccx-badge'),
    heart: heart ? `${heart.className} ${heart.textContent}` : null,
    heartbeat: text('.ccx-hb-text'),
    silence: silence,
    answer: answers.length ? answers.join('\\n') : null,
    footer: text('.cc-footer'),
  };
}"""

T = TypeVar("T")


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    root: Path

    def notebook_url(self, name: str) -> str:
        """The notebook alone in a fresh workspace of its own (no tabs restored)."""
        workspace = name.split("_", 1)[0]
        return f"{self.url}lab/workspaces/nb{workspace}/tree/{name}?reset&token={self.token}"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium; CI installs it (.ci/run), elsewhere the tests skip without it."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def artifacts(pytestconfig: pytest.Config) -> Path:
    """A fresh screenshot folder, announced on the terminal (also with output captured)."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nbrowser screenshots: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium: str, artifacts: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 (a free port, a token) serving a copy of the notebooks."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with serve(home, root, artifacts / "jupyterlab.log") as running:
        yield running


@pytest.fixture(scope="module")
def kernelless_lab(
    tmp_path_factory: pytest.TempPathFactory, lab: Lab, artifacts: Path
) -> Iterator[Lab]:
    """A second JupyterLab on the same folder that cannot start any kernel (none is allowed)."""
    home = tmp_path_factory.mktemp("kernelless")
    no_kernels = "--KernelSpecManager.allowed_kernelspecs=no-such-kernel"
    with serve(home, lab.root, artifacts / "jupyterlab-kernelless.log", no_kernels) as running:
        yield running


@contextlib.contextmanager
def serve(home: Path, root: Path, log_copy: Path, *extra: str) -> Iterator[Lab]:
    """Run JupyterLab with its own settings and Jupyter folders under ``home``, serving ``root``."""
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "PYTHONWARNINGS": "ignore",
    }
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--ServerApp.allow_root=True",  # CI runs as root
        "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        *extra,
    ]  # fmt: skip
    log = (home / "jupyterlab.log").open("w")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = None
    try:
        url = _server_url(home / "runtime", server)
        yield Lab(url, token, root)
    finally:
        _stop_server(server, url, token)
        log.close()
        shutil.copy(home / "jupyterlab.log", log_copy)


def _server_url(runtime: Path, server: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    """The server's base URL from its runtime file, once it serves."""
    def ready() -> str | None:
        if server.poll() is not None:
            raise RuntimeError(f"jupyterlab exited with {server.returncode} (log: {ARTIFACTS})")
        for info in runtime.glob(f"jpserver-{server.pid}.json"):
            data = json.loads(info.read_text() or "{}")
            if data.get("port"):
                return f"http://127.0.0.1:{data['port']}{data.get('base_url', '/')}"
        return None

    return poll(ready, timeout, "JupyterLab to start", interval=0.2)


def _stop_server(server: subprocess.Popen[bytes], url: str | None, token: str) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure it is gone."""
    if url is not None and server.poll() is None:
        request = urllib.request.Request(
            f"{url}api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
        )
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        with contextlib.suppress(OSError):
            direct.open(request, timeout=scaled(10)).close()
    try:
        server.wait(timeout=scaled(20))
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=scaled(10))


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """Headless Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page in which alert() sets window.__xss and dialogs are recorded.

    Its last state is kept as ``<test name>-last.png``, which is what to look at when
    a test fails.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.add_init_script(TRAP_ALERTS)
    tab = context.new_page()
    tab.dialogs = []
    tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
    console: list[str] = []
    tab.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    tab.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    yield tab
    tab.screenshot(path=str(artifacts / f"{request.node.name}-last.png"), full_page=True)
    (artifacts / f"{request.node.name}-console.log").write_text("\n".join(console) + "\n")
    context.close()


# Helpers


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """``util.eventually`` at the page's pace: each look is a round trip to the browser."""
    return eventually(check, timeout=timeout, interval=interval, what=what)


def open_and_run_all(page: Any, lab: Lab, name: str) -> None:
    """Open a notebook, wait for its kernel, clear the stored outputs, then Run > Run All Cells."""
    page.goto(lab.notebook_url(name))
    poll(lambda: _kernel_ready(page), 60, f"the kernel of {name}")
    page.locator(".jp-Notebook .jp-Cell").first.click()  # the notebook becomes the current widget
    poll(lambda: menu(page, "Edit", "editmenu:clear-all") and _cleared(page), 20, "cleared cells")
    clicks: list[float] = []

    def started() -> bool:
        """Whether a cell is queued or ran; clicks Run All Cells while none is.

        On a loaded machine the click can land before the notebook's session has its
        kernel attached: JupyterLab then queues nothing and says nothing. Every prompt
        still blank means nothing was queued, so clicking again cannot run a cell twice.
        """
        if _prompts(page)[0] != "[ ]:":
            return True
        if (not clicks or time.monotonic() - clicks[-1] > scaled(5)) and menu(page, "Run", "runmenu:run-all"):
            clicks.append(time.monotonic())
        return False

    poll(started, 40, "Run All Cells to start")
    if len(clicks) > 1:
        print(f"\n{name}: Run All Cells clicked {len(clicks)} times before a cell was queued")


def menu(page: Any, title: str, command: str) -> bool:
    """Click a menu bar entry, then one of its items (a JupyterLab command id).

    Returns False, with the menu closed again, while the item is disabled (before the
    notebook is the current widget, for instance).
    """
    page.locator(".lm-MenuBar-item").filter(has_text=re.compile(f"^{title}$")).click()
    item = page.locator(f'.lm-Menu-item[data-command="{command}"]')
    item.wait_for()
    if "lm-mod-disabled" in (item.get_attribute("class") or ""):
        page.keyboard.press("Escape")
        return False
    item.click()
    return True


def _cleared(page: Any) -> bool:
    prompts = _prompts(page)
    return bool(prompts) and all(p == "[ ]:" for p in prompts)


def _kernel_ready(page: Any) -> bool:
    """Whether the notebook's kernel is idle; accepts a kernel dialog should one appear."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator(".jp-mod-accept").click()
        return False
    return bool(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count())


def _prompts(page: Any) -> list[str]:
    return [p.strip() for p in page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]


def code_cell(page: Any, source: str) -> Any:
    """The code cell whose source contains ``source``."""
    return page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=source))


def prompt(cell: Any) -> str:
    """The cell's input prompt: "[*]:" while it runs."""
    return str(cell.locator(".jp-InputPrompt").inner_text()).strip()


def view(cell: Any) -> dict[str, Any] | None:
    """What the cell's run widget shows now, or None before it renders."""
    return cell.evaluate(VIEW_STATE)  # type: ignore[no-any-return]


def screenshot(page: Any, cell: Any, name: str) -> Path:
    """A screenshot of the page with ``cell`` in view."""
    cell.scroll_into_view_if_needed()
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def wait_for_all_cells(page: Any, timeout: float) -> None:
    """Until no cell is running or queued ("[*]") and every code cell has run."""
    def done() -> bool:
        prompts = _prompts(page)
        return bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)

    poll(done, timeout, "every cell to finish")


# Tests


def test_quickstart_streams_the_answer_and_keeps_html_inert(
    lab: Lab, page: Any, artifacts: Path
) -> None:
    """01_quickstart: the widget renders, the story grows live, the footer shows status and cost, XSS stays text."""
    open_and_run_all(page, lab, "01_quickstart.ipynb")
    story = code_cell(page, "write a 300 word story")
    first = poll(lambda: _with_words(view(story), 1), 60, "the story's first words")
    screenshot(page, story, "01-story-streaming-1.png")
    assert first["status"] == "running", first
    grown = poll(lambda: _with_words(view(story), _words(first) + 30), 20, "the story to grow")
    screenshot(page, story, "01-story-streaming-2.png")
    print(f"story words on screen: {_words(first)} then {_words(grown)}")

    final = poll(lambda: _finished(view(story)), 30, "the story run to finish")
    assert final["status"] == "completed", final
    # The badge and the answer are separate widgets: the answer's last update can land a
    # moment after the status; what the page settles on is the whole story.
    final = poll(lambda: _with_words(view(story), 300), 10, "the whole story on screen")
    assert _words(final) == 300, final
    assert re.search(r"\$\d+\.\d{4}", final["footer"]), final["footer"]
    screenshot(page, story, "01-story-final.png")

    echo = view(code_cell(page, "echo: hello from the notebook"))
    assert echo is not None and echo["status"] == "completed", echo
    assert echo["answer"] == "hello from the notebook" and "$" in echo["footer"], echo

    xss_cell = code_cell(page, 'xss = %ccexec --demo --wait "markdown xss"')
    xss = poll(lambda: _finished(view(xss_cell)), 60, "the markdown xss run to finish")
    # As for the story: what the page settles on holds the answer (widgets update one by one).
    xss = poll(lambda: _answered(view(xss_cell)), 10, "the markdown xss answer on screen")
    answer = xss_cell.locator(".cc-answer")
    assert "Demo report" in xss["answer"]
    assert "<img src=x onerror=alert(1)>" in xss["answer"]  # shown as text
    assert answer.locator("img, script").count() == 0
    assert page.locator("script", has_text="alert(2)").count() == 0
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    screenshot(page, xss_cell, "01-markdown-xss.png")
    wait_for_all_cells(page, 60)
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    assert page.locator(".ccx-run").count() == 4  # one live widget per run


def test_long_thinking_widget_ticks_while_another_cell_keeps_the_kernel_busy(
    lab: Lab, page: Any, artifacts: Path
) -> None:
    """02_long_thinking: heartbeat and silence timer change between screenshots while time.sleep(10) runs
    (with 5 s the sleep could end before a CLI slow to start on a loaded machine went silent)."""
    open_and_run_all(page, lab, "02_long_thinking.ipynb")
    think = code_cell(page, '"think for 8 seconds"')
    sleeper = code_cell(page, "time.sleep(10)")

    def busy_and_silent() -> dict[str, Any] | None:
        state = view(think)
        ok = state and state["silence"] and state["heart"] and prompt(sleeper) == "[*]:"
        return state if ok else None

    before = poll(busy_and_silent, 60, "the sleep cell to run while the run is silent")
    shot1 = screenshot(page, think, "02-thinking-busy-1.png")
    taken = time.monotonic()

    def changed() -> dict[str, Any] | None:
        state = view(think)
        # The CLI's start-up output can reset the silence timer (a slow start on a busy
        # machine): what counts is a timer that is running again, in the thinking phase.
        moved = (
            state
            and time.monotonic() - taken >= 1
            and state["status"] == "thinking"
            and state["heart"] != before["heart"]
            and state["silence"]
            and state["silence"] != before["silence"]
        )
        # The same look sees the sleep cell still running: the widget moved while the
        # kernel was busy (a second look could come after the sleep ended).
        return state if moved and prompt(sleeper) == "[*]:" else None

    after = poll(changed, 4, "the heartbeat and the silence timer to change while the sleep cell runs")
    shot2 = screenshot(page, think, "02-thinking-busy-2.png")
    print(f"\nbefore: {before}\nafter:  {after}\nscreenshots: {shot1.name}, {shot2.name}")
    # The cell above it has finished, so "[*]" means running, not queued.
    assert re.fullmatch(r"\[\d+\]:", prompt(think)), prompt(think)
    assert after["status"] == "thinking", after

    final = poll(lambda: _finished(view(think)), 30, "the thinking run to finish")
    assert final["status"] == "completed", final
    assert final["answer"] == "Done thinking. The answer is 42.", final
    assert re.search(r"\$\d+\.\d{4}", final["footer"]), final["footer"]
    screenshot(page, think, "02-thinking-final.png")
    wait_for_all_cells(page, 60)
    late = view(code_cell(page, "--timeout 2"))
    assert late is not None and late["status"] == "timeout", late


APPROVAL_CELLS = [
    "%load_ext cc_executor_nb",
    'from pathlib import Path\nPath("notes.txt").write_text("hello world\\nsecond line\\n")',
    'edit = %ccexec --demo "edit: notes.txt: hello world => goodbye world"',
]


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook of code cells with no outputs."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(path))


def test_approval_card_shows_the_diff_and_allow_completes_the_run(lab: Lab, page: Any, artifacts: Path) -> None:
    """An Edit asks: the card shows the tool and its diff, the badge says "needs you"; Allow completes the run."""
    write_notebook(lab.root / "90_approval.ipynb", APPROVAL_CELLS)
    open_and_run_all(page, lab, "90_approval.ipynb")
    cell = code_cell(page, "edit = %ccexec")
    card = cell.locator(".ccx-approval")
    poll(lambda: card.is_visible() and "Claude wants to use Edit" in card.inner_text(), 90, "the approval card")
    # The card's own diff (the Edit's tool card folds the same change under it since ce5ec8f).
    removed, added = card.locator(".cc-line-remove"), card.locator(".cc-line-add")
    assert removed.inner_text().strip() == "-hello world" and removed.is_visible()
    assert added.inner_text().strip() == "+goodbye world" and added.is_visible()
    state = view(cell)
    assert state is not None and state["status"] == "needs you", state
    shot = screenshot(page, card, "90-edit-approval-card.png")
    print(f"\napproval card: {shot}")
    # The card carries its own text colour (a dark theme's white was unreadable on its cream).
    assert card.locator(".cc-approval").evaluate("e => getComputedStyle(e).color") == "rgb(31, 35, 40)"
    _controls_stay_whole_in_a_narrow_window(page, cell, artifacts)
    cell.locator(".ccx-approval button").filter(has_text=re.compile(r"^\s*Allow\s*$")).click()
    final = poll(lambda: _answered(view(cell)), 60, "the edit run to finish its turn")
    # The answer is all of Claude's text: its steps before the edit, then what it says of it.
    assert final["status"] == "completed", final
    assert final["answer"].startswith("Step 1 of 2.\nStep 2 of 2.\nI edited notes.txt"), final
    assert not card.is_visible()
    assert "allowed by you" in cell.locator(".cc-decision").inner_text()
    assert (lab.root / "notes.txt").read_text() == "goodbye world\nsecond line\n"
    screenshot(page, cell, "90-edit-allowed.png")


_WHOLE_AND_INSIDE = """(el, area) => {
    const box = el.getBoundingClientRect(), out = area.getBoundingClientRect();
    return [el.innerText.trim(), el.scrollWidth <= el.clientWidth + 1, box.right <= out.right + 1];
}"""


def _controls_stay_whole_in_a_narrow_window(page: Any, cell: Any, artifacts: Path) -> None:
    """At 700 px the answer and follow-up buttons wrap: none is cut ("All…") or pushed out of the output area."""
    wide = page.viewport_size
    page.set_viewport_size({"width": 700, "height": wide["height"]})
    try:
        time.sleep(0.5)  # the layout settles
        area = cell.locator(".jp-OutputArea-output").first.element_handle()
        buttons = cell.locator(".ccx-approval button, .ccx-follow-up button")
        found = [buttons.nth(i).evaluate(_WHOLE_AND_INSIDE, area) for i in range(buttons.count())
                 if buttons.nth(i).is_visible()]
        screenshot(page, cell, "90-edit-approval-700px.png")
        assert len(found) >= 3 and all(whole and inside for _text, whole, inside in found), found
    finally:
        page.set_viewport_size(wide)


def test_a_waiting_cell_asks_in_its_input_box(lab: Lab, page: Any, artifacts: Path) -> None:
    """--wait keeps the kernel busy: the question appears as the cell's input box; "y" + Enter completes the run."""
    cells = ["%load_ext cc_executor_nb",
             'typed = %ccexec --demo --wait "bash: echo typed > typed.txt && cat typed.txt"']
    write_notebook(lab.root / "91_stdin.ipynb", cells)
    open_and_run_all(page, lab, "91_stdin.ipynb")
    cell = code_cell(page, "typed = %ccexec")
    box = cell.locator(".jp-Stdin-input")
    poll(lambda: box.count() and box.is_visible(), 90, "the input box of the waiting cell")
    prompt = cell.locator(".jp-Stdin-prompt").inner_text()
    assert "Claude asks to use Bash: echo typed > typed.txt && cat typed.txt" in prompt, prompt
    # The input request and the widget's update travel separately (stdin channel, iopub).
    poll(lambda: (state := view(cell)) is not None and state["status"] == "needs you", 10,
         "the widget's status to say the run needs you")
    note = cell.locator(".cc-approval-stdin")
    poll(lambda: note.count() and note.is_visible(), 10, "the card to point at the input box")
    screenshot(page, cell, "91-stdin-question.png")
    box.fill("y")
    box.press("Enter")
    wait_for_all_cells(page, 60)
    final = poll(lambda: _answered(view(cell)), 30, "the run to finish its turn")
    assert final["status"] == "completed" and "Output: typed" in final["answer"], final
    assert (lab.root / "typed.txt").read_text() == "typed\n"
    screenshot(page, cell, "91-stdin-answered.png")


def _answered(state: dict[str, Any] | None) -> dict[str, Any] | None:
    return state if state and state["status"] in ("completed", "failed") and state["answer"] else None


# The live widget's size, and the answer's in the body: [shown height, whole height] in px.
BODY_HEIGHTS = """cell => {
  const body = cell.querySelector('.ccx-run .ccx-claude-body');
  const answer = body && body.querySelector('.cc-answer');
  return body && answer ? [body.clientHeight, body.scrollHeight, answer.scrollHeight] : null;
}"""


# Where the person looks in the live widget's conversation: whether the answer's last
# character and the footer are inside the scroll box, and the answer's top relative to it.
BODY_VIEW = """cell => {
  const body = cell.querySelector('.ccx-run .ccx-claude-body');
  const answer = body && body.querySelector('.cc-answer');
  if (!answer) return null;
  const box = body.getBoundingClientRect();
  const inside = rect => rect.height > 0 && rect.top >= box.top - 1 && rect.bottom <= box.bottom + 1;
  const walker = document.createTreeWalker(answer, NodeFilter.SHOW_TEXT);
  let last = null;
  while (walker.nextNode()) if (walker.currentNode.textContent.trim()) last = walker.currentNode;
  const range = document.createRange();
  const end = last.textContent.trimEnd().length;
  range.setStart(last, end - 1);
  range.setEnd(last, end);
  const footer = body.querySelector('.cc-footer');
  return {end: inside(range.getBoundingClientRect()), footer: footer ? inside(footer.getBoundingClientRect()) : null,
          top: answer.getBoundingClientRect().top - box.top, words: answer.textContent.split(/\\s+/).length};
}"""


def test_a_long_answer_scrolls_inside_the_live_widget(lab: Lab, page: Any, artifacts: Path) -> None:
    """A 1,500-word answer: the live widget's conversation stops at 40em and scrolls (the cell
    grew to 2,898 px). Like a terminal it shows the newest text while it streams and the end and
    footer once done (it kept the top in view); scrolled up, it keeps the place while text comes."""
    cells = ["%load_ext cc_executor_nb", 'story = %ccexec --demo "write a 1500 word story at 250 words per second"']
    write_notebook(lab.root / "92_long_answer.ipynb", cells)
    open_and_run_all(page, lab, "92_long_answer.ipynb")
    cell = code_cell(page, "story = %ccexec")
    streaming = poll(lambda: (s := cell.evaluate(BODY_VIEW)) and s["words"] > 400 and s, 90, "a long answer streaming")
    screenshot(page, cell, "92-long-answer-streaming.png")
    assert streaming["end"], streaming  # the newest words are in view
    body = cell.locator(".ccx-claude-body")
    body.evaluate("e => { e.scrollTop -= 200; }")  # the person scrolls up to read
    before = cell.evaluate(BODY_VIEW)
    later = poll(lambda: (s := cell.evaluate(BODY_VIEW)) and s["words"] > before["words"] + 100 and s, 30,
                 "more of the answer while scrolled up")
    screenshot(page, cell, "92-long-answer-scrolled-up.png")
    assert abs(later["top"] - before["top"]) <= 1 and not later["end"], (before, later)
    body.evaluate("e => { e.scrollTop = e.scrollHeight; }")  # back to the end: it follows again
    poll(lambda: _with_words(_finished(view(cell)), 1500), 60, "the whole story on screen")
    final = poll(lambda: (s := cell.evaluate(BODY_VIEW)) and s["footer"] and s, 10, "the footer in view")
    screenshot(page, cell, "92-long-answer-final.png")
    print(f"\nlong answer: streaming {streaming}, scrolled up {before} then {later}, final {final}")
    assert final["end"], final
    shown, whole, answer = cell.evaluate(BODY_HEIGHTS)
    font = float(body.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    print(f"long answer: body {shown} px shown of {whole} px, answer {answer} px, font {font} px")
    assert shown <= 40 * font + 1 and whole > 2 * shown and answer > shown, (shown, whole, answer, font)
    body.evaluate("e => { e.scrollTop = -e.scrollHeight; }")  # to the top (negative: a reversed box)
    assert 0 <= cell.evaluate(BODY_VIEW)["top"] < shown  # the answer's first line in view
    body.evaluate("e => { e.scrollTop = e.scrollHeight; }")  # and back to the end
    assert cell.evaluate(BODY_VIEW)["end"]
    screenshot(page, cell, "92-long-answer-scrolled.png")


# A conversation in the live widget: its turns in order, whether the first turn's tool result is
# open, how far the second turn's answer got, and whether its last words are in view.
CONVERSATION_VIEW = """cell => {
  const body = cell.querySelector('.ccx-run .ccx-claude-body');
  if (!body) return null;
  const result = body.querySelector('.cc-turn-0 .cc-tool details');
  const answer = body.querySelector('.cc-turn-1 .cc-answer');
  const box = body.getBoundingClientRect(), end = answer && answer.getBoundingClientRect();
  return {turns: [...body.querySelectorAll('.cc-turn')].map(turn => turn.className),
          open: result ? result.open : null, footers: body.querySelectorAll('.cc-footer').length,
          words: answer ? answer.textContent.split(/\\s+/).length : 0,
          end: end ? end.bottom <= box.bottom + 1 && end.bottom >= box.top : null};
}"""


def test_a_finished_turn_stays_as_opened_while_the_next_one_streams(lab: Lab, page: Any, artifacts: Path) -> None:
    """A conversation's first turn ran a command; while a follow-up's story streams, a person opens
    that command's result: it stays open (each render replaced the whole conversation's HTML, so it
    closed at the next frame), the turns show once each in order, and the newest words stay in view."""
    cells = ["%load_ext cc_executor_nb", 'chat = %ccexec --demo --allowed-tools "Bash" "use a tool"',
             'chat.send("write a 600 word story at 40 words per second")']
    write_notebook(lab.root / "93_conversation.ipynb", cells)
    open_and_run_all(page, lab, "93_conversation.ipynb")
    cell = code_cell(page, "chat = %ccexec")
    poll(lambda: (s := cell.evaluate(CONVERSATION_VIEW)) and s["words"] > 60 and s, 90,
         "the follow-up's story streaming")
    cell.locator(".ccx-claude-body .cc-turn-0 .cc-tool details > summary").click()
    opened = cell.evaluate(CONVERSATION_VIEW)
    later = poll(lambda: (s := cell.evaluate(CONVERSATION_VIEW)) and s["words"] > opened["words"] + 60 and s, 30,
                 "more of the story after the click")
    screenshot(page, cell, "93-conversation-opened-result.png")
    print(f"\nconversation: opened {opened}, later {later}")
    assert opened["open"] is True and later["open"] is True, (opened, later)
    assert later["turns"] == ["cc-turn cc-turn-0", "cc-turn cc-turn-1"] and later["footers"] == 1, later
    assert later["end"], later


# Every frame the page draws, the turns each conversation shows (those laid out, not hidden):
# a frame that showed one twice is kept, with the most turns ever shown.
TWICE_SHOWN = """() => {
  window.__twice = []; window.__most = 0;
  const look = () => {
    for (const body of document.querySelectorAll('.ccx-run .ccx-claude-body')) {
      const shown = [...body.querySelectorAll('.cc-turn')].filter(turn => turn.getClientRects().length)
        .map(turn => turn.className.match(/cc-turn-(\\d+)/)[1]);
      window.__most = Math.max(window.__most, shown.length);
      if (new Set(shown).size !== shown.length && window.__twice.length < 50) window.__twice.push(shown.join(','));
    }
    requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
}"""


def test_no_frame_shows_a_turn_twice_as_it_joins_its_group(lab: Lab, page: Any, artifacts: Path) -> None:
    """Twelve follow-ups: at each turn's start the turn before moves from the live piece into its
    group's widget, two messages the browser may draw between; it showed that turn twice for a
    frame at about half the starts of a 25-turn conversation (turns "0,1,2,2"). No frame does."""
    cells = ["%load_ext cc_executor_nb", 'chat = %ccexec --demo "what is 1+1"',
             'for n in range(2, 14):\n    chat.send(f"what is {n}+{n}")\n    chat.wait()']
    write_notebook(lab.root / "96_turns_once.ipynb", cells)
    page.add_init_script(f"({TWICE_SHOWN})()")  # from the page's load: no frame goes unseen
    open_and_run_all(page, lab, "96_turns_once.ipynb")
    wait_for_all_cells(page, 120)
    cell = code_cell(page, "chat = %ccexec")
    poll(lambda: page.evaluate("window.__most") >= 13 or None, 20, "the thirteen turns on screen")
    screenshot(page, cell, "96-turns-once.png")
    assert page.evaluate("window.__twice") == []
    shut_down_kernels(lab)


# The answer's first paragraph as drawn: [font size, line height, live widget or record].
ANSWER_TYPE = """cell => {
  const p = cell.querySelector('.ccx-run .cc-answer p');
  if (!p) return null;
  const css = getComputedStyle(p);
  return [css.fontSize, css.lineHeight, p.closest('.ccx-record') ? 'record' : 'live'];
}"""


def test_the_record_sets_the_answer_in_the_type_of_the_live_widget(lab: Lab, page: Any, artifacts: Path) -> None:
    """An answer read in 13 px type on 28 px lines in the live widget (the ipywidgets HTML box's),
    in 14 px on 22.4 px lines in the record that replaces it: the text jumped and reflowed as the
    run ended. Both now use JupyterLab's content type."""
    cells = ["%load_ext cc_executor_nb", 'story = %ccexec --demo "write a 200 word story"']
    write_notebook(lab.root / "97_answer_type.ipynb", cells)
    open_and_run_all(page, lab, "97_answer_type.ipynb")
    cell = code_cell(page, "story = %ccexec")
    live = poll(lambda: _answered(view(cell)) and cell.evaluate(ANSWER_TYPE), 90, "the live answer")
    screenshot(page, cell, "97-answer-live.png")
    cell.locator(".ccx-follow-up button").filter(has_text=re.compile(r"^\s*End\s*$")).click()
    record = poll(lambda: (s := cell.evaluate(ANSWER_TYPE)) and s[2] == "record" and s, 60, "the record")
    screenshot(page, cell, "97-answer-record.png")
    assert live[2] == "live" and live[:2] == record[:2], (live, record)
    shut_down_kernels(lab)


def _words(state: dict[str, Any]) -> int:
    return len((state.get("answer") or "").split())


def _with_words(state: dict[str, Any] | None, at_least: int) -> dict[str, Any] | None:
    return state if state and _words(state) >= at_least else None


def _answered(state: dict[str, Any] | None) -> dict[str, Any] | None:
    return state if _finished(state) and state and state["answer"] else None


def _finished(state: dict[str, Any] | None) -> dict[str, Any] | None:
    final = ("completed", "failed", "cancelled", "timeout", "error")
    return state if state and state["status"] in final and state["footer"] else None


# The record of a run, without kernel or widget state

RECORD_NOTEBOOK = "07_the_record.ipynb"
HAIKU_LINES = ["Morning kernel wakes", "heartbeats tick behind the glass", "read in patient chunks"]


def save_notebook(page: Any, lab: Lab, name: str, wanted: str) -> None:
    """File > Save Notebook, then wait until the file on disk holds ``wanted``."""
    poll(lambda: menu(page, "File", "docmanager:save"), 20, "Save Notebook to be enabled")
    poll(lambda: wanted in (lab.root / name).read_text(encoding="utf-8"), 30, f"{name} to be saved")


def api(lab: Lab, path: str, method: str = "GET") -> Any:
    """A call to the server's REST API (loopback, no proxy)."""
    request = urllib.request.Request(
        f"{lab.url}api/{path}", method=method, headers={"Authorization": f"token {lab.token}"}
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(request, timeout=scaled(10)) as response:
        body = response.read()
    return json.loads(body) if body else None


def shut_down_kernels(lab: Lab) -> None:
    """Close every session of the server, which shuts its kernel down."""
    for session in api(lab, "sessions"):
        api(lab, f"sessions/{session['id']}", method="DELETE")
    poll(lambda: api(lab, "kernels") == [] or None, 20, "the kernels to shut down")


def choose_no_kernel(page: Any, timeout: float = 15.0) -> None:
    """Answer the "Select Kernel" dialog a kernelless server shows with "No Kernel", once it came."""
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(timeout=scaled(timeout) * 1000)
    except Exception:  # Playwright's TimeoutError: no dialog this time
        return
    dialog.get_by_role("button", name="No Kernel").click()
    dialog.wait_for(state="detached", timeout=scaled(timeout) * 1000)


ALL_RECORDS_FINAL = """() => {
  const runs = [...document.querySelectorAll('.ccx-run')];
  return runs.length > 0 && runs.every(run => /exit code 0/.test(run.textContent));
}"""


def test_the_record_survives_save_close_and_reopen_without_kernel(
    lab: Lab, kernelless_lab: Lab, page: Any, artifacts: Path
) -> None:
    """07_the_record: run, save, close; reopened where no kernel can start, the haikus and footer are on screen."""
    open_and_run_all(page, lab, RECORD_NOTEBOOK)
    wait_for_all_cells(page, 90)
    sea = code_cell(page, "write 3 haikus about the sea")
    live = poll(lambda: _finished(view(sea)), 30, "the haiku run's record")
    assert live["status"] == "completed" and all(line in live["answer"] for line in HAIKU_LINES), live
    # One view per run on screen, widget or record, never both.
    assert sea.locator(".ccx-run").count() == 1 and page.locator(".ccx-run").count() == 3
    screenshot(page, sea, "07-live-record.png")
    # --wait leaves each conversation alive for a follow-up: the kernel's shutdown ends them, and
    # each record gets its final form (with the exit code) before the notebook is saved and closed.
    shut_down_kernels(lab)
    poll(lambda: page.evaluate(ALL_RECORDS_FINAL) or None, 30, "every record's final form")
    save_notebook(page, lab, RECORD_NOTEBOOK, "Morning kernel wakes<br>")
    # The file held that text before (the notebook's stored outputs): wait for the save itself.
    poll(lambda: page.evaluate("() => document.querySelectorAll('.jp-mod-dirty').length === 0") or None, 20,
         "the notebook to be saved")

    page.goto(kernelless_lab.notebook_url(RECORD_NOTEBOOK))
    choose_no_kernel(page)
    reopened = code_cell(page, "write 3 haikus about the sea")
    state = poll(lambda: _finished(view(reopened)), 60, "the saved record to render")
    path = screenshot(page, reopened, "07-reopened-without-kernel.png")
    print(f"\nreopened without a kernel: {state}\nscreenshot: {path}")
    assert api(kernelless_lab, "kernels") == [] and api(lab, "kernels") == []
    assert all(line in state["answer"] for line in HAIKU_LINES), state
    footer = r"\$0\.\d{4} · [\d,]+ in / 61 out tokens · 1 agent turn · .+ · session [0-9a-f-]{36}"
    assert re.search(footer, state["footer"])
    assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()
    tool = view(code_cell(page, 'tool = %ccexec --demo --wait "tool"'))
    # The answer is all of Claude's text: what it wrote before the tool call, then its final text.
    assert tool is not None and tool["answer"] == "I will run a command.\nThe command printed: hi", tool
    xss = code_cell(page, 'xss = %ccexec --demo --wait "markdown xss"')
    assert "<img src=x onerror=alert(1)>" in (view(xss) or {}).get("answer", "")
    assert xss.locator(".cc-answer img, .cc-answer script").count() == 0
    assert page.evaluate("window.__xss") is None and page.dialogs == []


# `echo b > /dev/stdout` under file capture truncates the capture file: the server says so.
NOTICE_CELLS = [
    "%load_ext cc_executor_nb",
    "run = %ccexec -c \"sh -c 'sleep 0.2; seq 1 1000; sleep 0.3; echo b > /dev/stdout; sleep 3; echo c'\"",
]
NOTICE_NOTE = ('note: the process reopened its own stdout by path for writing (e.g. "echo x > /dev/stdout"): '
               'with capture "file" that truncates it, and output not yet read is lost; run it with capture "pipe"')
# The cell's run view (widget or record) and its note lines, as shown: innerText is what is drawn.
NOTICE_VIEW = """cell => {
  const run = cell.querySelector('.ccx-run');
  if (!run) return null;
  const notes = [...run.querySelectorAll('.ccx-notice')];
  const badge = run.querySelector('span.ccx-badge');
  return {record: run.classList.contains('ccx-record'), status: badge ? badge.textContent.trim() : null,
          notes: notes.map(n => n.innerText.trim()),
          shown: notes.map(n => n.checkVisibility({opacityProperty: true, visibilityProperty: true})
                             && n.getBoundingClientRect().height > 0),
          lineHeights: notes.map(n => { const css = getComputedStyle(n);
                                        return (parseFloat(css.lineHeight) / parseFloat(css.fontSize)).toFixed(2); }),
          text: run.innerText};
}"""


def _noted(cell: Any, *, record: bool) -> dict[str, Any] | None:
    """The run view (the record, or the live widget while running) once it shows its note line."""
    state = cell.evaluate(NOTICE_VIEW)
    if not state or state["record"] != record or not state["notes"]:
        return None
    return state if record or state["status"] == "running" else None


def test_a_lost_output_notice_shows_live_in_the_record_and_reopened_without_kernel(
    lab: Lab, kernelless_lab: Lab, page: Any, artifacts: Path
) -> None:
    """A command that reopens its stdout by path loses output under file capture: the live widget
    shows the server's note line while the run goes on, the record that takes its place once it ends
    shows it too, and so does the saved notebook reopened where no kernel can start."""
    name = "94_notice.ipynb"
    write_notebook(lab.root / name, NOTICE_CELLS)
    open_and_run_all(page, lab, name)
    cell = code_cell(page, "run = %ccexec")
    live = poll(lambda: _noted(cell, record=False), 60, "the live widget's note line")
    screenshot(page, cell, "94-notice-live.png")
    assert live["notes"] == [NOTICE_NOTE] and live["shown"] == [True], live
    final = poll(lambda: _noted(cell, record=True), 30, "the record's note line")
    screenshot(page, cell, "94-notice-record.png")
    assert final["status"] == "completed" and "exit code 0" in final["text"], final
    assert final["notes"] == [NOTICE_NOTE] and final["shown"] == [True], final
    # A note that wraps is spaced alike live and in the record, in lines of its font size (the widget's
    # HTML box set 28 px lines: 2.15 of its 13 px font, against 1.6 in the record).
    assert live["lineHeights"] == final["lineHeights"], (live["lineHeights"], final["lineHeights"])
    assert cell.locator(".ccx-run").count() == 1  # the record in the widget's place
    shut_down_kernels(lab)
    save_notebook(page, lab, name, "note: the process reopened its own stdout")
    poll(lambda: page.evaluate("() => document.querySelectorAll('.jp-mod-dirty').length === 0") or None, 20,
         "the notebook to be saved")

    page.goto(kernelless_lab.notebook_url(name))
    choose_no_kernel(page)
    reopened = poll(lambda: _noted(code_cell(page, "run = %ccexec"), record=True), 60, "the saved record's note line")
    path = screenshot(page, code_cell(page, "run = %ccexec"), "94-notice-reopened-without-kernel.png")
    print(f"\nreopened without a kernel: {reopened['notes']}\nscreenshot: {path}")
    assert reopened["notes"] == [NOTICE_NOTE] and reopened["shown"] == [True], reopened
    assert reopened["status"] == "completed" and api(kernelless_lab, "kernels") == [], reopened


def test_a_lost_output_notice_is_said_by_the_run_alone_not_by_a_server_log_line_in_the_cell(
    lab: Lab, page: Any, artifacts: Path
) -> None:
    """The in-kernel server logged the reopen as a WARNING, which Python's last-resort handler
    wrote to the kernel's stderr: the cell showed a pink "! [ENHANCED] the child reopened its
    stdout by path for writing" under the record (and the notebook saved it). The run's note
    line is what says it; the cell holds the run's view alone."""
    name = "95_notice_once.ipynb"
    write_notebook(lab.root / name, NOTICE_CELLS)
    open_and_run_all(page, lab, name)
    cell = code_cell(page, "run = %ccexec")
    poll(lambda: _noted(cell, record=True), 60, "the record's note line")
    wait_for_all_cells(page, 30)
    screenshot(page, cell, "95-notice-once.png")
    outputs = cell.locator(".jp-OutputArea-output")
    shown = [(o.get_attribute("data-mime-type"), o.inner_text()[:120]) for o in outputs.all()]
    assert len(shown) == 1 and cell.locator(".jp-OutputArea-output .ccx-record").count() == 1, shown
    shut_down_kernels(lab)


def test_the_xss_answer_runs_nowhere_in_saved_and_exported_html(
    chromium: str, page: Any, tmp_path: Path, artifacts: Path
) -> None:
    """run.save() HTML and nbconvert's HTML of the markdown xss run: shown as text, no handler ran."""
    from .test_nbconvert import execute, export_html

    execute(tmp_path, "xss", '%ccexec --demo --wait -o xss "markdown xss"', 'xss.save("saved.html");')
    export_html(tmp_path, "xss")
    pages = {"saved": tmp_path / "saved.html", "exported": tmp_path / "xss.out.html"}
    for name, path in pages.items():
        page.goto(path.as_uri(), wait_until="load")
        answer = page.locator(".cc-answer")
        assert "<img src=x onerror=alert(1)>" in answer.inner_text(), name
        assert "<script>alert(2)</script>" in answer.inner_text(), name
        assert answer.locator("img, script").count() == 0, name
        page.screenshot(path=str(artifacts / f"xss-{name}.png"), full_page=True)
        assert page.evaluate("window.__xss") is None and page.dialogs == [], name
    # The trap works: markup that does run an onerror handler is counted (the exported
    # page has no Content-Security-Policy; the saved page's forbids inline handlers).
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"alert(3)\">')")
    poll(lambda: page.evaluate("window.__xss") == 1, 10, "the control handler to run")


def test_an_exported_records_output_is_in_a_monospace_font(chromium: str, page: Any, tmp_path: Path) -> None:
    """nbconvert's HTML of a command run: its output keeps a monospace font (nbconvert's CSS
    makes an output's <pre> inherit the page's proportional font; columns and bars broke)."""
    from .test_nbconvert import execute, export_html

    execute(tmp_path, "cols", "%ccexec -c \"printf 'a    b\\nccc  d\\n'\" --wait")
    export_html(tmp_path, "cols")
    page.goto((tmp_path / "cols.out.html").as_uri(), wait_until="load")
    output = page.locator(".ccx-output pre").first
    assert "ccc  d" in output.inner_text()
    font = output.evaluate("pre => getComputedStyle(pre).fontFamily")
    assert "mono" in font.lower(), font


BATCH_CELLS = [
    "%load_ext cc_executor_nb\nimport cc_executor_nb as ccx",
    'batch = ccx.map("sleep {item}", ["2"] * 6, command=True, concurrency=2)',
]


def _batch_state(cell: Any) -> dict[str, Any]:
    """The batch table's bar, state and row badges as the page shows them."""
    return cell.evaluate(  # type: ignore[no-any-return]
        """cell => {
        const bar = cell.querySelector('.ccx-batch-bar');
        const state = cell.querySelector('.ccx-batch-state');
        const badges = [...cell.querySelectorAll('.ccx-batch-table tbody .ccx-badge')];
        return {bar: bar ? bar.innerText : '', state: state ? state.innerText : '',
                rows: badges.map(b => b.innerText.trim())};
    }"""
    )


def test_batch_table_updates_live_and_its_pause_button_holds_the_queue(lab: Lab, page: Any, artifacts: Path) -> None:
    """A batch's table shows running and queued rows live; Pause queue holds the queue, Resume finishes all 6."""
    write_notebook(lab.root / "92_batch.ipynb", BATCH_CELLS)
    open_and_run_all(page, lab, "92_batch.ipynb")
    cell = code_cell(page, "batch = ccx.map")
    live = poll(lambda: (s := _batch_state(cell))["rows"].count("running") == 2 and s, 60, "two running rows")
    assert len(live["rows"]) == 6 and live["rows"].count("queued") + live["rows"].count("completed") == 4, live
    screenshot(page, cell, "92-batch-running.png")
    cell.locator(".ccx-batch-view button").filter(has_text="Pause queue").click()
    paused = poll(lambda: (s := _batch_state(cell))["state"].startswith("paused") and "running" not in s["rows"]
                  and s, 60, "the paused batch with nothing running")
    held = paused["rows"].count("queued")
    assert held >= 2 and paused["rows"].count("completed") == 6 - held, paused
    screenshot(page, cell, "92-batch-paused.png")
    cell.locator(".ccx-batch-view button").filter(has_text="Resume queue").click()
    final = poll(lambda: (s := _batch_state(cell))["rows"] == ["completed"] * 6 and s, 60, "all six runs completed")
    assert final["bar"].startswith("6/6"), final
    print(f"\nbatch: paused with {held} queued, then {final['bar']!r}")
    screenshot(page, cell, "92-batch-done.png")


LONG_PROMPT = (
    "echo: the lighthouse keeper counts the ships that pass at night, names each one after a friend "
    "and writes it down in a book that nobody else has ever read"
)
WIDE_BATCH_CELLS = [
    "%load_ext cc_executor_nb\nimport cc_executor_nb as ccx",
    f"batch = ccx.map([{LONG_PROMPT!r}, 'write a 60 word story at 20 words per second'], demo=True, concurrency=1)",
]
# The batch table's columns as drawn: each header's width, and the lines of the first row's run.
BATCH_COLUMNS = """cell => {
  const table = cell.querySelector('.ccx-batch-table');
  if (!table) return null;
  const run = document.createRange();  // its text's line boxes, one rectangle each
  run.selectNodeContents(table.querySelector('tbody tr td:nth-child(5) span'));
  return {widths: Object.fromEntries([...table.querySelectorAll('th')].map(
            th => [th.textContent, Math.round(th.getBoundingClientRect().width)])),
          table: Math.round(table.getBoundingClientRect().width),
          box: Math.round(table.parentElement.getBoundingClientRect().width),
          runLines: run.getClientRects().length,
          overflowing: [...table.querySelectorAll('td:not(:last-child)')].filter(
            td => td.scrollWidth > td.clientWidth + 1).map(td => td.textContent),
          rows: [...table.querySelectorAll('tbody .ccx-badge')].map(b => b.innerText.trim()),
          live: !!cell.querySelector('.ccx-batch-view')};
}"""


def test_a_batch_table_gives_its_run_column_room_beside_a_long_last_line(
    lab: Lab, page: Any, artifacts: Path
) -> None:
    """A long prompt's run wrapped over 8 lines at 1280 px: the last line column (one unbreakable
    line of up to 120 characters) took the table's width. The run reads in two lines at most, the
    table fits its output area and no other cell overflows, live and in the record."""
    write_notebook(lab.root / "94_wide_batch.ipynb", WIDE_BATCH_CELLS)
    open_and_run_all(page, lab, "94_wide_batch.ipynb")
    cell = code_cell(page, "batch = ccx.map")
    live = poll(lambda: (s := cell.evaluate(BATCH_COLUMNS)) and s["live"] and s["rows"][0] == "completed" and s, 90,
                "the long prompt's run completed while the story runs")
    screenshot(page, cell, "94-wide-batch-live.png")
    record = poll(lambda: (s := cell.evaluate(BATCH_COLUMNS)) and not s["live"] and s, 60, "the batch's record")
    screenshot(page, cell, "94-wide-batch-record.png")
    print(f"\nbatch table: live {live}\nrecord {record}")
    for shown in (live, record):
        assert shown["runLines"] <= 2 and shown["table"] <= shown["box"] and shown["overflowing"] == [], shown
    shut_down_kernels(lab)


STALE_CELLS = [
    '%load_ext cc_executor_nb\nimport os, pathlib\npathlib.Path("kernel.pid").write_text(str(os.getpid()))',
    'run = %ccexec -c "sleep 300"',
]
STALE_NOTE = "Not live: no update from the kernel for over 15 s."


def _stale_shown(cell: Any) -> bool:
    note = cell.locator(".ccx-stale")
    return note.count() == 1 and note.is_visible()


def test_a_live_widget_says_it_is_not_live_once_its_kernel_died(lab: Lab, page: Any, artifacts: Path) -> None:
    """While the run streams, the widget never shows its stale note (20 s of looks); once the kernel
    is killed (as the OOM killer would) nothing updates it, and 15 s later the note says it is not live.

    A restart through Jupyter shuts the kernel down gracefully: the run is cancelled and its record
    takes the widget's place, so only a crash leaves a live widget behind."""
    write_notebook(lab.root / "93_stale.ipynb", STALE_CELLS)
    open_and_run_all(page, lab, "93_stale.ipynb")
    cell = code_cell(page, "sleep 300")
    poll(lambda: (view(cell) or {}).get("status") == "running" or None, 60, "the sleep run to be running")
    looked = time.monotonic()
    while time.monotonic() - looked < 20:
        assert not _stale_shown(cell), view(cell)
        time.sleep(1)
    screenshot(page, cell, "93-live.png")
    os.kill(int((lab.root / "kernel.pid").read_text()), signal.SIGKILL)
    killed = time.monotonic()
    poll(lambda: _stale_shown(cell) or None, 40, "the stale note after the kernel died")
    waited = time.monotonic() - killed
    note = cell.locator(".ccx-stale").inner_text()
    screenshot(page, cell, "93-not-live.png")
    print(f"\nthe note showed {waited:.1f} s after the kernel was killed: {note!r}")
    assert STALE_NOTE in note and "%ccexec --attach" in note, note
    assert waited >= 13, waited  # not before the widget had had no update for 15 s (1 s ticks)
    assert (view(cell) or {}).get("status") == "running"  # the frozen view it warns about
    shut_down_kernels(lab)


def test_a_saved_html_page_shows_a_long_answer_and_prompt_in_full(page: Any, tmp_path: Path) -> None:
    """run.save("x.html") of a 1,500-word answer to a 260-line prompt: in Chromium each sat in
    a scroll box (40em, 12em), as in the notebook; the page now shows both whole, its own
    scroll bar the only one."""
    from .test_transcript import claude_run_answering

    saved = claude_run_answering(" ".join(f"word{n}" for n in range(1500)),
                                 "\n".join(f"line {n} of a pasted file" for n in range(260))).save(tmp_path / "x.html")
    page.goto(saved.as_uri())
    boxes = page.eval_on_selector_all(
        ".cc-answer, .ccx-prompt", "els => els.map(e => [e.className, e.scrollHeight, e.clientHeight])")
    assert len(boxes) == 2 and all(scroll <= client for _, scroll, client in boxes), boxes
    assert min(client for _, _, client in boxes) > 1000, boxes  # taller than either box was
