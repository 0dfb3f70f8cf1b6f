"""A local PostgreSQL server for a cluster: found on the machine, initialised once, run as a child.

`miniupi run` runs it as one more supervised program when the cluster file
has a `[postgres]` table with `managed = true`, and the test fixture boots
a throwaway one the same way. Its data is `ROOT/postgres` (ROOT is the
cluster's data_dir), made once by initdb.

How nodes reach it: TCP on 127.0.0.1 only, with scram-sha-256 and a
password generated at initdb, kept in `ROOT/postgres.password` (0600) and
nowhere else (never on a command line, in a log or in the cluster file).
Unix sockets are off. A socket with trust would have needed no password,
but its path lives under data_dir (too long for a socket in deep
directories, as supervisord's own socket found), PostgreSQL's default
socket directory is not writable by an ordinary user, and over TCP a node
connects to the managed server exactly as to an external one, with
host/port/user/password_file: one path to test.

PostgreSQL refuses to run as root. Run as root (as CI is), initdb and the
server run as the `postgres` system user: the data directory is theirs,
and ROOT is made group `postgres`, mode 0710, so that user may pass
through it to its own directory and see nothing else there.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniupi.config import ConfigError

SERVER_DIR = "postgres"
PASSWORD_FILE = "postgres.password"
SUPERUSER = "miniupi"
DATABASE = "miniupi"
HOST = "127.0.0.1"
SYSTEM_USER = "postgres"  # who runs the server when we are root
# Where distributions put the server's binaries when pg_config is not on PATH (Debian, Ubuntu; RPM; source).
BIN_DIR_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
INITDB_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0


class PostgresUnusable(ConfigError):
    """No PostgreSQL server binaries, or a data directory it cannot use: one line saying what to do."""


def find_bin_dir(configured: Path | None = None) -> Path:
    """The directory holding `postgres` and `initdb`: `configured`, else pg_config's, else a distribution's."""
    if configured is not None:
        if not _has_server(configured):
            raise PostgresUnusable(f"[postgres] bin_dir {configured} holds no postgres and initdb programs")
        return configured
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))
    found = [Path(p) for pattern in BIN_DIR_GLOBS for p in glob.glob(pattern)]
    candidates += sorted(found, key=_version_key, reverse=True)  # the newest major version first
    for candidate in candidates:
        if _has_server(candidate):
            return candidate
    raise PostgresUnusable("no PostgreSQL server found (pg_config --bindir, /usr/lib/postgresql/*/bin): "
                           "install it (apt-get install postgresql) or set bin_dir in [postgres]")


def _has_server(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("postgres", "initdb"))


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path)))


@dataclass(frozen=True)
class RunAs:
    """The system user the server runs as, when it cannot be us (we are root)."""

    name: str
    uid: int
    gid: int


def server_user() -> RunAs | None:
    """None when we are not root (the server runs as us); else the postgres system user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresUnusable(f"PostgreSQL refuses to run as root, and there is no {SYSTEM_USER!r} user to run "
                               "it as: install the postgresql package, or run miniupi as another user") from None
    return RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


class LocalPostgres:
    """A PostgreSQL server whose data is ROOT/postgres, on 127.0.0.1:`port`."""

    def __init__(self, root: Path, port: int, bin_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.port = port
        self.bin_dir = find_bin_dir(bin_dir)
        self.data = self.root / SERVER_DIR
        self.password_file = self.root / PASSWORD_FILE
        self.run_as = server_user()
        self._proc: subprocess.Popen[bytes] | None = None

    # --- once ----------------------------------------------------------------

    def initialise(self) -> None:
        """Make ROOT usable by the server and, on the first call ever, the data directory and the password."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.run_as is not None:
            self._let_server_user_through()
        if (self.data / "PG_VERSION").exists():
            if not self.password_file.exists():
                raise PostgresUnusable(f"{self.password_file} is missing, and {self.data} was made with it: "
                                       f"restore it, or remove {self.data} to start afresh")
            return
        if self.data.exists():
            shutil.rmtree(self.data)  # an initdb cut short: it starts again from nothing
        self.data.mkdir(mode=0o700)  # made here, as initdb may not create entries in ROOT
        password = secrets.token_urlsafe(32)
        _write_private(self.password_file, password + "\n")
        # initdb reads the password from a file of its own user's, removed as soon as it is done.
        pwfile = self.root / f".{PASSWORD_FILE}.initdb"
        _write_private(pwfile, password + "\n")
        try:
            if self.run_as is not None:
                os.chown(pwfile, self.run_as.uid, self.run_as.gid)
            self._run([str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                       "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        # Single-user mode makes the database without a server running yet.
        self._run([str(self.bin_dir / "postgres"), "--single", "-D", str(self.data), "postgres"], "creating the database",
                  stdin=f"CREATE DATABASE {DATABASE};\n")

    def _let_server_user_through(self) -> None:
        assert self.run_as is not None
        for parent in reversed(self.root.resolve().parents):
            st = parent.stat()
            if not (st.st_mode & 0o001 or (st.st_gid == self.run_as.gid and st.st_mode & 0o010)
                    or st.st_uid == self.run_as.uid):
                raise PostgresUnusable(f"PostgreSQL runs as the user {self.run_as.name}, who may not enter {parent} "
                                       f"(mode {st.st_mode & 0o777:o}): put data_dir below a directory others may enter")
        os.chown(self.root, -1, self.run_as.gid)
        os.chmod(self.root, 0o710)

    def _run(self, argv: list[str], what: str, stdin: str | None = None) -> None:
        try:
            done = subprocess.run(argv, input=(stdin or "").encode(), capture_output=True, timeout=INITDB_TIMEOUT_S,
                                  cwd="/", **self._as_server_user())
        except subprocess.TimeoutExpired:
            raise PostgresUnusable(f"PostgreSQL {what} did not finish within {INITDB_TIMEOUT_S:g} s") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).decode(errors="replace").splitlines() if line.strip()]
            raise PostgresUnusable(f"PostgreSQL {what} failed: {lines[-1] if lines else f'exit {done.returncode}'}")

    def _as_server_user(self) -> dict[str, Any]:
        if self.run_as is None:
            return {}
        if self.data.exists():
            os.chown(self.data, self.run_as.uid, self.run_as.gid)
        return {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}

    # --- the server ----------------------------------------------------------

    def server_argv(self) -> list[str]:
        """The server in the foreground: loopback TCP only, no unix socket."""
        return [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories="]

    def connection(self, dbname: str = DATABASE) -> dict[str, Any]:
        """psycopg's connection keywords, the password read from its file now."""
        return {"host": HOST, "port": self.port, "user": SUPERUSER, "dbname": dbname,
                "password": self.password_file.read_text().strip()}

    # --- as a child of this process (tests): start, stop, restart ------------

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children); only while started here."""
        if self._proc is None:
            raise RuntimeError("this PostgreSQL server was not started by this process")
        return self._proc.pid

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> LocalPostgres:
        """Start the server as our child and wait until it takes connections."""
        self.initialise()
        log = os.fdopen(os.open(self.root / "postgres.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        try:
            self._proc = subprocess.Popen(self.server_argv(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd="/", **self._as_server_user())
        finally:
            log.close()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise PostgresUnusable(f"PostgreSQL exited with {self._proc.returncode}; see {self.root / 'postgres.log'}")
            try:
                psycopg.connect(**self.connection("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: clients are disconnected, a checkpoint is written), then wait."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(**self.connection("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())

