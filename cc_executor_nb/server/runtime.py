"""The job server's runtime file: how later processes find, check and stop it.

The user's job server (``python -m cc_executor_nb.server --jobs``) writes
``{"url", "token", "pid", "jobs_dir", "version", "started_at", "certfile"}`` to a file only its
owner can read (0600, written whole with a rename), by default
``jupyter_runtime_dir()/cc_executor_nb-jobserver.json``, once it listens, and removes
it when it exits (if the file still names it). A server that died by SIGKILL leaves
the file behind: readers check the pid and the server itself before trusting it.

What is trusted: a file that is ours and that no one else could have written (not a
symbolic link, owned by our user, not writable by group or others); a pid that is a
server process of our user; and a URL whose port that very process listens on, so the
token is never sent to whatever took the port of a server that died.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import ssl
import stat
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from ..errors import UntrustedRuntimeFile

__all__ = [
    "JOBS_DIR_NAME",
    "RUNTIME_FILE_NAME",
    "RuntimeInfo",
    "clear_invalid",
    "clear_untrusted",
    "client_context",
    "default_jobs_dir",
    "default_runtime_file",
    "invalid_because",
    "is_job_server",
    "read_runtime_file",
    "remove_runtime_file",
    "runtime_dir",
    "serves",
    "stop_job_server",
    "untrusted_because",
    "write_runtime_file",
]

RUNTIME_FILE_NAME = "cc_executor_nb-jobserver.json"
JOBS_DIR_NAME = "cc_executor_nb-jobs"
_SERVER_MODULE = "cc_executor_nb.server"
logger = logging.getLogger("cc_executor_nb.server")


@dataclass(frozen=True)
class RuntimeInfo:
    """Where the job server listens and how to prove we are its user."""

    url: str
    token: str = field(repr=False)
    pid: int
    jobs_dir: str | None = None
    version: str = ""
    started_at: float = 0.0
    certfile: str | None = None
    """The certificate a ``wss://`` job server serves (its ``--certfile``, absolute): what
    ``stop`` trusts to count its jobs where the system's trust store does not."""


def runtime_dir() -> Path:
    """Jupyter's runtime directory (``JUPYTER_RUNTIME_DIR`` overrides it)."""
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def default_runtime_file() -> Path:
    """The user's job server runtime file."""
    return runtime_dir() / RUNTIME_FILE_NAME


def default_jobs_dir() -> Path:
    """Where the user's job server keeps its jobs."""
    return runtime_dir() / JOBS_DIR_NAME


def write_runtime_file(path: str | os.PathLike[str], info: RuntimeInfo) -> None:
    """Write ``info`` to ``path`` (0600), atomically; the directory is made 0700 if missing."""
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(info), handle)
    os.replace(temporary, target)


def read_runtime_file(path: str | os.PathLike[str]) -> RuntimeInfo | None:
    """The file's contents, or None when it is missing, unreadable or not to be trusted
    (a symbolic link, another user's, or writable by group or others)."""
    try:
        return _parse(_read_private(Path(path)))
    except (OSError, ValueError):
        return None


def _parse(text: str) -> RuntimeInfo | None:
    """The runtime file's text as a RuntimeInfo; None when it is not one. Raises ValueError
    for text that is not JSON."""
    data = json.loads(text)
    try:
        info = RuntimeInfo(**{name: data[name] for name in RuntimeInfo.__dataclass_fields__ if name in data})
    except TypeError:
        return None
    valid = isinstance(info.url, str) and isinstance(info.token, str) and isinstance(info.pid, int)
    return info if valid else None


