"""Who may open a session: token, Origin and Host checks, as pure functions.

The checks run before the WebSocket upgrade, so a refused browser or a client without
the token never reaches the JSON-RPC layer.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = [
    "SINGLE_HEADERS",
    "WS_PATHS",
    "FailureTable",
    "Refusal",
    "address_key",
    "check_handshake",
    "host_name",
    "is_loopback",
    "token_matches",
]

WS_PATHS = ("/ws", "/ws/mcp")
SINGLE_HEADERS = ("Host", "Origin", "Authorization")
"""Headers that may appear once: with two values, which one was checked is unclear."""


@dataclass(frozen=True)
class Refusal:
    """An HTTP refusal: status and a short reason (never echoing the token)."""

    status: int
    reason: str


def is_loopback(host: str) -> bool:
    """True for localhost names and loopback addresses (v4 127/8, v6 ::1, and 127/8 mapped
    into v6: ``::ffff:127.0.0.1``), with or without the trailing dot of a fully qualified
    name (``localhost.``, ``127.0.0.1.``). Every loopback decision of the package is this one."""
    host = host.strip("[]").lower().removesuffix(".")
    if host in ("localhost", "ip6-localhost") or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    # Python before 3.13 says an IPv4-mapped address is not loopback: ask of the v4 address.
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


# What may follow the host in a Host header: nothing, or a port (digits, maybe none).
_PORT = re.compile(r"(:[0-9]*)?")


def host_name(header: str) -> str:
    """The host part of a Host header (``[::1]:8003`` gives ``::1``).

    "" (no loopback name) when the header is not ``host[:port]``: ``[::1]evil.com``,
    ``[::1`` and ``localhost:x`` are not read as the loopback names in them.
    """
    header = header.strip()
    if header.startswith("["):
        host, bracket, rest = header[1:].partition("]")
        return host if bracket and _PORT.fullmatch(rest) else ""
    if header.count(":") == 1:
        host, _, port = header.partition(":")
        return host if _PORT.fullmatch(":" + port) else ""
    return header


def token_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    scheme, _, value = (header or "").partition(" ")
    candidate = value.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(candidate.encode(), token.encode())


def check_handshake(
    headers: Mapping[str, str],
    *,
    token: str | None,
    allowed_origins: Collection[str] = (),
    loopback_bind: bool = True,
) -> Refusal | None:
    """Return why a WebSocket handshake must be refused, or None to accept it.

    Order: a header of :data:`SINGLE_HEADERS` given twice (400), no Host (400), a
    foreign Host on a loopback bind (403, DNS rebinding), a browser Origin not on the allow-list (403),
    then the bearer token (401).
    """
    get_all = getattr(headers, "get_all", None)
    if get_all is not None:
        for name in SINGLE_HEADERS:
            if len(get_all(name)) > 1:
                return Refusal(400, f"Bad Request: more than one {name} header")
    host = headers.get("Host")
    if host is None:
        # HTTP/1.1 requires it; without one the loopback check below would pass unchecked.
        return Refusal(400, "Bad Request: no Host header")
    if loopback_bind and not is_loopback(host_name(host)):
        return Refusal(403, "Forbidden: Host is not a loopback name")
    origin = headers.get("Origin")
    if origin is not None and origin not in allowed_origins:
        return Refusal(403, "Forbidden: Origin not allowed")
    if token is not None and not token_matches(headers.get("Authorization"), token):
        return Refusal(401, "Unauthorized: missing or wrong bearer token")
    return None


def address_key(address: str) -> str:
    """The source a failure counts against: the address, or an IPv6 address's /64 (one
    host usually holds a whole /64, so its addresses are one source)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and not ip.is_loopback and getattr(ip, "ipv4_mapped", None) is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(getattr(ip, "ipv4_mapped", None) or ip)


class FailureTable:
    """Consecutive authentication failures per source, and what the next one costs.

    The first failure of a source is answered at once (a typo); each further one waits
    ``base`` seconds, doubled per failure up to ``cap``. A source is forgotten once it
    failed nothing for ``forget`` seconds. At most ``size`` sources are kept: a new one
    pushes out the one that failed longest ago. Success is not recorded: a right token is
    never delayed, and does not clear what a guesser on the same address has run up.
    Pure: the caller passes the clock.
    """

    def __init__(self, *, base: float = 0.25, cap: float = 5.0, forget: float = 300.0, size: int = 4096) -> None:
        self.base = base
        self.cap = cap
        self.forget = forget
        self.size = size
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def fail(self, source: str, now: float) -> float:
        """Record a failure of ``source`` at ``now``; return the seconds its answer waits."""
        count, last = self._failures.pop(source, (0, now))
        count = 1 if now - last > self.forget else count + 1
        self._failures[source] = (count, now)
        while len(self._failures) > self.size:
            self._failures.popitem(last=False)
        return self.delay(count)

    def delay(self, count: int) -> float:
        """What the ``count``-th failure in a row waits."""
        if count <= 1:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(count - 2, 64))
