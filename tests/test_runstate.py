"""Tests for the pure run state: reducer transitions, health, timers, tail, formatting."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc_executor_nb import methods
from cc_executor_nb.kernel.runstate import (
    RunState,
    elapsed,
    format_duration,
    format_took,
    heartbeat_health,
    inactive_for,
    next_beat_in,
)


def started(now: float = 0.0, interval: float = 2.0) -> RunState:
    """A connected state whose process started at ``now``."""
    state = RunState()
    state.apply(
        "connected",
        {"session_id": "s1", "heartbeat_interval": interval, "inactivity_threshold": 5},
        now,
    )
    state.apply(
        "process.started",
        {
            "status": "started",
            "pid": 41,
            "pgid": 41,
            "argv": ["claude", "-p", "hi"],
            "seq": 1,
        },
        now,
    )
    return state


def output(state: RunState, stream: str, data: str, now: float) -> None:
    """Apply one process.output with the next seq."""
    state.apply(
        "process.output",
        {"type": stream, "data": data, "truncated": False, "seq": state.last_seq + 1},
        now,
    )


def silence(state: RunState, now: float, status: str = "running") -> None:
    """Apply one process.status (silence report) with the next seq."""
    params = {
        "status": status,
        "inactive_seconds": 30.0,
        "no_output_for": 30.0,
        "message": "Process is thinking...",
        "seq": state.last_seq + 1,
    }
    state.apply("process.status", params, now)


# Reducer transitions


def test_new_state_is_starting() -> None:
    """A fresh state is 'starting' with no output."""
    state = RunState()
    assert (state.status, state.stdout, state.stderr, state.last_seq) == (
        "starting",
        "",
        "",
        0,
    )


def test_connected_records_session_and_intervals() -> None:
    """connected stores the session id, both intervals and the connection time."""
    state = RunState()
    state.apply(
        "connected",
        {
            "session_id": "s1",
            "heartbeat_interval": 0.2,
            "inactivity_threshold": 3,
            "resume_token": "t",
        },
        5.0,
    )
    assert (
        state.session_id,
        state.heartbeat_interval,
        state.inactivity_threshold,
        state.connected_at,
    ) == ("s1", 0.2, 3.0, 5.0)


def test_heartbeat_counts_and_stamps() -> None:
    """Each heartbeat bumps the count and records its arrival time."""
    state = started()
    state.apply("heartbeat", {"status": "alive", "last_seq": 1, "timestamp": 1e9}, 2.0)
    state.apply("heartbeat", {"status": "alive", "last_seq": 1, "timestamp": 1e9}, 4.0)
    assert (state.heartbeat_count, state.last_heartbeat_at) == (2, 4.0)


def test_started_sets_running_pid_pgid_argv() -> None:
    """process.started makes the run 'running' and records pid, pgid, argv and start time."""
    state = started(now=3.0)
    assert (state.status, state.pid, state.pgid, state.argv, state.started_at) == (
        "running",
        41,
        41,
        ["claude", "-p", "hi"],
        3.0,
    )


def test_output_keeps_stdout_and_stderr_apart() -> None:
    """Interleaved output is kept in order, and each stream concatenates only its own pieces."""
    state = started()
    output(state, "stdout", "a\n", 1.0)
    output(state, "stderr", "warn\n", 1.1)
    output(state, "stdout", "b\n", 1.2)
    assert (state.stdout, state.stderr) == ("a\nb\n", "warn\n")
    assert state.pieces == [("stdout", "a\n"), ("stderr", "warn\n"), ("stdout", "b\n")]
    assert (state.output_chars, state.last_output_at) == (9, 1.2)


def test_status_makes_running_thinking() -> None:
    """process.status while running turns the run into 'thinking' and is counted."""
    state = started()
    silence(state, 30.0)
    assert (state.status, state.status_count, state.inactive_seconds) == (
        "thinking",
        1,
        30.0,
    )


def test_a_silence_while_a_question_waits_is_not_thinking() -> None:
    """30 s into an unanswered question the run read "thinking": it is waiting for a person
    (the badge says "needs you"); it stays "running", and thinks again once answered."""
    state = started()
    state.apply(methods.CONVERSATION_QUESTION, {"pending": 1, "request": {"id": "q1"}}, now=1.0)
    silence(state, 30.0)
    assert (state.status, state.needs_you, state.inactive_seconds) == ("running", True, 30.0)
    state.apply(methods.CONVERSATION_QUESTION, {"pending": 0, "request": {"id": "q1"}}, now=40.0)
    silence(state, 70.0)
    assert state.status == "thinking"


def test_output_after_thinking_returns_to_running() -> None:
    """The next output after a silence report puts the run back to 'running'."""
    state = started()
    silence(state, 30.0)
    output(state, "stdout", "done thinking\n", 31.0)
    assert state.status == "running"


def test_status_while_paused_stays_paused() -> None:
    """A silence report about a paused process leaves it 'paused'."""
    state = started()
    state.apply("process.paused", {"status": "paused", "pid": 41, "pgid": 41, "seq": 2}, 1.0)
    silence(state, 31.0, status="paused")
    assert (state.status, state.status_count) == ("paused", 1)


def test_paused_then_resumed() -> None:
    """process.paused gives 'paused' and process.resumed gives 'running' again."""
    state = started()
    state.apply("process.paused", {"status": "paused", "seq": 2}, 1.0)
    assert state.status == "paused"
    state.apply("process.resumed", {"status": "resumed", "seq": 3}, 2.0)
    assert state.status == "running"


def test_cancelled_then_completed() -> None:
    """process.cancelled marks the run cancelled; the following completion records the exit."""
    state = started()
    state.apply("process.cancelled", {"status": "cancelled", "seq": 2}, 1.0)
    assert (state.status, state.finished, state.ended_at) == ("cancelled", True, None)
    state.apply(
        "process.completed",
        {
            "status": "cancelled",
            "exit_code": -15,
            "duration_seconds": 1.5,
            "error": None,
            "seq": 3,
        },
        1.5,
    )
    assert (state.status, state.exit_code, state.ended_at) == ("cancelled", -15, 1.5)


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [
        ("completed", 0),
        ("failed", 2),
        ("failed", -9),
        ("timeout", -15),
        ("cancelled", -15),
    ],
)
def test_completed_takes_status_exit_code_and_duration(status: str, exit_code: int) -> None:
    """process.completed sets the final status, exit code, duration and end time from its params."""
    state = started()
    params = {
        "status": status,
        "pid": 41,
        "pgid": 41,
        "exit_code": exit_code,
        "duration_seconds": 7.25,
        "error": None,
        "seq": 2,
    }
    state.apply("process.completed", params, 8.0)
    assert (
        state.status,
        state.exit_code,
        state.duration,
        state.ended_at,
        state.finished,
    ) == (status, exit_code, 7.25, 8.0, True)


def test_completed_with_unknown_status_is_judged_by_exit_code() -> None:
    """An unrecognised completion status falls back to completed/failed by exit code."""
    state = started()
    state.apply("process.completed", {"status": "weird", "exit_code": 3, "seq": 2}, 1.0)
    assert state.status == "failed"


def test_process_error_records_message() -> None:
    """process.error gives status 'error' with the server's message."""
    state = started()
    state.apply("process.error", {"error": "reader crashed", "seq": 2}, 4.0)
    assert (state.status, state.error, state.finished) == (
        "error",
        "reader crashed",
        True,
    )


