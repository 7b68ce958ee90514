"""Access control: token, Origin, Host; refusals happen before the upgrade."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from cc_executor_nb.client import connect, shown_url
from cc_executor_nb.errors import HandshakeRefused
from cc_executor_nb.server.access import (
    FailureTable,
    Refusal,
    address_key,
    check_handshake,
    host_name,
    is_loopback,
    token_matches,
)

from .conftest import TOKEN, make_handler
from .util import scaled


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.6.7", "localhost", "::1", "[::1]", "LOCALHOST", "a.localhost"])
def test_loopback_names(host: str) -> None:
    """Loopback addresses and localhost names are recognised."""
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "evil.com", "localhost.evil.com", "", "::"])
def test_foreign_names(host: str) -> None:
    """Anything else is not loopback."""
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["localhost.", "127.0.0.1.", "a.localhost.", "LOCALHOST."])
def test_a_trailing_dot_is_the_same_loopback_name(host: str) -> None:
    """A fully qualified name's trailing dot changes nothing, for a name as for an address
    ('localhost.' was accepted while '127.0.0.1.' and 'a.localhost.' were refused)."""
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1..", ".", "evil.com.", "localhost.evil.com."])
def test_only_one_trailing_dot_of_a_loopback_name_is_loopback(host: str) -> None:
    """Two dots, a lone dot or a foreign name with its dot are still foreign."""
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "::FFFF:7f00:1", "::ffff:127.9.8.7"])
def test_an_ipv4_mapped_loopback_address_is_loopback(host: str) -> None:
    """127/8 mapped into IPv6 (how a dual-stack socket names a v4 peer) is loopback: it was not,
    so '--host ::ffff:127.0.0.1' was warned about as cleartext beyond the machine."""
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["::ffff:10.0.0.1", "::ffff:0.0.0.0", "::ffff:192.0.2.7"])
def test_an_ipv4_mapped_foreign_address_is_not_loopback(host: str) -> None:
    """Only a mapped 127/8 address is loopback."""
    assert not is_loopback(host)


async def test_a_host_header_with_an_ipv4_mapped_loopback_address_is_accepted(server) -> None:
    """'[::ffff:127.0.0.1]:PORT' names this loopback server: accepted (it was refused with 403)."""
    assert b" 101 " in await raw_handshake(server.port, f"[::ffff:127.0.0.1]:{server.port}")


@pytest.mark.parametrize(
    "header, host",
    [("127.0.0.1:8003", "127.0.0.1"), ("[::1]:8003", "::1"), ("localhost", "localhost"), ("evil.com:80", "evil.com")],
)
def test_host_header_parsing(header: str, host: str) -> None:
    """The host part is taken from a Host header with or without a port."""
    assert host_name(header) == host


@pytest.mark.parametrize("header", ["[::1]evil.com", "[::1]:x:y", "[::1", "[::1]:80a", "localhost:x", "127.0.0.1:80/"])
async def test_a_malformed_host_header_is_not_loopback(server, header: str) -> None:
    """A Host that is not host[:port] is refused with 403 on a loopback bind, whatever
    loopback name it holds: '[::1]evil.com', '[::1' and 'localhost:x' were read as ::1 and
    localhost, and the handshake was accepted (101)."""
    assert host_name(header) == ""
    assert b" 403 " in await raw_handshake(server.port, header)
    assert b" 101 " in await raw_handshake(server.port, f"[::1]:{server.port}")


def test_token_compare() -> None:
    """Only the exact bearer token matches."""
    assert token_matches(f"Bearer {TOKEN}", TOKEN)
    assert token_matches(f"bearer {TOKEN}", TOKEN)
    assert not token_matches(f"Bearer {TOKEN}x", TOKEN)
    assert not token_matches(TOKEN, TOKEN)
    assert not token_matches(None, TOKEN)
    assert not token_matches("Basic abc", TOKEN)


def test_refusal_order_and_reasons_never_echo_the_token() -> None:
    """Host is checked first, then Origin, then the token; reasons hold no token."""
    good = {"Host": "127.0.0.1:1", "Authorization": f"Bearer {TOKEN}"}
    assert check_handshake(good, token=TOKEN) is None
    assert check_handshake({**good, "Host": "evil.com"}, token=TOKEN).status == 403
    assert check_handshake({**good, "Origin": "http://x"}, token=TOKEN).status == 403
    assert check_handshake({**good, "Origin": "http://x"}, token=TOKEN, allowed_origins={"http://x"}) is None
    wrong = check_handshake({**good, "Authorization": "Bearer nope"}, token=TOKEN)
    assert wrong.status == 401 and TOKEN not in wrong.reason and "nope" not in wrong.reason
    assert check_handshake({"Host": "evil.com"}, token=None, loopback_bind=False) is None


async def handshake_status(url: str, **headers: str) -> int:
    """The HTTP status a WebSocket handshake gets (101 when it succeeds)."""
    try:
        async with ws_connect(url, additional_headers=headers, proxy=None):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def raw_handshake(port: int, host_header: str | None) -> bytes:
    """Send a handshake by hand with the given Host header (None: none); return the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host = "" if host_header is None else f"Host: {host_header}\r\n"
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), scaled(10))
    writer.close()
    return line


