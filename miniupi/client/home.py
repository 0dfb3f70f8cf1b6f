"""The client home: where a logged-in session is kept between commands.

The key sits in a 0600 file, like a browser cookie; the gateway holds only
its hash, and `miniupi logout` revokes it there and deletes it here.

The home itself is a 0700 directory of the user's own. One that another
user owns, or that others may write in, is refused rather than fixed: who
can write there could have planted a session of theirs, or links that make
us write the key where they can read it, and a chmod now would not undo that.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path

from miniupi.client.api import Session
from miniupi.config import split_address
from miniupi.errors import FailedPrecondition

SESSION_FILE = "session.json"
# What the gateway hands out: ID.SECRET, hex and URL-safe base64 (auth_session.SessionStore.start).
_SESSION_KEY = re.compile(r"[0-9A-Za-z_.-]{1,256}")


def client_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--home, else $MINIUPI_HOME, else the user's state directory; made 0700 if missing."""
    if explicit:
        home = Path(explicit)
    elif os.environ.get("MINIUPI_HOME"):
        home = Path(os.environ["MINIUPI_HOME"])
    else:
        state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        home = Path(state) / "miniupi"
    try:
        missing = not home.exists()
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if missing:
            os.chmod(home, 0o700)  # whatever the umask
        st = home.stat()
    except OSError as e:
        raise FailedPrecondition(f"cannot use {home} as the client home: {e.strerror or e}") from None
    check_home(home, st)
    if not os.access(home, os.W_OK | os.X_OK):
        raise FailedPrecondition(f"cannot use {home} as the client home: not writable")
    return home


def check_home(home: Path, st: os.stat_result) -> None:
    """Refuse a home that is not the user's own: another's, or writable by others."""
    if st.st_uid != os.geteuid():
        raise FailedPrecondition(f"client home {home} belongs to another user (uid {st.st_uid}); "
                                 "use a home of your own (--home or MINIUPI_HOME)")
    if st.st_mode & 0o022:
        raise FailedPrecondition(f"client home {home} is writable by other users "
                                 f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 700 {home}")


def write_private(path: Path, data: str) -> None:
    """Replace `path` atomically with a file only its owner can read.

    The temporary file has a fresh name, made with O_EXCL and O_NOFOLLOW
    (mkstemp), so a stale or planted file or link at some fixed name can
    neither lend it its mode nor take the data somewhere else.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_session(home: Path, session: Session) -> None:
    write_private(home / SESSION_FILE, json.dumps(
        {"account": session.account, "key": session.key, "expires_at": session.expires_at}))


def load_session(home: Path) -> Session | None:
    try:
        fd = os.open(home / SESSION_FILE, os.O_RDONLY | os.O_NOFOLLOW)  # a link there is not our session
        with os.fdopen(fd) as f:
            raw = json.loads(f.read())
        account, key, expires_at = raw["account"], raw["key"], float(raw["expires_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # A file we did not write (edited, damaged) is no session: its key would go into gRPC metadata and
    # its account into the outbox, and fail there with a traceback on every command, logout included.
    if not (isinstance(account, str) and isinstance(key, str) and _SESSION_KEY.fullmatch(key)
            and math.isfinite(expires_at)):
        return None
    try:
        split_address(account)
    except ValueError:
        return None
    return Session(account, key, expires_at)


def clear_session(home: Path) -> None:
    (home / SESSION_FILE).unlink(missing_ok=True)