@pytest.mark.parametrize("end", [None, "completed"])
def test_break_off_ends_the_run_in_error_whatever_it_read(end: str | None) -> None:
    """break_off() ends a running or completed run ``error`` with its message, dead and finished."""
    state = started()
    if end is not None:
        state.apply("process.completed", {"status": end, "exit_code": 0, "seq": 2}, 3.0)
    state.break_off("could not take in the run's end", 4.0)
    assert (state.status, state.error, state.alive, state.finished) == (
        "error", "could not take in the run's end", False, True)
    assert state.ended_at == (3.0 if end else 4.0)


def test_unknown_method_only_proves_the_connection_alive() -> None:
    """An unknown method changes nothing but the time of the last message from the server."""
    state = started()
    before = dataclasses.replace(state, last_message_at=1.0)
    state.apply("process.teleported", {"seq": 2}, 1.0)
    assert repr(state) == repr(before)


def test_any_message_counts_as_proof_of_life() -> None:
    """Output long after the last heartbeat keeps the heartbeat indicator healthy."""
    state = started()
    state.apply("connected", {"heartbeat_interval": 2.0}, 0.0)
    state.apply("heartbeat", {"last_seq": 1}, 1.0)
    assert heartbeat_health(state, 8.0)[0] == "lost"
    state.apply("process.output", {"type": "stdout", "data": "x\n", "seq": 2}, 7.5)
    assert heartbeat_health(state, 8.0) == ("ok", 0.5)
    assert next_beat_in(state, 8.0) == 1.5


