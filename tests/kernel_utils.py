"""A real ipykernel driven over ZMQ for the extension's end-to-end tests.

:class:`KernelHarness` reads every IOPub message itself and keeps them all in
``log`` (with their arrival time), so a test can count, for instance, the widget
``comm_msg`` updates that arrived while another cell was running.
"""

from __future__ import annotations

import ast
import os
import queue
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from .conftest import FAKE_CLI
from .util import eventually, scaled

Message = dict[str, Any]
T = TypeVar("T")

#: The loop thread's name, as the kernel sees it.
LOOP_THREAD = "cc_executor_nb-loop"


def py(code: str) -> str:
    """A command line running ``code`` with this interpreter."""
    return shlex.join([sys.executable, "-c", code])


def fake_command(*args: str) -> str:
    """A command line running the fake CLI with ``args``."""
    return shlex.join([sys.executable, FAKE_CLI, *args])


def ccexec(command_line: str, *options: str) -> str:
    """A ``%ccexec -c`` line running ``command_line`` with ``options``."""
    return " ".join(["%ccexec", "-c", shlex.quote(command_line), *options])


@dataclass
class Received:
    """One IOPub message and when it arrived (time.monotonic())."""

    at: float
    msg: Message

    @property
    def type(self) -> str:
        return str(self.msg["header"]["msg_type"])

    @property
    def parent_id(self) -> str | None:
        return self.msg.get("parent_header", {}).get("msg_id")

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.msg["content"])


@dataclass
class Execution:
    """What one execute request produced."""

    msg_id: str
    reply: dict[str, Any]
    started: float
    ended: float
    during: list[Received] = field(default_factory=list)
    """Every IOPub message received while this request ran, whatever its parent."""

    @property
    def own(self) -> list[Received]:
        return [r for r in self.during if r.parent_id == self.msg_id]

    @property
    def ok(self) -> bool:
        return self.reply.get("status") == "ok"

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def kernel_seconds(self) -> float:
        """From the request's send to the kernel's idle status, by the stamps in that status
        message: the test's own lag in reading IOPub (it reads every message) is left out."""
        idle = next(r for r in reversed(self.own) if r.type == "status" and r.content["execution_state"] == "idle")
        return (_stamp(idle.msg["header"]["date"]) - _stamp(idle.msg["parent_header"]["date"])).total_seconds()

    def stream(self, name: str = "stdout") -> str:
        return "".join(
            r.content["text"] for r in self.own if r.type == "stream" and r.content["name"] == name
        )

    @property
    def error(self) -> tuple[str, str] | None:
        errors = [r.content for r in self.own if r.type == "error"]
        if errors:
            return errors[0]["ename"], errors[0]["evalue"]
        if self.reply.get("status") == "error":
            return self.reply.get("ename", ""), self.reply.get("evalue", "")
        return None


