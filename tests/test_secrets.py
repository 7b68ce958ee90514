"""Secrets stay out of children and logs: the child environment's patterns, the log redactor."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from websockets.frames import Frame, Opcode

from cc_executor_nb.client import Client, connect
from cc_executor_nb.kernel.api import check_server_url
from cc_executor_nb.redaction import hold_secret, release_secret
from cc_executor_nb.server.handler import SecretRedactor
from cc_executor_nb.server.supervisor import DEFAULT_KEEP_ENV, DEFAULT_SECRET_ENV, child_environment

from .conftest import TOKEN, collect, fake, make_handler, output_of
from .util import redacted_secrets, scaled

pytestmark = pytest.mark.timeout(60)

SERVER_ENV = {
    "HOME": "/home/u",
    "JUPYTER_TOKEN": "j",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "u",
    "GITHUB_TOKEN": "g",
    "DB_PASSWORD": "p",
    "OPENAI_API_KEY": "o",
    "ANTHROPIC_API_KEY": "a",
    "CLAUDE_CODE_OAUTH_TOKEN": "c",
    "AWS_SECRET_ACCESS_KEY": "s",
    "AWS_SESSION_TOKEN": "t",
}


def test_the_default_patterns_drop_credentials_and_keep_what_claude_needs() -> None:
    """Tokens, passwords and API keys go; the Anthropic, Claude and cloud credentials stay."""
    env = child_environment(SERVER_ENV, None, DEFAULT_SECRET_ENV, (), DEFAULT_KEEP_ENV)
    kept = {name for name in SERVER_ENV if name in env}
    needed = {"ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert kept == {"HOME", *needed}


def test_a_request_may_pass_a_variable_the_patterns_would_drop() -> None:
    """The request's own env is what the client asked for: it is kept (unless it is the token)."""
    env = child_environment(SERVER_ENV, {"HF_TOKEN": "h", "LEAK": "tok"}, DEFAULT_SECRET_ENV, {"tok"})
    assert env["HF_TOKEN"] == "h" and "LEAK" not in env


@pytest.fixture
async def configured(monkeypatch: pytest.MonkeyPatch):
    """A server that drops DB_* and keeps GITHUB_TOKEN, with both set in its environment."""
    for name, value in (("DB_HOST", "db.example"), ("GITHUB_TOKEN", "ghp"), ("MY_API_KEY", "k")):
        monkeypatch.setenv(name, value)
    handler = make_handler(secret_env=("DB_*", "*_API_KEY"), keep_env=("GITHUB_*",))
    await handler.start("127.0.0.1", 0)
    yield handler
    await handler.close()


async def test_the_lists_are_configurable(configured) -> None:
    """--secret-env / --keep-env (ServerSettings) replace the defaults for the children."""
    async with await connect(configured.url, TOKEN) as client:
        await client.execute(argv=fake("env", "DB_HOST", "GITHUB_TOKEN", "MY_API_KEY"))
        assert output_of(await collect(client)) == "DB_HOST unset\nGITHUB_TOKEN=ghp\nMY_API_KEY unset\n"


async def test_a_child_never_sees_the_server_token(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable holding the server's token is dropped whatever its name."""
    monkeypatch.setenv("INNOCENT_NAME", TOKEN)
    await client.execute(argv=fake("env", "INNOCENT_NAME"))
    assert output_of(await collect(client)) == "INNOCENT_NAME unset\n"


@pytest.mark.parametrize(
    "line",
    [
        "< Authorization: Basic c3VwZXItc2VjcmV0",
        "< Authorization: super-secret",
        "< authorization: Token super-secret",
        "< Cookie: session=super-secret",
        "< X-Api-Token: super-secret",
        "< GET /ws?token=super-secret HTTP/1.1",
        "< GET /ws?a=1&access_token=super-secret HTTP/1.1",
        "connecting with Bearer super-secret",
        "the value super-secret appeared in a message",
    ],
)
def test_the_redactor_blanks_credentials_in_any_form(line: str) -> None:
    """Headers, schemes, query parameters and the known token itself become [redacted]."""
    redacted = SecretRedactor({"super-secret"}).redact(line)
    assert "super-secret" not in redacted and "c3VwZXItc2VjcmV0" not in redacted and "[redacted]" in redacted


def test_the_redactor_keeps_a_data_frames_kind_and_size_but_not_its_payload() -> None:
    """websockets' DEBUG line for a frame (an execute's env with an API key) loses its payload only."""
    frame = Frame(Opcode.TEXT, b'{"method":"execute","params":{"argv":["x"],"env":{"API_KEY":"sk-ant-zzz"}}}')
    record = logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "< %s", (frame,), None)
    SecretRedactor().filter(record)
    assert record.getMessage() == f"< TEXT [redacted] [{len(frame.data)} bytes]"
    beat = Frame(Opcode.PING, b"ab")
    ping = logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "> %s", (beat,), None)
    SecretRedactor().filter(ping)
    assert record.getMessage() != ping.getMessage() == "> PING 'ab' [text, 2 bytes]"