def test_heartbeat_interval_follows_the_beats() -> None:
    """An adaptive server's current interval, carried by each beat, becomes the expectation."""
    state = started()
    state.apply("heartbeat", {"interval": 0.5}, 1.0)
    assert state.heartbeat_interval == 0.5


def test_metrics_bring_progress_and_resources() -> None:
    """process.metrics and process.status fill progress, resources and the CPU history."""
    state = started()
    progress = {"fraction": 0.5, "eta_seconds": 3, "basis": "history"}
    busy = {"cpu_percent": 90.0, "rss_bytes": 5, "num_processes": 1}
    idle = {"cpu_percent": 10.0, "rss_bytes": 6, "num_processes": 1}
    state.apply("process.metrics", {"seq": 2, "progress": progress, "resources": busy}, 1.0)
    state.apply("process.status", {"seq": 3, "resources": idle}, 2.0)
    assert state.progress == {"fraction": 0.5, "eta_seconds": 3, "basis": "history"}
    assert state.resources["rss_bytes"] == 6 and state.cpu_history == [90.0, 10.0]


def test_replayed_notification_is_ignored() -> None:
    """A notification whose seq is not above last_seq (a replay) is not applied twice."""
    state = started()
    output(state, "stdout", "once\n", 1.0)
    state.apply("process.output", {"type": "stdout", "data": "once\n", "seq": 2}, 1.0)
    assert (state.stdout, state.last_seq) == ("once\n", 2)


def test_reconnecting_is_undone_by_connected() -> None:
    """mark_reconnecting() shows 'reconnecting'; the next connected restores the previous status."""
    state = started()
    silence(state, 30.0)
    state.mark_reconnecting()
    assert state.status == "reconnecting"
    state.apply("connected", {"session_id": "s1", "heartbeat_interval": 2.0}, 31.0)
    assert state.status == "thinking"


def test_a_reconnect_notice_without_unreachable_clears_the_last_reason() -> None:
    """A later notice whose dial reached the server (no ``unreachable``) clears the reason the
    header shows: it kept saying "cannot reach the server" of one that answered."""
    state = started()
    state.mark_reconnecting({"attempt": 3, "unreachable": "Connection refused", "gives_up_in": 200.0}, 10.0)
    assert (state.unreachable, state.reconnect_gives_up_at) == ("Connection refused", 210.0)
    state.mark_reconnecting({"attempt": 4}, 12.0)
    assert (state.status, state.unreachable, state.reconnect_gives_up_at) == ("reconnecting", None, None)


# Heartbeat health


@pytest.mark.parametrize(("intervals", "health"), [(1.4, "ok"), (1.6, "overdue"), (3.1, "lost")])
def test_heartbeat_health_thresholds(intervals: float, health: str) -> None:
    """The last beat is ok up to 1.5 intervals old, overdue up to 3, then lost."""
    state = started(interval=2.0)
    state.apply("heartbeat", {"status": "alive"}, 10.0)
    assert heartbeat_health(state, 10.0 + intervals * 2.0) == (
        health,
        pytest.approx(intervals * 2.0),
    )


def test_heartbeat_health_waits_for_first_beat() -> None:
    """Before the first beat and within 1.5 intervals of connecting, health is 'waiting'."""
    state = started(now=0.0, interval=2.0)
    assert heartbeat_health(state, 1.0) == ("waiting", 1.0)


def test_heartbeat_health_overdue_from_connection_start() -> None:
    """With no beat at all, age is measured from the connection start."""
    state = started(now=0.0, interval=2.0)
    assert heartbeat_health(state, 3.2) == ("overdue", 3.2)


def test_heartbeat_health_without_connection_is_waiting() -> None:
    """A state that never connected has nothing to measure from."""
    assert heartbeat_health(RunState(), 100.0) == ("waiting", None)


# Timers


def test_inactive_for_counts_from_start_then_last_output() -> None:
    """Silence is measured from the start, then from the last output."""
    state = started(now=10.0)
    assert inactive_for(state, 12.5) == 2.5
    output(state, "stdout", "x", 13.0)
    assert inactive_for(state, 20.0) == 7.0


