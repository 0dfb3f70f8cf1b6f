"""The client home: where a logged-in session is kept between commands.

The key sits in a 0600 file, like a browser cookie; the gateway holds only
its hash, and `miniupi logout` revokes it there and deletes it here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from miniupi.client.api import Session

SESSION_FILE = "session.json"


def client_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--home, else $MINIUPI_HOME, else the user's state directory."""
    if explicit:
        home = Path(explicit)
    elif os.environ.get("MINIUPI_HOME"):
        home = Path(os.environ["MINIUPI_HOME"])
    else:
        state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        home = Path(state) / "miniupi"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def write_private(path: Path, data: str) -> None:
    """Replace `path` atomically with a file only its owner can read."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_session(home: Path, session: Session) -> None:
    write_private(home / SESSION_FILE, json.dumps(
        {"account": session.account, "key": session.key, "expires_at": session.expires_at}))


def load_session(home: Path) -> Session | None:
    try:
        raw = json.loads((home / SESSION_FILE).read_text())
        return Session(raw["account"], raw["key"], float(raw["expires_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_session(home: Path) -> None:
    (home / SESSION_FILE).unlink(missing_ok=True)