async def test_no_token_is_401(server) -> None:
    """A handshake without a token is refused with 401."""
    assert await handshake_status(server.url) == 401


async def test_wrong_token_is_401(server) -> None:
    """A handshake with a wrong token is refused with 401."""
    assert await handshake_status(server.url, Authorization="Bearer wrong") == 401


async def test_our_client_says_why_the_server_refused_it(server) -> None:
    """connect() with a wrong token raises HandshakeRefused: the status and the server's reason, no token."""
    with pytest.raises(HandshakeRefused) as info:
        await connect(server.url, "wrong-token")
    refused = info.value
    assert (refused.status, refused.reason) == (401, "Unauthorized: missing or wrong bearer token")
    assert str(refused).startswith(f"{server.url} refused the connection: HTTP 401")
    assert "wrong-token" not in str(refused) and TOKEN not in str(refused)


def test_shown_urls_carry_no_credentials() -> None:
    """User info, query and fragment (where a secret could be) are left out of URLs put in messages."""
    assert shown_url("ws://user:secret@127.0.0.1:9/ws?token=abc#x") == "ws://127.0.0.1:9/ws"
    assert shown_url("wss://[::1]:8443/ws") == "wss://[::1]:8443/ws"
    assert shown_url("ws://host:notaport/ws") == "the server"


async def test_user_info_in_the_url_does_not_spoil_the_token(server) -> None:
    """``ws://user:pw@host/ws`` with the right token connects (the user info went as a second
    Authorization header: HTTP 400)."""
    url = server.url.replace("ws://", "ws://user:pw@", 1)
    async with await connect(url, TOKEN, auto_reconnect=False) as client:
        assert client.session_id


async def test_right_token_is_accepted(server) -> None:
    """The right token opens a session."""
    assert await handshake_status(server.url, Authorization=f"Bearer {TOKEN}") == 101


@pytest.mark.parametrize("origin", ["http://localhost:8888", "https://evil.example", "null"])
async def test_any_browser_origin_is_403(server, origin) -> None:
    """A handshake with an Origin not on the (empty) allow-list is refused with 403."""
    assert await handshake_status(server.url, Authorization=f"Bearer {TOKEN}", Origin=origin) == 403


async def test_allowed_origin_is_accepted() -> None:
    """An Origin on the allow-list is accepted."""
    handler = make_handler(allowed_origins=["http://localhost:8888"])
    await handler.start("127.0.0.1", 0)
    try:
        status = await handshake_status(handler.url, Authorization=f"Bearer {TOKEN}", Origin="http://localhost:8888")
        assert status == 101
    finally:
        await handler.close()


async def test_foreign_host_header_is_403(server) -> None:
    """On a loopback bind a Host that is not loopback is refused (DNS rebinding)."""
    assert b" 403 " in await raw_handshake(server.port, "evil.example:80")
    assert b" 101 " in await raw_handshake(server.port, f"localhost:{server.port}")


async def test_a_handshake_without_host_is_400(server) -> None:
    """A handshake with no Host header is refused with 400 (it was accepted: the loopback
    Host check had nothing to check), on a loopback bind and on any other."""
    assert b" 400 " in await raw_handshake(server.port, None)
    refusal = check_handshake({"Authorization": f"Bearer {TOKEN}"}, token=TOKEN, loopback_bind=False)
    assert refusal == Refusal(400, "Bad Request: no Host header")


async def test_unknown_path_is_404(server) -> None:
    """Only /ws, /ws/mcp and /health are served."""
    url = server.url.replace("/ws", "/other")
    assert await handshake_status(url, Authorization=f"Bearer {TOKEN}") == 404


async def test_a_url_without_the_websocket_path_is_told_the_path(server) -> None:
    """A client dialling ws://HOST:PORT (the path forgotten) learns where the WebSocket is (it got a bare
    "HTTP 404 (Not Found)")."""
    with pytest.raises(HandshakeRefused) as info:
        await connect(server.url.removesuffix("/ws"), TOKEN)
    assert str(info.value).endswith("refused the connection: HTTP 404 (Not Found: this server's WebSocket is at /ws)")


