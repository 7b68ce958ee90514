"""Environment and executable lookup for running the real ``claude`` CLI
against `DemoBackend`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["DEMO_API_KEY", "DEMO_GATEWAY_TOKEN", "demo_environment", "write_demo_config"]

# Not a secret: the demo backend accepts any key. It only has to look like a
# key so that the CLI skips its login flow.
DEMO_API_KEY = "sk-ant-demo-0000000000000000000000000000"

# Not a secret either: an unsigned JWT whose audience is "claude-gateway" (expiring in
# 2100). With it on a custom ANTHROPIC_BASE_URL the CLI treats the demo backend as a
# Claude gateway and reads the usage-limit headers a subscription gets
# (anthropic-ratelimit-unified-*), reporting them as rate_limit_event lines; with the
# API key alone it ignores them (found by experiment with the pinned CLI, 2.1.332). The
# backend checks neither credential.
DEMO_GATEWAY_TOKEN = (
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
    "eyJhdWQiOiJjbGF1ZGUtZ2F0ZXdheSIsInN1YiI6ImNjLWV4ZWN1dG9yLW5iLWRlbW8iLCJleHAiOjQxMDI0NDQ4MDB9."
)



def demo_environment(
    base_url: str,
    config_dir: str,
    *,
    max_retries: int | None = None,
    trusted_dirs: Iterable[str] = (),
) -> dict[str, str]:
    """Environment variables that point a child ``claude`` at the demo backend.

    Merge the result over ``os.environ`` for the child. ``config_dir`` becomes
    the CLI's private ``CLAUDE_CONFIG_DIR``; it is created and seeded so that
    no onboarding, API-key or folder-trust prompt appears (``trusted_dirs``
    are marked trusted for interactive runs; ``-p`` runs never ask). The
    user's own ``~/.claude`` is never read or written. ``max_retries`` sets
    ``CLAUDE_CODE_MAX_RETRIES``, the CLI's number of retries of a failed API
    call (about ten by default, with backoff from 0.5 s; it clamps values
    above 15); use 0 or 1 in tests so that error scenarios end in seconds.
    """
    write_demo_config(config_dir, trusted_dirs=trusted_dirs)
    env = {
        # Where the Messages API lives, and a key the CLI will accept as set.
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": DEMO_API_KEY,
        # Keeps history, sessions and settings away from the user's ~/.claude.
        "CLAUDE_CONFIG_DIR": str(config_dir),
        # Stops telemetry, error reporting, feature-flag fetches, the
        # auto-updater and the quota probe: the backend is the only peer.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Each of these is implied by the line above; they are set too so
        # that an older or newer CLI that reads only the specific switch
        # stays offline as well.
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # Never try to install an IDE extension from a demo run.
        "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL": "1",
        # The demo stands for a Claude gateway (see DEMO_GATEWAY_TOKEN); it also hides
        # the user's own bearer token.
        "ANTHROPIC_AUTH_TOKEN": DEMO_GATEWAY_TOKEN,
        # Empty values hide the user's other credentials and providers, which
        # would otherwise win over the demo key or send traffic elsewhere.
        "CLAUDE_CODE_OAUTH_TOKEN": "",
        "CLAUDE_CODE_USE_BEDROCK": "",
        "CLAUDE_CODE_USE_VERTEX": "",
        "CLAUDE_CODE_USE_FOUNDRY": "",
        # A proxy configured for the user must not swallow loopback traffic.
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
    }
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    return env


def write_demo_config(config_dir: str, *, trusted_dirs: Iterable[str] = ()) -> Path:
    """Create ``config_dir/.claude.json`` with first-run prompts answered.

    Keys the CLI wrote there before (it keeps state in the same file) are
    preserved. The file is replaced whole, and only when it changes: a lasting
    config directory is shared by processes whose CLIs may be reading it.
    Returns the path of the file.
    """
    directory = Path(config_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".claude.json"
    config = _read_json(path)
    config.update(_first_run_answers(config))
    projects = config.setdefault("projects", {})
    for trusted in trusted_dirs:
        projects.setdefault(str(Path(trusted).resolve()), {})["hasTrustDialogAccepted"] = True
    _replace_text(path, json.dumps(config, indent=2) + "\n")
    return path


def _replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader sees the old file or the new), unless it holds it."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _first_run_answers(config: dict[str, Any]) -> dict[str, Any]:
    responses = config.get("customApiKeyResponses") or {}
    approved = list(responses.get("approved") or [])
    # The CLI remembers an approved key by its last 20 characters.
    if DEMO_API_KEY[-20:] not in approved:
        approved.append(DEMO_API_KEY[-20:])
    return {
        "hasCompletedOnboarding": True,
        "theme": config.get("theme", "dark"),
        "autoUpdates": False,
        "customApiKeyResponses": {
            "approved": approved,
            "rejected": list(responses.get("rejected") or []),
        },
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
