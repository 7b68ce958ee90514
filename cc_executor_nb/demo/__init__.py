"""A local mock of the Anthropic Messages API for running the real ``claude`` CLI offline.

Start it, point the CLI at it, and run prompts that pick a scenario::

    with DemoBackend() as backend:
        env = {**os.environ, **demo_environment(backend.url, config_dir)}
        subprocess.run([find_claude(), "-p", "--output-format", "stream-json",
                        "--verbose", "--", "write 3 haikus"], env=env)

or from a shell: ``python -m cc_executor_nb.demo [--port N] [--host 127.0.0.1]``.
``python -m cc_executor_nb.demo.record`` re-records ``tests/data/streamjson``
with the real CLI.

Endpoints: ``POST /v1/messages`` (``stream: true`` gives server-sent events,
``stream: false`` one JSON message), ``POST /v1/messages/count_tokens``,
``GET /health``; anything else answers an Anthropic-style 404.

Scenarios
---------
The reply is chosen from the text of the last user message (case-insensitive;
``<system-reminder>`` blocks the CLI adds are ignored). The first rule that
matches wins, in this order:

``usage limit reset in N s`` / ``rate limit reset in N s``
    Opens a limit window of N seconds for the whole demo account: every main request
    gets HTTP 429 with the headers of a subscription's usage limit
    (``anthropic-ratelimit-unified-*``, ``x-should-retry: false``) or of an API key's
    rate limit (``retry-after``, ``anthropic-ratelimit-requests-*``); the same
    conversation is answered after the reset, with the task after "then" (see
    :mod:`.limits`).
``echo: TEXT``
    (at the start) replies exactly ``TEXT``.
``bash: COMMAND``
    (at the start) a Bash ``tool_use`` running ``COMMAND``; once its result comes
    back, ``I ran `COMMAND`. Output: ...`` (``It failed with exit code N.`` before the
    output when it failed), or, when the call was refused,
    ``The command was not run: REASON`` (the deny message, quoted). A command that
    writes (``touch x``, ``echo hi > f``) makes the CLI ask for approval.
``bash twice: COMMAND``
    the same Bash call twice in one turn (new tool ids), then both results:
    "always allow" on the first answers the second without a question.
``write: PATH`` / ``write: PATH: TEXT``
    a Write of ``TEXT`` (default ``Hello from the cc_executor_nb demo.``), then
    ``I wrote PATH: ...`` or ``I did not change PATH: REASON``.
``edit: PATH: OLD => NEW``
    a Read of ``PATH``, then an Edit replacing ``OLD`` with ``NEW`` (the approval
    card shows its diff), then ``I edited PATH: ...``.
``error NNN`` / ``overloaded``
    HTTP ``NNN`` (400-599; ``overloaded`` means 529) with the Anthropic error
    JSON, e.g. ``{"type": "error", "error": {"type": "overloaded_error",
    "message": "Overloaded"}}``. The CLI retries these; bound it with
    ``demo_environment(..., max_retries=0)`` (``CLAUDE_CODE_MAX_RETRIES``).
``markdown xss``
    Markdown plus ``<img src=x onerror=alert(1)>`` and
    ``<script>alert(2)</script>``, for sanitisation tests.
``tool``
    A Bash ``tool_use`` running ``echo hi``; after the tool result comes back,
    ``The command printed: hi``. The CLI counts ``echo`` as read-only and runs
    it even in the default permission mode, so no extra flag is needed. With
    ``think`` as well (``think, then use a tool``), a thinking block comes before
    the call and another before the answer: thinking between tool calls.
``haiku`` / ``haikus``
    ``N haikus`` (``write 3 haikus``; default 1), numbered and deterministic.
``think`` / ``thinking``
    Sends nothing at all, not even headers, for ``think for N seconds``
    (default ``DemoSettings.think_seconds``, 5), then a thinking block and a
    short answer.
``story``
    An ``N word story`` (default 500) of exactly N words by ``str.split()``,
    streamed in many text deltas at ``at W words per second`` (default
    ``DemoSettings.words_per_second``, 2000). ``a 5000 word story at 200 words per
    second`` streams for 25 s: long enough to interrupt (the CLI drops the request;
    the backend takes that quietly).
``huge`` / ``big reply``
    One text delta of ``N bytes`` (default 2,000,000) with no newline, made of
    10-byte records ``"%09d|" % offset``.
arithmetic
    ``what is 2+2`` (or ``calculate``/``compute``, or a bare expression):
    integers with ``+ - * /`` and parentheses, parsed without ``eval``;
    replies ``4``.
anything else
    A short greeting (``Hello! This is the cc_executor_nb demo backend.``).

Tool ids are new in each conversation (``toolu_demo_0001``, ``0002``, ...): the CLI
drops a ``tool_use`` whose id it has seen. A follow-up written after an interrupt
carries the CLI's ``[Request interrupted by user]`` marker, which scenario detection
skips.

Side requests the CLI may send (a one-token quota probe, or a system prompt
without tools such as title generation) get the one-word reply ``Demo``
without scenario detection. Usage numbers depend only on the prompt and the
reply, so costs are deterministic.
"""

from __future__ import annotations

from ..claude.executable import find_claude
from .env import DEMO_API_KEY, demo_environment, write_demo_config
from .scenarios import DemoSettings
from .server import DemoBackend, RequestRecord

__all__ = [
    "DEMO_API_KEY",
    "DemoBackend",
    "DemoSettings",
    "RequestRecord",
    "demo_environment",
    "find_claude",
    "write_demo_config",
]