@pytest.mark.parametrize("silence_first", [True, False])
def test_replayed_output_of_an_attached_job_is_as_old_as_its_last_output(silence_first: bool) -> None:
    """The attach says when the job last had output (at 4.0); the replay (seqs up to 3) folded
    at 10.0 keeps that time, before or after the attach's answer; live output (seq 4) is new."""
    state = started(now=10.0)
    if silence_first:
        state.take_job_silence(4.0, 3)
    output(state, "stdout", "a", 10.0)
    output(state, "stdout", "b", 10.0)
    if not silence_first:
        state.take_job_silence(4.0, 3)
    assert inactive_for(state, 12.0) == 8.0
    output(state, "stdout", "c", 13.0)
    assert inactive_for(state, 14.0) == 1.0


def test_inactive_for_is_none_once_finished() -> None:
    """A finished run has no inactivity timer."""
    state = started()
    state.apply("process.completed", {"status": "completed", "exit_code": 0, "seq": 2}, 1.0)
    assert inactive_for(state, 50.0) is None


def test_elapsed_runs_then_uses_server_duration() -> None:
    """Elapsed time grows while running and is the server's duration after completion."""
    state = started(now=10.0)
    assert elapsed(state, 14.0) == 4.0
    state.apply(
        "process.completed",
        {"status": "completed", "exit_code": 0, "duration_seconds": 4.2, "seq": 2},
        14.3,
    )
    assert elapsed(state, 99.0) == 4.2


def test_elapsed_is_none_before_start() -> None:
    """Nothing has elapsed before process.started."""
    assert elapsed(RunState(), 5.0) is None


# Output tail


def test_tail_without_cut() -> None:
    """When everything fits, the tail is the whole output and nothing is cut."""
    state = started()
    output(state, "stdout", "abc", 1.0)
    output(state, "stderr", "de", 1.0)
    tail = state.tail(100)
    assert (tail.pieces, tail.cut_chars, tail.cut) == (
        [("stdout", "abc"), ("stderr", "de")],
        0,
        False,
    )


def test_tail_cuts_inside_a_piece_and_counts() -> None:
    """A bounded tail keeps the last characters, cutting its first piece, and counts the rest."""
    state = started()
    output(state, "stdout", "0123456789", 1.0)
    output(state, "stderr", "ERR", 1.0)
    output(state, "stdout", "xy", 1.0)
    tail = state.tail(7)
    assert (tail.pieces, tail.cut_chars) == (
        [("stdout", "89"), ("stderr", "ERR"), ("stdout", "xy")],
        8,
    )


def test_tail_merges_neighbouring_pieces_of_one_stream() -> None:
    """Consecutive pieces of the same stream come back as one."""
    state = started()
    for chunk in ("a", "b", "c"):
        output(state, "stdout", chunk, 1.0)
    assert state.tail(10).pieces == [("stdout", "abc")]


@given(
    st.lists(
        st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(min_size=1, max_size=20)),
        max_size=30,
    ),
    st.integers(min_value=0, max_value=200),
)
def test_tail_is_the_last_characters(pieces: list[tuple[str, str]], max_chars: int) -> None:
    """Any tail joins to the last max_chars characters, and cut + shown is the total."""
    state = RunState()
    for seq, (stream, text) in enumerate(pieces, start=1):
        state.apply("process.output", {"type": stream, "data": text, "seq": seq}, 0.0)
    whole = "".join(text for _, text in pieces)
    tail = state.tail(max_chars)
    shown = "".join(text for _, text in tail.pieces)
    assert shown == (whole[-max_chars:] if max_chars else "")
    assert tail.cut_chars + len(shown) == len(whole)


# Formatting


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0.4 s"),
        (1.24, "1.2 s"),
        (45, "45 s"),
        (59.9, "59 s"),
        (9.96, "10 s"),
        (185, "3 min 05 s"),
        (3720, "1 h 02 min"),
        (-1, "0.0 s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Durations read as seconds, minutes and seconds, or hours and minutes."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(0.078, "78 ms"), (0.9996, "1.0 s"), (12.34, "12.3 s"), (-1, "0 ms")])
def test_format_took_counts_as_claudes_footer(seconds: float, text: str) -> None:
    """How long a run took reads as Claude's footer writes its duration: milliseconds under a second."""
    assert format_took(seconds) == text


def test_format_duration_whole_drops_tenths() -> None:
    """whole=True shows whole seconds, so live timers change at most once a second."""
    assert (format_duration(3.7, whole=True), format_duration(0.2, whole=True)) == (
        "3 s",
        "0 s",
    )


# Conversations: turns in one live process (local conversation.* events)


