"""Boot a whole cluster from TOML for tests, through the same path as `miniupi run`.

`LocalCluster` fills in free ports and a private data and certs directory,
writes the cluster file, starts `miniupi run` as a child process and waits
until every node answers the health service over mTLS.
"""
from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from miniupi.ops.certs import init_certs
from miniupi.client.api import Client
from miniupi.config import load_config
from miniupi.contract.registry import PluginChoiceError
from miniupi.ops.postgres_server import LocalPostgres
from miniupi.ops.supervision import Supervisor, is_serving

DEFAULT_SPEC: dict[str, Any] = {
    # Customers may bring opening deposits, as in the demo cluster file.
    "cluster": {"name": "test", "prepare_timeout_s": 3, "call_timeout_s": 3, "max_opening_deposit": "10000.00"},
    "gateway": {"storage": "sqlite"},
    "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
}
# user -> (balance, password) per bank
Accounts = Mapping[str, Mapping[str, tuple[str, str]]]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now on 127.0.0.1.

    All are held open together while they are picked: ports picked one at a
    time, each released before the next, can come back twice (a 16-bank
    cluster once got one port for two banks).
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def free_port() -> int:
    return free_ports(1)[0]


class LocalCluster:
    """A cluster in `root`: start(), clients, node controls, stop()."""

    def __init__(self, root: Path, spec: Mapping[str, Any] | str | os.PathLike[str] | None = None,
                 accounts: Accounts | None = None, postgres: LocalPostgres | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, (str, os.PathLike)):
            with open(spec, "rb") as f:
                spec = tomllib.load(f)
        self.spec = copy.deepcopy(dict(spec or DEFAULT_SPEC))
        self._fill_in(accounts or {})
        if postgres is not None:
            self._on_postgres(postgres)
        self.config_path = self.root / "cluster.toml"
        self.config_path.write_text(tomli_w.dumps(self.spec))
        self.config = load_config(self.config_path)
        self.supervisor = Supervisor(self.config)
        self.log_path = self.root / "cluster.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _fill_in(self, accounts: Accounts) -> None:
        cluster = self.spec.setdefault("cluster", {})
        cluster["data_dir"] = str(self.root / "data")
        cluster["certs_dir"] = str(self.root / "certs")
        nodes = self._node_specs()
        managed, console = self.spec.get("postgres"), self.spec.get("console")
        portless = [table for table in [*nodes, *([managed] if managed else []), *([console] if console is not None else [])]
                    if "port" not in table]
        for node, port in zip(portless, free_ports(len(portless))):
            node["port"] = port
        for name, bank in self.spec["banks"].items():
            if name in accounts:
                path = self.root / f"accounts_{name}.toml"
                path.write_text(tomli_w.dumps(
                    {"accounts": {user: {"balance": bal, "password": pw} for user, (bal, pw) in accounts[name].items()}}))
                bank["accounts"] = str(path)
            elif "accounts" in bank:
                bank["accounts"] = str(Path(bank["accounts"]).resolve())

    def _node_specs(self) -> list[dict[str, Any]]:
        """The spec's table of every node: each gateway's, then each bank's."""
        gateways = list(self.spec["gateways"].values()) if "gateways" in self.spec else [self.spec.setdefault("gateway", {})]
        return [*gateways, *self.spec.setdefault("banks", {}).values()]

    def _on_postgres(self, server: LocalPostgres) -> None:
        """Point every node on `storage = "postgres"` without settings of its own at a database of
        this cluster's on `server`, so clusters sharing one server never see each other's nodes."""
        nodes = self._node_specs()
        chosen = [node for node in nodes if node.get("storage") == "postgres" and "postgres" not in node]
        if not chosen:
            return
        database = f"cluster_{uuid.uuid4().hex[:12]}"
        server.create_database(database)
        for node in chosen:
            node["postgres"] = {"host": "127.0.0.1", "port": server.port, "user": "miniupi", "dbname": database,
                                "password_file": str(server.password_file)}

    # -- whole cluster --------------------------------------------------

    def start(self, timeout: float = 30.0) -> LocalCluster:
        init_certs(self.config)  # `miniupi run` would make them too, but the health checks need them first
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "miniupi", "run", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
        )
        log.close()
        try:
            self.wait_ready(timeout=timeout)
        except BaseException:
            self.stop()  # never leave supervisord and its nodes behind a failed start
            raise
        return self

    def wait_ready(self, *nodes: str, timeout: float = 30.0) -> None:
        """Wait until every named node (default: all) answers its health check."""
        names = list(nodes) or [n.name for n in self.config.nodes]
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            if self._proc is not None and self._proc.poll() is not None:
                if self._proc.returncode == PluginChoiceError.exit_code:  # refused at load: its one line is the story
                    raise PluginChoiceError(self.log_path.read_text().splitlines()[-1].removeprefix("miniupi: "))
                raise RuntimeError(f"miniupi run exited with {self._proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-3000:])
            pending = {n for n in pending if not is_serving(self.config.node(n), 0.5)}
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"nodes not ready after {timeout}s: {sorted(pending)}; see {self.log_path}")
            if pending:
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to supervisord, as Ctrl-C would; every node goes with it."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one node -------------------------------------------------------

    def stop_node(self, name: str) -> None:
        self.supervisor.stop(name)

    def start_node(self, name: str, timeout: float = 30.0) -> None:
        self.supervisor.start(name)
        self.wait_ready(name, timeout=timeout)

    def restart_node(self, name: str, timeout: float = 30.0) -> None:
        self.supervisor.restart(name)
        self.wait_ready(name, timeout=timeout)

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the node's process (supervisord restarts it after a kill); returns the pid."""
        pid = self.supervisor.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        os.kill(pid, sig)
        return pid

    # -- clients --------------------------------------------------------

    def client(self, identity: str = "client", **kwargs: Any) -> Client:
        return Client(self.config, identity=identity, **kwargs)

    def cli(self, *args: str, input: str | None = None, home: Path | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `miniupi ARGS` as a user would, against this cluster."""
        env = {**os.environ, "MINIUPI_CONFIG": str(self.config_path),
               "MINIUPI_HOME": str(home or self.root / "home")}
        return subprocess.run([sys.executable, "-m", "miniupi", *args], input=input, capture_output=True,
                              text=True, env=env, timeout=timeout, cwd=self.root)


@contextlib.contextmanager
def local_postgres(root: Path | None = None) -> Iterator[LocalPostgres]:
    """A throwaway PostgreSQL server on a free port of 127.0.0.1, stopped and removed afterwards.

    Its data goes in a new directory of the system's temporary directory
    unless `root` is given: run as root, the server runs as the postgres user,
    who must be able to enter every directory above its own.
    """
    import shutil

    base = Path(tempfile.mkdtemp(prefix="miniupi-pg-")) if root is None else Path(root)
    server = LocalPostgres(base, free_port())
    try:
        yield server.start()
    finally:
        server.stop()
        if root is None:
            shutil.rmtree(base, ignore_errors=True)