async def test_non_loopback_bind_without_token_refuses_to_start() -> None:
    """Serving without a token is loopback-only."""
    handler = make_handler(token=None, allow_no_token=True)
    with pytest.raises(ValueError, match="without a token"):
        await handler.start("0.0.0.0", 0)


async def test_explicit_no_token_on_loopback_works() -> None:
    """The explicit no-token opt-in works on loopback."""
    handler = make_handler(token=None, allow_no_token=True)
    await handler.start("127.0.0.1", 0)
    try:
        async with await connect(handler.url) as client:
            assert client.session_id
    finally:
        await handler.close()


async def test_default_handler_generates_a_token() -> None:
    """Without a token argument the handler makes a random one (secure by default)."""
    handler = make_handler(token=None)
    assert handler.token and len(handler.token) >= 32


def test_failures_in_a_row_from_one_source_cost_more_up_to_a_cap() -> None:
    """The first wrong token is answered at once, each further one from the same source
    waits twice as long, never past the cap; another source starts afresh."""
    table = FailureTable(base=0.25, cap=2.0)
    delays = [table.fail("10.0.0.1", now=float(i)) for i in range(6)]
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 2.0]
    assert table.fail("10.0.0.2", now=6.0) == 0.0


def test_a_source_quiet_for_the_forget_time_starts_afresh() -> None:
    """Failures far apart are not 'in a row': the count restarts after ``forget`` seconds."""
    table = FailureTable(base=0.25, forget=60.0)
    table.fail("a", now=0.0)
    assert table.fail("a", now=1.0) == 0.25
    assert table.fail("a", now=100.0) == 0.0


def test_the_failure_table_stays_bounded() -> None:
    """A flood of sources keeps at most ``size`` entries, dropping the longest quiet one."""
    table = FailureTable(size=100)
    table.fail("kept", now=0.0)
    for i in range(10_000):
        table.fail(f"10.{i // 256}.{i % 256}.1", now=1.0 + i)
        table.fail("kept", now=1.0 + i)
    assert len(table) == 100
    assert table.fail("kept", now=10_001.0) > 0


def test_ipv6_sources_count_per_64() -> None:
    """Addresses of one IPv6 /64 are one source; an IPv4-mapped address is its IPv4 one."""
    assert address_key("2001:db8::1") == address_key("2001:db8::2:3") == "2001:db8::/64"
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_key("127.0.0.1") == "127.0.0.1"


async def test_wrong_tokens_in_a_row_are_answered_later_and_a_right_one_at_once(server) -> None:
    """Before, every 401 came at once, so a client could try tokens as fast as it liked:
    now each further wrong token from an address waits longer, a right one right after
    is accepted without any wait."""
    waits: list[float] = []

    async def record(delay: float) -> None:
        waits.append(delay)

    server._refusal_wait = record
    for _ in range(4):
        assert await handshake_status(server.url, Authorization="Bearer wrong") == 401
    assert waits == [0.25, 0.5, 1.0]
    assert await handshake_status(server.url, Authorization=f"Bearer {TOKEN}") == 101
    assert waits == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    "request_head, status, says",
    [
        ("GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", b" 505 ", "unsupported HTTP version"),
        ("GET /ws HTTP/1.1\r\n", b" 426 ", "missing Connection header"),
    ],
)
async def test_a_request_websockets_refuses_is_one_log_line_without_traceback(
    server, caplog, request_head: str, status: bytes, says: str
) -> None:
    """An HTTP/1.0 request (505), or a plain GET without the upgrade (426), logged a
    traceback at DEBUG: now one line that says why."""
    caplog.set_level("DEBUG", logger="websockets.server")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        (
            f"{request_head}Host: 127.0.0.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
    )
    assert status in await asyncio.wait_for(reader.readline(), scaled(10))
    writer.close()
    invalid = [record for record in caplog.records if record.getMessage().startswith("! invalid")]
    assert len(invalid) == 1 and says in invalid[0].getMessage()
    assert "Traceback" not in caplog.text and invalid[0].exc_info is None


async def test_a_request_that_is_no_http_is_one_log_line_without_traceback(server, caplog) -> None:
    """Bytes that are no HTTP request: websockets' "! no valid HTTP request" came with a
    traceback at DEBUG; now one line that says why."""
    caplog.set_level("DEBUG", logger="websockets.server")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"garbage\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), scaled(20)) == b""  # closed without an answer
    writer.close()
    refused = [record for record in caplog.records if record.getMessage().startswith("! no valid HTTP request")]
    assert [record.getMessage() for record in refused] == [
        "! no valid HTTP request: ValueError: invalid HTTP request line: garbage"
    ]
    assert "Traceback" not in caplog.text and refused[0].exc_info is None