def test_the_redactor_leaves_ordinary_lines_alone() -> None:
    """A line without credentials is logged as it is."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "< Host: %s", ("127.0.0.1:8003",), None)
    SecretRedactor({"super-secret"}).filter(record)
    assert record.getMessage() == "< Host: 127.0.0.1:8003"


FRAGMENT_URL = "ws://u:PASS@127.0.0.1:9/ws?token=QSECRET#frag"


async def test_a_url_websockets_refuses_is_named_without_its_secrets() -> None:
    """connect() to a URL with a fragment: the error shows neither user info nor query (websockets'
    InvalidURI printed the whole URL, ?token=... and all)."""
    with pytest.raises(ValueError) as caught:
        await connect(FRAGMENT_URL, "x")
    assert "ws://127.0.0.1:9/ws" in str(caught.value)
    assert "QSECRET" not in str(caught.value) and "PASS" not in str(caught.value)


def test_a_server_url_with_a_fragment_is_one_line_without_its_secrets() -> None:
    """The notebook's run(server=...) and the terminal client refuse it up front, secrets left out."""
    with pytest.raises(ValueError, match="must not have a fragment") as caught:
        check_server_url(FRAGMENT_URL)
    assert "QSECRET" not in str(caught.value) and "PASS" not in str(caught.value)
    done = subprocess.run([sys.executable, "-m", "cc_executor_nb", "run", "--server", FRAGMENT_URL, "--", "true"],
                          capture_output=True, text=True, timeout=scaled(30), check=False,
                          env={**os.environ, "CC_EXECUTOR_TOKEN": "x"})
    assert (done.returncode, done.stderr) == (2, "error: --server URL 'ws://127.0.0.1:9/ws' must not have a fragment "
                                                 "('#...')\n")


def test_the_redactor_blanks_credentials_in_a_logged_traceback() -> None:
    """websockets logs a malformed handshake at DEBUG with its traceback, whose message quotes
    the header line: ``Authorization: Bearer <token>`` plus a stray control character printed
    the token in full (the filter redacted the message but not the exception text)."""
    try:
        raise ValueError("invalid HTTP header value: Bearer super-secret\x00")
    except ValueError:
        record = logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "! no valid HTTP request",
                                   (), sys.exc_info())
    record.stack_info = "Stack (most recent call last):\n  token super-secret"
    SecretRedactor({"super-secret"}).filter(record)
    text = logging.Formatter().format(record)
    assert "super-secret" not in text
    assert "ValueError: invalid HTTP header value: Bearer [redacted]" in text


async def test_a_stopped_servers_token_is_no_longer_scanned_for() -> None:
    """A kernel's ``%reload_ext`` starts a server with a new token each time: every token
    stayed in the redactors for good (one more scan of every log record per reload)."""
    tokens = [f"tok-{n}-{os.getpid()}" for n in range(3)]
    for token in tokens:
        handler = make_handler(token=token)
        await handler.start("127.0.0.1", 0)
        async with await connect(handler.url, token) as client:
            await client.execute(argv=fake("echo", "hi"))
            await collect(client)
        assert token in redacted_secrets()
        await handler.close()
    assert not set(tokens) & redacted_secrets()


async def test_a_token_two_servers_share_is_kept_until_both_stop() -> None:
    """Forgetting is per server: the first of two servers with one token to stop leaves it redacted."""
    token = f"shared-{os.getpid()}"
    first, second = make_handler(token=token), make_handler(token=token)
    await first.start("127.0.0.1", 0)
    await second.start("127.0.0.1", 0)
    await first.close()
    await first.close()  # idempotent: it does not release twice
    assert token in redacted_secrets()
    await second.close()
    assert token not in redacted_secrets()


@pytest.mark.parametrize("change", [hold_secret, release_secret])
def test_a_token_held_or_released_while_a_record_is_redacted_leaves_that_scan_alone(change) -> None:
    """A server starts or stops on the loop thread while another thread's log record is being
    redacted: the redactor's set changed under that scan, and the log call raised "RuntimeError:
    Set changed size during iteration" into its caller. The scan reads the set it began with."""
    token = f"held-{os.getpid()}"
    hold_secret(token)
    redactor = next(f for f in logging.getLogger("cc_executor_nb").filters if isinstance(f, SecretRedactor))
    scanning = iter(redactor.secrets)  # as SecretRedactor.redact iterates, interrupted here
    change(f"other-{os.getpid()}" if change is hold_secret else token)
    assert token in list(scanning)
    release_secret(f"other-{os.getpid()}")
    release_secret(token)


async def test_a_server_that_could_not_bind_leaves_no_token_held() -> None:
    """A start that fails (its port taken) is never closed: its token stayed held for good."""
    token = f"unbound-{os.getpid()}"
    first = make_handler()
    await first.start("127.0.0.1", 0)
    second = make_handler(token=token)
    with pytest.raises(OSError):
        await second.start("127.0.0.1", first.port)
    await first.close()
    assert token not in redacted_secrets()