class KernelHarness:
    """Start, drive and stop one kernel."""

    def __init__(self, manager: KernelManager, client: BlockingKernelClient) -> None:
        self.manager = manager
        self.client = client
        self.log: list[Received] = []

    @classmethod
    def start(
        cls, cwd: Path, *, ready_timeout: float = 60.0, env: dict[str, str] | None = None,
        stderr: IO[bytes] | None = None, capture_fd: bool = False,
    ) -> KernelHarness:
        """``stderr``: where the kernel process's own stderr goes (default: nowhere).
        ``capture_fd``: ipykernel sends fd 2 to the running cell, as in a notebook (it
        does not under pytest, which it finds by PYTEST_CURRENT_TEST)."""
        manager = KernelManager(kernel_name="python3")
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "IPYTHONDIR": str(cwd / ".ipython"), **(env or {})}
        if capture_fd:
            env.pop("PYTEST_CURRENT_TEST", None)
        manager.start_kernel(cwd=str(cwd), env=env, **({"stderr": stderr} if stderr is not None else {}))
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=scaled(ready_timeout))
        harness = cls(manager, client)
        harness.drain(0.2)
        return harness

    def restart(self, *, ready_timeout: float = 60.0) -> None:
        """Restart the kernel as a front end would (a graceful shutdown, then a new process)."""
        self.manager.restart_kernel(now=False)
        self.client.wait_for_ready(timeout=scaled(ready_timeout))
        self.drain(0.2)

    def shutdown(self) -> None:
        """Ask the kernel to shut down (as a front end would); idempotent."""
        if not self.manager.has_kernel:
            return
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)

    @property
    def pid(self) -> int:
        provisioner = self.manager.provisioner
        assert provisioner is not None
        return int(provisioner.process.pid)  # type: ignore[attr-defined]

    # Reading IOPub

    def _next(self, timeout: float) -> Received | None:
        try:
            msg = self.client.get_iopub_msg(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        received = Received(time.monotonic(), msg)
        self.log.append(received)
        return received

    def drain(self, seconds: float) -> list[Received]:
        """Every IOPub message received during the next ``seconds``."""
        deadline = time.monotonic() + seconds
        got: list[Received] = []
        while (left := deadline - time.monotonic()) > 0:
            received = self._next(min(left, 0.1))
            if received is not None:
                got.append(received)
        return got

    def watch(self, predicate: Callable[[Received], bool], timeout: float = 30.0) -> Received:
        """Read IOPub until a message satisfies ``predicate`` (within ``scaled(timeout)`` s)."""

        def matching() -> Received | None:
            received = self._next(0.1)
            return received if received is not None and predicate(received) else None

        return eventually(matching, timeout=timeout, interval=0, what="a matching IOPub message")

    def until(self, check: Callable[[], T], timeout: float = 30.0, what: str = "the condition") -> T:
        """Poll ``check`` (which may look at ``log``), reading IOPub between polls."""

        def polled() -> T:
            value = check()
            if not value:
                self.drain(0.1)
            return value

        return eventually(polled, timeout=timeout, interval=0, what=what)

    # Executing

    def submit(self, code: str, *, allow_stdin: bool = False) -> tuple[str, float]:
        """Send an execute request without waiting; returns its msg_id and send time.

        ``allow_stdin``: the front end answers ``input()`` (see :meth:`input_request`).
        """
        return self.client.execute(code, allow_stdin=allow_stdin), time.monotonic()

    # The stdin channel (a front end's input box)

    def input_request(self, timeout: float = 30.0) -> Message:
        """The next ``input_request`` the kernel sends on the stdin channel."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg: Message = self.client.get_stdin_msg(timeout=min(left, 0.1))
            except queue.Empty:
                self._next(0)  # keep reading IOPub meanwhile
                continue
            if msg["header"]["msg_type"] == "input_request":
                return msg
        raise TimeoutError("no input_request before the deadline")

    def answer_input(self, value: str) -> None:
        """Type ``value`` into the input box and press Enter (an ``input_reply``)."""
        self.client.input(value)

    def answer_box(self, request: Message, value: str) -> None:
        """Type ``value`` into the box of ``request`` (JupyterLab's ``input_reply``, which
        names the request it answers as its parent), whenever that is."""
        reply = self.client.session.msg("input_reply", {"value": value}, parent=request)
        self.client.stdin_channel.send(reply)

    def input_requests(self, seconds: float) -> list[Message]:
        """Every ``input_request`` the kernel sends on the stdin channel in the next ``seconds``."""
        requests = []
        while True:
            try:
                requests.append(self.input_request(timeout=seconds))
            except TimeoutError:
                return requests

    # Widgets

    def click(self, model_id: str) -> None:
        """Click a button widget, as the front end does (a comm_msg on the shell channel)."""
        content = {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}}
        self.client.shell_channel.send(self.client.session.msg("comm_msg", content))

    def finish(self, msg_id: str, started: float, timeout: float = 60.0) -> Execution:
        """Wait (``scaled(timeout)`` s at most) for a submitted request's reply and its idle status."""
        reply: dict[str, Any] | None = None
        idle: Received | None = self._idle_of(msg_id)

        def finished() -> bool:
            nonlocal reply, idle
            reply = reply or self._poll_reply(msg_id)
            received = self._next(0.05)
            if received is not None and _is_idle(received, msg_id):
                idle = received
            return reply is not None and idle is not None

        eventually(finished, timeout=timeout, interval=0, what=f"request {msg_id} to finish")
        assert reply is not None and idle is not None
        during = [r for r in self.log if started <= r.at <= idle.at]
        return Execution(msg_id, reply, started, idle.at, during)

    def _idle_of(self, msg_id: str) -> Received | None:
        return next((r for r in self.log if _is_idle(r, msg_id)), None)

    def _poll_reply(self, msg_id: str) -> dict[str, Any] | None:
        try:
            msg = self.client.get_shell_msg(timeout=0)
        except queue.Empty:
            return None
        return dict(msg["content"]) if msg["parent_header"].get("msg_id") == msg_id else None

    def run(self, code: str, timeout: float = 60.0) -> Execution:
        """Execute ``code`` and wait until the kernel is idle again."""
        msg_id, started = self.submit(code)
        return self.finish(msg_id, started, timeout)

    def ok(self, code: str, timeout: float = 60.0) -> Execution:
        """Execute ``code`` and fail the test if it raised."""
        execution = self.run(code, timeout)
        assert execution.ok, f"{code!r} failed: {execution.error}\n{execution.stream('stderr')}"
        return execution

    def value(self, expression: str, timeout: float = 60.0) -> Any:
        """Evaluate a Python literal-valued ``expression`` in the kernel."""
        code = f"print(repr({expression}))"
        return ast.literal_eval(self.ok(code, timeout).stream().strip())

    def wait_until(self, expression: str, timeout: float = 30.0) -> None:
        """Poll ``expression`` in the kernel until it is true (within ``scaled(timeout)`` s)."""
        self.until(lambda: self.value(f"bool({expression})"), timeout, what=expression)


def _stamp(date: datetime | str) -> datetime:
    """A message header's date (jupyter_client parses it; a string when it did not)."""
    return date if isinstance(date, datetime) else datetime.fromisoformat(date)


def _is_idle(received: Received, msg_id: str) -> bool:
    return (
        received.parent_id == msg_id
        and received.type == "status"
        and received.content["execution_state"] == "idle"
    )


def comm_updates(received: list[Received], comm_ids: set[str]) -> list[Received]:
    """The widget state updates among ``received`` for the given comms."""
    return [
        r for r in received
        if r.type == "comm_msg"
        and r.content.get("comm_id") in comm_ids
        and r.content.get("data", {}).get("method") == "update"
    ]


def iter_state(updates: list[Received]) -> Iterator[dict[str, Any]]:
    """The state dicts carried by widget updates."""
    for r in updates:
        yield dict(r.content["data"].get("state", {}))


#: Kernel-side code listing the comm ids of a Run's view (the Run is bound to NAME).
VIEW_IDS = (
    "[w.model_id for w in ({0}.view.header, {0}.view.output, {0}.view.output.layout,"
    " *{0}.view.buttons.values())]"
)
