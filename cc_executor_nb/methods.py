"""The wire vocabulary: one constant per JSON-RPC method and notification.

Pure: no I/O, no asyncio. Every module that sends, dispatches or folds a message
names it through these constants, so a method is spelled in exactly one place.
The README's protocol section documents each one.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACK",
    "CLIENT_DETACHED",
    "CLIENT_DISCONNECTED",
    "CLIENT_OUTPUT_GAP",
    "CLIENT_RECONNECTED",
    "CLIENT_RECONNECTING",
    "CONNECTED",
    "CONTROL",
    "CONVERSATION_ENDING",
    "CONVERSATION_FOLLOW_UP",
    "CONVERSATION_NOTICE",
    "CONVERSATION_QUESTION",
    "CONVERSATION_TURN",
    "EXECUTE",
    "EXECUTE_INPUT",
    "HEARTBEAT",
    "INPUT",
    "INPUT_CLOSE",
    "INPUT_CLOSE_AFTER_TURN",
    "INPUT_DRAINED",
    "INPUT_TURN",
    "JOBS_ATTACH",
    "JOBS_LIST",
    "PONG",
    "PROCESS_CANCELLED",
    "PROCESS_COMPLETED",
    "PROCESS_ERROR",
    "PROCESS_INPUT",
    "PROCESS_METRICS",
    "PROCESS_NOTICE",
    "PROCESS_OUTPUT",
    "PROCESS_PAUSED",
    "PROCESS_RESUMED",
    "PROCESS_STARTED",
    "PROCESS_STATUS",
    "RESUME",
    "SERVER_PYTHON",
    "STATUS",
]

# Requests (client to server)
EXECUTE: Final = "execute"
CONTROL: Final = "control"
STATUS: Final = "status"
RESUME: Final = "resume"
PONG: Final = "pong"
EXECUTE_INPUT: Final = "execute.input"
"""*(added)* Not a method: in ``capabilities``, this server's ``execute`` takes ``input``
(an older one would ignore it, and a job would wait on its stdin for ever)."""
SERVER_PYTHON: Final = "execute.server_python"
"""*(added)* Not a method: in ``capabilities``, this server's ``execute`` takes
``server_python`` (an older one ignores it and runs ``argv[0]`` as given)."""
INPUT: Final = "input"
"""*(added)* Write text to the running process's stdin (runs executed with ``stdin: "pipe"``)."""
INPUT_TURN: Final = "input.turn"
"""*(added)* Not a method: in ``capabilities``, this server's ``input`` takes ``turn``: a job
with ``summary_ends_turn`` holds such an input while a turn is under way (an older one ignores
it and writes it at once)."""
INPUT_CLOSE: Final = "input.close"
"""*(added)* Close the running process's stdin once everything sent before was written."""
INPUT_CLOSE_AFTER_TURN: Final = "input.close.after_turn"
"""*(added)* Not a method: in ``capabilities``, this server's ``input.close`` takes ``after_turn``:
a job with ``summary_ends_turn`` closes its input once the turn under way (and those held) ended (an
older one ignores it and closes at once, during the turn)."""
ACK: Final = "ack"
"""*(added)* The client holds every notification up to ``seq``: the server forgets them
(they are no longer kept for ``resume``), so a client that keeps up costs no disk."""
JOBS_LIST: Final = "jobs.list"
"""*(added)* The server's durable jobs (runs started by ``execute`` with ``durable: true``)."""
JOBS_ATTACH: Final = "jobs.attach"
"""*(added)* Follow a durable job on this connection: its notifications from the start, then live."""

# Notifications (server to client)
CONNECTED: Final = "connected"
HEARTBEAT: Final = "heartbeat"
PROCESS_STARTED: Final = "process.started"
PROCESS_OUTPUT: Final = "process.output"
PROCESS_STATUS: Final = "process.status"
PROCESS_METRICS: Final = "process.metrics"
PROCESS_PAUSED: Final = "process.paused"
PROCESS_RESUMED: Final = "process.resumed"
PROCESS_CANCELLED: Final = "process.cancelled"
PROCESS_COMPLETED: Final = "process.completed"
PROCESS_ERROR: Final = "process.error"
PROCESS_NOTICE: Final = "process.notice"
"""*(added)* Something the run must know: a disk limit reached (replay dropped, process
held or released), a capture file truncated by the process itself."""
INPUT_DRAINED: Final = "input.drained"
"""*(added)* A run's input queue, which refused an ``input`` on this connection (full), has
room again (or the input closed, or a job's held turns shrank): the client sends the refused
piece now, not at its next timer. Also in ``capabilities``: a server that lists it tells so
(an older one does not)."""
PROCESS_INPUT: Final = "process.input"
"""*(added)* A durable job keeps what its stdin was sent: each ``input`` (its ``data``),
and its close (``closed: true``), so whoever attaches later knows what was written."""

# Local events the client makes itself (never on the wire)
CLIENT_RECONNECTING: Final = "client.reconnecting"
CLIENT_RECONNECTED: Final = "client.reconnected"
CLIENT_OUTPUT_GAP: Final = "client.output_gap"
CLIENT_DISCONNECTED: Final = "client.disconnected"
CLIENT_DETACHED: Final = "client.detached"
"""A handle stopped following a durable job that goes on in its job server."""

# Local events of a conversation with an interactive CLI (the kernel makes them; never
# on the wire). The kernel folds them into a run's state like notifications.
CONVERSATION_TURN: Final = "conversation.turn"
"""``{"status": "running"|"completed"|"failed"|"cancelled", "turn": N, "last": bool}``: a turn
began or ended (``last``: the conversation ends with it)."""
CONVERSATION_QUESTION: Final = "conversation.question"
"""``{"pending": N, "request": {...}}``: a permission question was asked or answered."""
CONVERSATION_NOTICE: Final = "conversation.notice"
"""``{"message": str}``: something the person should know (a fall-back, an automatic deny)."""
CONVERSATION_FOLLOW_UP: Final = "conversation.follow_up"
"""``{"queued": N}``: *(added)* a follow-up went to a durable job's server, which writes it when
no turn is under way (``input``'s ``turn``): its turn begins when the job's log shows it written;
meanwhile the run reads ``running`` (``N``: the follow-ups it waits for, this one included)."""
CONVERSATION_ENDING: Final = "conversation.ending"
"""``{"reason": "end"|"idle"|"max_idle_conversations"|"cancel"}``: the conversation's input is
being closed (``idle``: its idle timeout; ``max_idle_conversations``: more conversations waited)."""