def turn(state: RunState, status: str, now: float = 1.0) -> None:
    """Apply one conversation.turn event."""
    state.apply("conversation.turn", {"status": status, "turn": state.turns + (status == "running")}, now)


def completion(state: RunState, exit_code: int, status: str | None = None, now: float = 9.0) -> None:
    """Apply the process's process.completed."""
    params = {"status": status or ("completed" if exit_code == 0 else "failed"), "exit_code": exit_code,
              "duration_seconds": 9.0, "seq": state.last_seq + 1}
    state.apply("process.completed", params, now)


def test_a_turn_end_is_final_status_while_the_process_lives() -> None:
    """After a turn's result: status completed, the process alive, the run not finished."""
    state = started()
    turn(state, "running")
    turn(state, "completed")
    assert (state.status, state.alive, state.finished, state.exit_code) == ("completed", True, False, None)
    assert state.between_turns and state.turns == 1


def test_a_follow_up_runs_again_and_counts_turns() -> None:
    """A follow-up turn sets running again; a failed turn is failed, the process still alive."""
    state = started()
    turn(state, "running")
    turn(state, "completed")
    turn(state, "running")
    assert (state.status, state.between_turns, state.turns) == ("running", False, 2)
    turn(state, "failed")
    assert (state.status, state.alive, state.finished) == ("failed", True, False)


def test_an_ended_conversation_takes_its_last_turn_status() -> None:
    """After conversation.ending, exit code 1 after a failed turn reads as that turn's status."""
    state = started()
    turn(state, "running")
    turn(state, "failed")
    state.apply("conversation.ending", {"reason": "end"}, 2.0)
    completion(state, 1)
    assert (state.status, state.exit_code, state.alive, state.finished) == ("failed", 1, False, True)


def test_a_conversation_ended_after_an_interrupted_turn_is_completed() -> None:
    """After conversation.ending, exit code 1 after an interrupted turn is a normal end (it read
    cancelled): the conversation was ended as asked; the exit code stays the CLI's."""
    state = started()
    turn(state, "running")
    turn(state, "cancelled")
    state.apply("conversation.ending", {"reason": "idle"}, 2.0)
    completion(state, 1)
    assert (state.status, state.exit_code, state.alive, state.finished) == ("completed", 1, False, True)


def test_a_process_that_dies_unasked_keeps_the_servers_status() -> None:
    """Without conversation.ending a non-zero exit between turns is a failure."""
    state = started()
    turn(state, "running")
    turn(state, "completed")
    completion(state, 1)
    assert (state.status, state.finished) == ("failed", True)


def test_cancel_between_turns_is_cancelled() -> None:
    """process.cancelled between turns makes the run cancelled and finished at once."""
    state = started()
    turn(state, "running")
    turn(state, "completed")
    state.apply("process.cancelled", {"status": "cancelled", "seq": state.last_seq + 1}, 2.0)
    assert (state.status, state.finished) == ("cancelled", True)
    completion(state, -15, "cancelled")
    assert (state.status, state.exit_code) == ("cancelled", -15)


def test_pending_questions_say_needs_you_until_answered() -> None:
    """conversation.question counts waiting questions; needs_you only while the process lives."""
    state = started()
    state.apply("conversation.question", {"pending": 1}, 3.0)
    assert state.needs_you and state.waiting_since == 3.0
    state.apply("conversation.question", {"pending": 2}, 4.0)
    assert state.waiting_since == 3.0
    state.apply("conversation.question", {"pending": 0}, 5.0)
    assert not state.needs_you and state.waiting_since is None
    state.apply("conversation.question", {"pending": 1}, 6.0)
    completion(state, 0)
    assert not state.needs_you and state.pending_questions == 0


def test_conversation_events_prove_nothing_about_the_server() -> None:
    """Local events do not count as messages from the server (the heartbeat health)."""
    state = started(now=0.0)
    turn(state, "running", now=50.0)
    assert state.last_message_at == 0.0


def test_pause_between_turns_resumes_to_the_turn_status() -> None:
    """A paused idle process resumes as completed (between turns), not running."""
    state = started()
    turn(state, "running")
    turn(state, "completed")
    state.apply("process.paused", {"status": "paused", "seq": state.last_seq + 1}, 2.0)
    state.apply("process.resumed", {"status": "resumed", "seq": state.last_seq + 1}, 3.0)
    assert state.status == "completed" and not state.finished


