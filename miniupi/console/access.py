"""Who may use the console: whoever can read the console key, and so the operator alone.

The console acts as the admin (its certificate reads every node and runs the
audit; the supervisor's socket, 0700 in data_dir, stops and starts them), so
a page must prove it speaks for the same person. The proof is a random key
kept in DATA_DIR/console.token, made 0600 on first start and kept across
restarts (a supervised console that restarts does not sign its pages out):
whoever may read it is already the owner of the data dir and its admin
certificate, so the key grants nothing new. It is never printed at start
or logged (supervisord's output may be kept); `miniupi console --url` prints
the URL that signs in, for the one who can read the file. Delete the file
and restart the console to sign every page out.

A page signs in once with `/?token=KEY` and then holds a cookie derived from
the key (HttpOnly, SameSite=Strict). A change (a POST) must also carry
the CSRF token the signed-in page was served, in a header no other site's
form or script may send here, and come from this origin. Scripts may send
`Authorization: Bearer KEY` instead, which no browser adds by itself.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request

from miniupi.config import ClusterConfig, ConfigError

KEY_FILE = "console.token"
COOKIE = "miniupi_console"
CSRF_HEADER = "x-csrf-token"


class KeyUnsafe(ConfigError):
    """The console key file is readable by others, or unreadable: one line saying what to do."""


def key_path(cluster: ClusterConfig) -> Path:
    return cluster.data_dir / KEY_FILE


def load_key(cluster: ClusterConfig) -> str:
    """The console key, made on first use: 0600 in data_dir, never anywhere else."""
    path = key_path(cluster)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return _read_key(path)


def _read_key(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        key = path.read_text().strip()
    except OSError as e:
        raise KeyUnsafe(f"{path}: cannot read the console key: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyUnsafe(f"{path}: the console key is open to others (mode {stat.S_IMODE(mode):o}); "
                        f"chmod 600 it, or delete it to make a new one")
    if len(key) < 32:
        raise KeyUnsafe(f"{path}: not a console key; delete it to make a new one")
    return key


class Access:
    """Checks a request against the console key."""

    def __init__(self, key: str, hosts: frozenset[str] | None) -> None:
        self._key = key.encode()
        self.cookie_value = self._derive(b"cookie")
        self.csrf_token = self._derive(b"csrf")
        self.hosts = hosts  # the Host names a request may carry; None: any (a public console)

    def _derive(self, label: bytes) -> str:
        return hmac.new(self._key, label, hashlib.sha256).hexdigest()

    def is_key(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._key)

    def right_host(self, request: Request) -> bool:
        """The Host header names this console: a page of another name that resolves here (DNS rebinding)
        is not served."""
        if self.hosts is None:
            return True
        return _hostname(request.headers.get("host", "")) in self.hosts

    def _bearer(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.is_key(value.strip())

    def _cookie(self, request: Request) -> bool:
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), self.cookie_value)

    def may_read(self, request: Request) -> bool:
        return self._bearer(request) or self._cookie(request)

    def may_change(self, request: Request) -> str | None:
        """None if the request may change the cluster, else why not."""
        if self._bearer(request):
            return None
        if not self._cookie(request):
            return "sign in first: open the URL that `miniupi console --url` prints"
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), self.csrf_token):
            return "missing or wrong CSRF token: reload the console page"
        origin = request.headers.get("origin")
        if origin is not None and _hostname(urlsplit(origin).netloc) != _hostname(request.headers.get("host", "")):
            return "a request from another origin"
        return None


def _hostname(netloc: str) -> str:
    return (urlsplit("//" + netloc).hostname or "").lower()


def loopback_names(host: str) -> frozenset[str]:
    """The Host names a loopback console answers to."""
    return frozenset({host.lower().strip("[]"), "localhost", "127.0.0.1", "::1"})