def client_context(info: RuntimeInfo) -> ssl.SSLContext | None:
    """How a client verifies the job server ``info`` names: None for a ``ws://`` URL; for
    ``wss://``, the system's trust store (``SSL_CERT_FILE`` extends it) and the certificate
    the server serves, which its runtime file names (a file only we could have written, as
    the token in it): ``stop`` and the kernel reach a job server with a self-signed
    certificate without ``SSL_CERT_FILE``."""
    if not info.url.lower().startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if info.certfile:
        with contextlib.suppress(OSError):  # moved or removed since it started (or no PEM): the store alone
            context.load_verify_locations(info.certfile)
            # The served certificate itself is the anchor, whether a CA signed it or not.
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def untrusted_because(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """Why :func:`read_runtime_file` does not read ``path`` although it exists, and what makes
    it trusted ("" when nothing does: end the server that wrote it); None when it reads it, or
    there is no file."""
    try:
        status = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(status.st_mode):  # chmod would change the file it points to, not the link
        return "it is a symbolic link", "put the file it points to in its place if that is yours"
    if not stat.S_ISREG(status.st_mode) or status.st_uid != _our_uid():
        return "it is not a file of ours", ""  # nothing of ours to repair: only ending that server helps
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "it is writable by group or others", "chmod 600 the file if it is yours"
    return None


def _read_private(path: Path) -> str:
    """The text of ``path``, if it is a regular file of ours that only we can write."""
    text, status = _read_own(path)
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        _warn_once(status, "! %s is writable by others: not trusted (chmod 600 it; "
                   "'python -m cc_executor_nb.server stop' removes it if no job server runs)", path)
        raise PermissionError(f"{path} is writable by others")
    return text


def _read_own(path: Path) -> tuple[str, os.stat_result]:
    """The text of ``path`` and its status, if it is a regular file of ours (not a symbolic
    link), whoever else may write to it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    # Bytes that are not UTF-8 read as U+FFFD: such a file is no JSON (ValueError), not unreadable.
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode) or status.st_uid != _our_uid():
            raise PermissionError(f"{path} is not a file of ours")
        return handle.read(), status


def _our_uid() -> int:
    return os.getuid()


_warned: set[tuple[int, int, int]] = set()
"""The files (device, inode, change time) already warned about: a kernel waiting for a job
server reads the runtime file every 50 ms, and said the same line at each read."""


def _warn_once(status: os.stat_result, message: str, path: Path) -> None:
    """Warn about a file once, until it changes (a new file, a write, a chmod)."""
    key = (status.st_dev, status.st_ino, status.st_ctime_ns)
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, path)


def remove_runtime_file(path: str | os.PathLike[str], pid: int) -> None:
    """Remove the file if it still names ``pid`` (a newer server may have replaced it): a
    regular file of ours, even one that became writable by others (it is not read for its
    URL and token, only for the pid, and it was left behind)."""
    try:
        text, status = _read_own(Path(path))
        info = _parse(text)
    except (OSError, ValueError):
        return
    if info is not None and info.pid == pid:
        _unlink_same(Path(path), status)


def _unlink_same(path: Path, status: os.stat_result) -> bool:
    """Remove ``path`` if it is still the file ``status`` describes (never another put in its
    place since it was read); True when removed."""
    with contextlib.suppress(OSError):
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) == (status.st_dev, status.st_ino):
            os.unlink(path)
            return True
    return False


def clear_untrusted(path: str | os.PathLike[str]) -> bool:
    """Deal with a runtime file that exists but is not trusted (see :func:`untrusted_because`).

    A regular file of ours that names no live job server of ours is stale, whoever wrote
    it: it is removed (True). Anything else raises UntrustedRuntimeFile, naming the file,
    why it is not trusted and what to do: its server runs (nothing is signalled on the word
    of a file others could have written), or it is a symbolic link or another user's file,
    which is never removed. False when the file is trusted or missing.
    """
    untrusted = untrusted_because(path)
    if untrusted is None:
        return False
    why, fix = untrusted
    named = ""
    with contextlib.suppress(OSError, ValueError):
        text, status = _read_own(Path(path))
        info = _parse(text)
        if info is None or not is_job_server(info.pid):
            if _unlink_same(Path(path), status):
                logger.info("x removed the stale runtime file %s (not trusted: %s)", path, why)
                return True
        else:
            named = f" and names a job server that runs (pid {info.pid})"
    todo = (f"{fix}, then stop again" if fix
            else "it was left alone: end the server that wrote it, or have its owner remove it")
    raise UntrustedRuntimeFile(f"the job server's runtime file {path} is not trusted ({why}){named}, so nothing "
                               f"was stopped: {todo}")


def invalid_because(path: str | os.PathLike[str]) -> str | None:
    """Why ``path``, a private regular file of ours (one :func:`read_runtime_file` would trust),
    is no runtime file: "it is not JSON" or "it holds no url, token and pid". None when it is
    one, or missing, or not trusted (see :func:`untrusted_because`)."""
    if untrusted_because(path) is not None:
        return None
    try:
        return None if _parse(_read_own(Path(path))[0]) is not None else "it holds no url, token and pid"
    except ValueError:
        return "it is not JSON"
    except OSError:
        return None


def clear_invalid(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` if it is a private regular file of ours that is no runtime file (see
    :func:`invalid_because`): no job server wrote it as it is (a server writes its file whole,
    with a rename), so none can be found or stopped through it, and it stayed for good. Never
    a link or another user's file, nor another file put in its place meanwhile, nor a file of
    another name than a runtime file's (``stop --runtime-file notes.txt`` with a mistyped path
    removed the user's file). True when removed."""
    why = invalid_because(path)
    if why is None or Path(path).name != RUNTIME_FILE_NAME:
        return False
    with contextlib.suppress(OSError):
        text, status = _read_own(Path(path))
        with contextlib.suppress(ValueError):
            if _parse(text) is not None:
                return False  # rewritten by a server since
        if not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and _unlink_same(Path(path), status):
            logger.info("x removed %s: no job server's runtime file (%s)", path, why)
            return True
    return False


def is_job_server(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) ``python -m cc_executor_nb.server`` process
    of our user (a stale file's pid may be another user's server now)."""
    try:
        proc = psutil.Process(pid)
        if proc.uids().real != _our_uid():
            return False
        return proc.status() != psutil.STATUS_ZOMBIE and _SERVER_MODULE in proc.cmdline()
    except psutil.Error:
        return False


def serves(info: RuntimeInfo) -> bool:
    """Whether the file's pid is a job server of ours that listens on the file's port:
    only then may the token go to that URL."""
    if not is_job_server(info.pid):
        return False
    try:
        port = urllib.parse.urlsplit(info.url).port
        listening = psutil.Process(info.pid).net_connections(kind="inet")
    except psutil.AccessDenied:
        return True  # a system that hides even our own process's sockets: the pid check alone
    except (ValueError, psutil.Error):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in listening)


def stop_job_server(path: str | os.PathLike[str], timeout: float = 30.0) -> int | None:
    """SIGTERM the server the runtime file names and wait until it is gone.

    The server cancels its jobs (each gets its ``kill_grace``) before it exits. Returns
    the pid stopped, or None when no job server ran (a stale file is removed, even one
    not trusted if it is ours: see :func:`clear_untrusted`; so is a private file of ours that
    is no runtime file: see :func:`clear_invalid`). Raises TimeoutError when it is
    still alive after ``timeout`` seconds, UntrustedRuntimeFile when the file is not
    trusted and not a stale one of ours.
    """
    info = read_runtime_file(path)
    if info is None:
        if not clear_untrusted(path):
            clear_invalid(path)
        return None
    if not is_job_server(info.pid):
        remove_runtime_file(path, info.pid)
        return None
    try:
        server = psutil.Process(info.pid)
    except psutil.Error:
        return info.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # Until this very process (its start time too, not a reused pid) is gone or a zombie:
    # a process on its way out shows an empty command line before it is a zombie.
    while _alive(server):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job server (pid {info.pid}) did not stop within {timeout:g} s")
        time.sleep(0.05)
    return info.pid


def _alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (not exited, not a zombie, its pid not reused)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