def test_a_turn_before_the_process_started_only_counts() -> None:
    """A turn event before process.started counts the turn but leaves the status starting."""
    state = RunState()
    turn(state, "running")
    assert (state.status, state.turns) == ("starting", 1)


@pytest.mark.parametrize("pinned_first", [True, False])
def test_an_attached_jobs_times_are_its_own_whether_before_or_after_the_replay(pinned_first) -> None:
    """A lost job replayed at t=100 (start, then its server's error): its times are the job's, 40..46.8,
    whichever of the attach reply and the replay comes first."""
    state = RunState()
    if pinned_first:
        state.take_job_times(40.0, 46.8)
    state.apply("process.started", {"pid": 7, "pgid": 7, "seq": 1}, 100.0)
    state.apply("process.error", {"error": "the job server stopped", "seq": 2}, 100.01)
    if not pinned_first:
        state.take_job_times(40.0, 46.8)
    assert state.status == "error" and elapsed(state, 200.0) == pytest.approx(6.8)


def test_a_running_jobs_attached_run_counts_from_the_jobs_start() -> None:
    """Attached to a job that runs: the duration so far counts from the job's start, not the replay."""
    state = RunState()
    state.take_job_times(40.0, None)
    state.apply("process.started", {"pid": 7, "pgid": 7, "seq": 1}, 100.0)
    assert elapsed(state, 101.0) == pytest.approx(61.0)


def test_a_run_whose_reconnects_give_up_ended_when_the_server_last_spoke() -> None:
    """The server last spoke at 10, then the connection dropped; the reconnects give up at 300: the run took 10 s."""
    state = started(0.0)
    state.apply("process.output", {"type": "stdout", "data": "x\n", "seq": 2}, 10.0)
    state.mark_reconnecting()
    state.apply("process.error", {"error": "connection lost: reconnect failed"}, 300.0)
    assert state.status == "error" and elapsed(state, 400.0) == pytest.approx(10.0)


@pytest.mark.parametrize("silence_first", [True, False])
def test_a_turn_ended_in_an_attached_jobs_replay_waits_since_the_jobs_last_output(silence_first: bool) -> None:
    """An attached conversation whose replayed turn ended (the job's last output at 4.0,
    folded at 10.0) has waited for a follow-up since 4.0, not since the attach; a live turn
    after it counts from its own end."""
    state = started(now=10.0)
    if silence_first:
        state.take_job_silence(4.0, 2)
    turn(state, "running", 10.0)
    output(state, "stdout", "the answer", 10.0)
    turn(state, "completed", 10.0)
    if not silence_first:
        state.take_job_silence(4.0, 2)
    assert state.between_turns and state.turn_ended_at == 4.0
    turn(state, "running", 13.0)
    output(state, "stdout", "c", 13.0)
    turn(state, "completed", 14.0)
    assert state.turn_ended_at == 14.0


def test_a_server_error_after_a_turns_failure_is_no_longer_the_turns() -> None:
    """A run ended with its last turn's error (shown with that turn), then a server error:
    the new error is the run's own, so the record shows it beside the exit code again."""
    state = RunState()
    state.apply("process.completed", {"status": "failed", "exit_code": 1, "error": "API Error", "turn_error": True,
                                      "seq": 1}, now=1.0)
    assert state.turn_error
    state.apply("process.error", {"error": "the job's log could not be written", "seq": 2}, now=2.0)
    assert (state.error, state.turn_error) == ("the job's log could not be written", False)


def test_replay_dropped_notices_keep_one_line_with_the_newest_seq() -> None:
    """Each ``replay_dropped`` notice names a new first seq, so keeping each message once kept
    them all: a run whose replay was dropped 500 times had 500 ``note:`` lines in its widget
    header and every record. The session's drop is one line per scope, saying the newest seq;
    other notices are kept as before."""
    state = started()
    for seq in range(2, 502):
        first = seq * 1000
        state.apply(methods.PROCESS_NOTICE, {
            "kind": "disk_limit", "action": "replay_dropped", "scope": "session", "first_available_seq": first,
            "message": f"session disk limit reached: notifications before seq {first} are no longer kept for resume",
            "seq": seq,
        }, 1.0)
    state.apply(methods.PROCESS_NOTICE, {"kind": "disk_limit", "action": "held", "message": "held", "seq": 600}, 1.0)
    assert state.notices == [
        "session disk limit reached: notifications before seq 501000 are no longer kept for resume", "held",
    ]
