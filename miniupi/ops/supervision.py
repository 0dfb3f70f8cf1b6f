"""Run the whole cluster under supervisord, and talk to it afterwards.

`miniupi run` writes a supervisord config for the topology and runs
supervisord as its child, passing on Ctrl-C and SIGTERM, so one signal
stops every node and leaves nothing behind. A node that dies once it is up
is restarted, however often; a node that cannot start is not: `run` stops
the cluster and exits with that node's own last error line. The
`Supervisor` client drives that supervisord over XML-RPC on a unix socket
for `status`, `start`, `stop` and `restart`.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection

from miniupi.ops.certs import write_file
from miniupi.ops.postgres_server import LocalPostgres
from miniupi.config import CONSOLE, GATEWAY, ClusterConfig, ConfigError, NodeConfig
from miniupi.nodes.server import NodeStartError
from miniupi.tls import dial

# sun_path is 108 bytes with the NUL on Linux, 104 on macOS; stay under both.
MAX_SOCKET_PATH = 100
# A stop may legitimately take stopwaitsecs (10 s) before SIGKILL lands.
RPC_TIMEOUT_S = 60.0
# All nodes in one group: on shutdown supervisord signals a whole group at
# once but waits a poll tick (~1 s) between groups, so one group per node
# made Ctrl-C take a second per node. supervisorctl names are GROUP:NODE.
GROUP = "miniupi"
# A node says it cannot start by its exit code (2: its cluster file is wrong;
# 3: anything else before it serves, such as a damaged store): expected, so
# supervisord does not restart it, and `run` stops. Every other exit is
# restarted, however often and however soon.
REFUSED_EXIT_CODES = (ConfigError.exit_code, NodeStartError.exit_code)
# 0: a process is RUNNING once spawned. supervisord counts an exit within
# startsecs as a failed start and gives up after startretries of them in a
# row; but a node serves well within a second, so a node killed that soon,
# again and again (the crash matrix does it), must be restarted, not given up on.
STARTSECS = 0
# Only for a command that cannot even be spawned (supervisord retries those with backoff).
START_RETRIES = 3
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How often `run` forwards the nodes' stderr and looks for a node that failed to start.
WATCH_EVERY_S = 0.25


# The managed PostgreSQL's program: started before every node (priority), stopped with a fast shutdown
# (SIGINT: its clients are cut off and a checkpoint written; SIGTERM would wait for every node to leave).
POSTGRES = "postgres"
POSTGRES_PRIORITY = 50
# Unlike a node it is not restarted forever: one that exits within this long, this many times in a row
# (a port taken, a damaged data directory), is FATAL, and `run` stops with its last line.
POSTGRES_STARTSECS = 3
POSTGRES_START_RETRIES = 2


# The web console's program, when the cluster file has a [console] table: started after every node (it
# shows them) and stopped first. Like a node it is restarted if it dies, and `run` stops if it cannot start.
CONSOLE_PRIORITY = 300


# How long `miniupi start`/`restart` wait for a node to answer after supervisord started it.
SERVING_TIMEOUT_S = 30.0


def is_serving(node: NodeConfig, timeout: float = 1.0) -> bool:
    """True if `node` answers SERVING over mTLS (as the admin), under its own certificate."""
    with dial(node.cluster.certs_dir, "admin", node.identity, node.address, aio=False) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class SupervisionError(Exception):
    """Something about the supervised cluster went wrong; the message says what."""


class UnknownNode(SupervisionError, ValueError):
    """The cluster has no node of that name."""


class SupervisorUnavailable(SupervisionError):
    """No supervisord answers on the cluster's socket."""


class SupervisorShuttingDown(SupervisorUnavailable):
    """supervisord still holds the socket but is stopping the nodes and exiting."""


class ClusterRunning(SupervisionError):
    """`run` was asked for while a supervisord already serves this cluster."""


class NodeFailedToStart(SupervisionError):
    """A node could not start, so `run` stopped the cluster; the message has the node's own error line."""


class SupervisorFault(SupervisionError):
    """supervisord refused a request; `code` is one of supervisor.xmlrpc.Faults."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class NodeStatus:
    """One node as supervisord sees it."""

    name: str
    state: str  # supervisor's state name: RUNNING, STOPPED, STARTING, BACKOFF, FATAL, ...
    pid: int | None
    address: str
    description: str  # supervisor's own line, e.g. "pid 123, uptime 0:01:02" or "Not started"
    exit_status: int | None = None  # of the last exit, once EXITED

    @property
    def failed_to_start(self) -> bool:
        """Exited saying it cannot start, or FATAL: supervisord could not even spawn it."""
        return self.state == "FATAL" or (self.state == "EXITED" and self.exit_status in REFUSED_EXIT_CODES
                                         and self.name != POSTGRES)  # whose exit codes mean other things


# --- the config file ---------------------------------------------------------


def node_command(cluster: ClusterConfig, node: NodeConfig) -> list[str]:
    """The argv that runs one node; the node re-reads the same cluster file."""
    base = [sys.executable, "-m", "miniupi"]
    config = ["--config", str(cluster.path)]
    if node.role == "gateway":
        # A replica is told which one it is; the gateway of a [gateway] table is the only one.
        name = [] if node.name == GATEWAY else ["--name", node.name]
        return [*base, "gateway", *name, *config]
    return [*base, "bank", "--name", node.name, *config]


def console_command(cluster: ClusterConfig) -> list[str]:
    """The argv of the cluster's web console; it reads its [console] table from the same file."""
    return [sys.executable, "-m", "miniupi", "console", str(cluster.path)]


def managed_postgres(cluster: ClusterConfig) -> LocalPostgres | None:
    """The PostgreSQL server `miniupi run` runs for this cluster, if its file asks for one."""
    pg = cluster.postgres
    if pg is None or not pg.managed:
        return None
    return LocalPostgres(cluster.data_dir, pg.port, pg.bin_dir)


def program_names(cluster: ClusterConfig) -> list[str]:
    """Every program supervisord runs for the cluster: the managed PostgreSQL first, then the nodes, then the
    console."""
    managed = cluster.postgres is not None and cluster.postgres.managed
    return [*([POSTGRES] if managed else []), *(n.name for n in cluster.nodes),
            *([CONSOLE] if cluster.console is not None else [])]


def conf_path(cluster: ClusterConfig) -> Path:
    return cluster.data_dir / "supervisord.conf"


def socket_path(cluster: ClusterConfig) -> Path:
    """data_dir/supervisor.sock, or a short name in the temp dir if that is too long to bind."""
    path = cluster.data_dir / "supervisor.sock"
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    # Deterministic, so control commands find the socket run() chose.
    digest = hashlib.sha256(os.fsencode(cluster.data_dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"miniupi-{os.getuid()}-{digest}.sock"


def stderr_path(cluster: ClusterConfig, node: NodeConfig | str) -> Path:
    """Where supervisord keeps a program's stderr, for `run` to show it and quote its last line."""
    return cluster.data_dir / f"{node if isinstance(node, str) else node.name}.stderr"


def supervisord_argv(cluster: ClusterConfig) -> list[str]:
    """How to start supervisord for this cluster (run() and tests spawn it)."""
    return [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf_path(cluster))]


_INLINE_COMMENT = re.compile(r"(^|\s)[;#]")


def _ini(value: str | Path) -> str:
    """Make a value safe for supervisor's ini parser, or refuse it.

    Supervisor %-expands every value, and its parser treats ';' or '#' after
    whitespace as a comment even inside quotes; there is no escape for that.
    """
    text = str(value)
    if "\n" in text or "\r" in text or text != text.strip() or _INLINE_COMMENT.search(text):
        raise SupervisionError(
            f"cannot write {text!r} into supervisord.conf: it has a newline, surrounding spaces, "
            "or ';'/'#' after a space; use a simpler path"
        )
    return text.replace("%", "%%")


def write_supervisord_conf(cluster: ClusterConfig, postgres: LocalPostgres | None = None) -> Path:
    """Write data_dir/supervisord.conf for the cluster's topology and return its path.

    `postgres`, the managed server (initialised), is one more program, started first.
    """
    data_dir = cluster.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = socket_path(cluster)
    lines = [
        "; Written by `miniupi run`; rewritten on every run, so edit the cluster file instead.",
        "[supervisord]",
        "nodaemon = true",
        f"logfile = {_ini(data_dir / 'supervisord.log')}",
        f"pidfile = {_ini(data_dir / 'supervisord.pid')}",
        f"childlogdir = {_ini(data_dir)}",
        "loglevel = warn",
        "umask = 077",
        "",
        "[unix_http_server]",
        f"file = {_ini(sock)}",
        "chmod = 0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl = {_ini('unix://' + str(sock))}",
    ]
    lines += ["", f"[group:{GROUP}]", f"programs = {','.join(program_names(cluster))}"]
    if postgres is not None:
        lines += _postgres_program(cluster, postgres)
    for node in cluster.nodes:
        # Banks are spawned first and the gateways are signalled first.
        lines += _program(cluster, node.name, node_command(cluster, node), 200 if node.role == "gateway" else 100)
    if cluster.console is not None:
        lines += _program(cluster, CONSOLE, console_command(cluster), CONSOLE_PRIORITY)
    path = conf_path(cluster)
    write_file(path, ("\n".join(lines) + "\n").encode(), 0o600)
    return path


def _program(cluster: ClusterConfig, name: str, command: list[str], priority: int) -> list[str]:
    """A node's program, or the console's: restarted on every exit but a refusal to start."""
    return [
        "",
        f"[program:{name}]",
        f"command = {_ini(shlex.join(command))}",
        f"directory = {_ini(Path.cwd())}",
        f"priority = {priority}",
        "autostart = true",
        # Every exit but a refusal to start is restarted, however often: a node
        # killed under load must come back.
        "autorestart = unexpected",
        f"exitcodes = {','.join(map(str, REFUSED_EXIT_CODES))}",
        f"startsecs = {STARTSECS}",
        f"startretries = {START_RETRIES}",
        "stopsignal = TERM",
        "stopwaitsecs = 10",
        "stopasgroup = true",
        "killasgroup = true",
        "stdout_logfile = /dev/stdout",
        "stdout_logfile_maxbytes = 0",
        # A file `run` copies to its own stderr, so it also knows each node's last error line.
        # supervisord %-expands a program's log file names twice.
        f"stderr_logfile = {_ini(stderr_path(cluster, name)).replace('%', '%%')}",
        "stderr_logfile_maxbytes = 1MB",
        "stderr_logfile_backups = 0",
        'environment = PYTHONUNBUFFERED="1"',
    ]


def _postgres_program(cluster: ClusterConfig, postgres: LocalPostgres) -> list[str]:
    lines = [
        "",
        f"[program:{POSTGRES}]",
        f"command = {_ini(shlex.join(postgres.server_argv()))}",
        # Its own directory: as root it runs as the postgres user, who may not enter ours.
        f"directory = {_ini(postgres.data)}",
        f"priority = {POSTGRES_PRIORITY}",
        "autostart = true",
        "autorestart = true",
        f"startsecs = {POSTGRES_STARTSECS}",
        f"startretries = {POSTGRES_START_RETRIES}",
        "stopsignal = INT",
        "stopwaitsecs = 30",
        "stdout_logfile = /dev/stdout",
        "stdout_logfile_maxbytes = 0",
        f"stderr_logfile = {_ini(stderr_path(cluster, POSTGRES)).replace('%', '%%')}",
        "stderr_logfile_maxbytes = 1MB",
        "stderr_logfile_backups = 0",
    ]
    if postgres.run_as is not None:
        lines.append(f"user = {postgres.run_as.name}")  # PostgreSQL refuses to run as root
    return lines


# --- the control client ------------------------------------------------------


class _TimedConnection(UnixStreamHTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(RPC_TIMEOUT_S)  # a wedged supervisord must not hang the CLI


class _Transport(SupervisorTransport):
    def __init__(self, sock: Path) -> None:
        super().__init__(None, None, "unix://" + str(sock))

        def connect() -> http.client.HTTPConnection:
            conn = _TimedConnection("localhost")
            conn.socketfile = str(sock)
            return conn

        self._get_connection = connect


class Supervisor:
    """A client for the supervisord that `miniupi run` started for a cluster."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self.socket = socket_path(cluster)

    def _call(self, method: str, *args: Any) -> Any:
        # A fresh connection per call: supervisord may have restarted in between.
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=_Transport(self.socket))
        try:
            return getattr(proxy.supervisor, method)(*args)
        except (FileNotFoundError, ConnectionRefusedError):
            raise SupervisorUnavailable(
                f"cluster not running (no supervisor at {self.socket}); "
                f"start it with: miniupi run {self.cluster.path}"
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise SupervisorUnavailable(f"cannot talk to the supervisor at {self.socket}: {e}") from None
        except xmlrpc.client.Fault as e:
            if e.faultCode == Faults.SHUTDOWN_STATE:
                raise SupervisorShuttingDown(f"the supervisor at {self.socket} is shutting down") from None
            target = f" {args[0]}" if args else ""
            raise SupervisorFault(f"supervisor refused {method}{target}: {e.faultString}", e.faultCode) from None
        finally:
            proxy("close")()

    def _namespec(self, name: str) -> str:
        names = program_names(self.cluster)
        if name not in names:
            raise UnknownNode(f"no node named {name!r} (known nodes: {', '.join(names)})")
        return f"{GROUP}:{name}"

    def _control(self, method: str, name: str, harmless: int) -> None:
        try:
            self._call(method, self._namespec(name), True)
        except SupervisorFault as e:
            if e.code == harmless:
                return
            if e.code == Faults.BAD_NAME:
                raise self._unknown_to_supervisor(name) from None
            if e.code in (Faults.SPAWN_ERROR, Faults.ABNORMAL_TERMINATION):
                raise SupervisionError(
                    f"{name} did not stay up; its log is in the terminal running `miniupi run`"
                ) from None
            raise

    @staticmethod
    def _unknown_to_supervisor(name: str) -> UnknownNode:
        return UnknownNode(
            f"supervisor does not run node {name!r}: the cluster file changed since "
            "`miniupi run`; restart the cluster to pick it up"
        )

    def start(self, name: str) -> None:
        """Start a node and wait until it is RUNNING; a running node is left alone."""
        self._control("startProcess", name, Faults.ALREADY_STARTED)

    def stop(self, name: str) -> None:
        """Stop a node and wait until it has exited; a stopped node is left alone."""
        self._control("stopProcess", name, Faults.NOT_RUNNING)

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def control(self, action: str, name: str) -> None:
        """stop, start or restart `name`; a start or restart is done once the node answers, as whatever
        comes next (the next command, a console page) expects."""
        {"stop": self.stop, "start": self.start, "restart": self.restart}[action](name)
        if action != "stop":
            self.wait_serving(name)

    def wait_serving(self, name: str, timeout_s: float = SERVING_TIMEOUT_S) -> None:
        """Return once `name` answers its health check, so the next command finds it listening.

        RUNNING in supervisord's eyes means the process is up (startsecs is
        0), not that it serves yet: `miniupi start gateway; miniupi sync`
        would otherwise meet a gateway still opening its store.
        """
        if name == POSTGRES and self.cluster.postgres is not None:
            self._wait_listening(name, "127.0.0.1", self.cluster.postgres.port, timeout_s)
            return
        if name == CONSOLE and self.cluster.console is not None:
            self._wait_listening(name, self.cluster.console.host, self.cluster.console.port, timeout_s)
            return
        node = self.cluster.node(name)
        deadline = time.monotonic() + timeout_s
        while not is_serving(node, 0.5):
            if self.pid(name) is None:
                raise SupervisionError(f"{name} exited while starting; see {node.data_dir / (name + '.log')}")
            if time.monotonic() > deadline:
                raise SupervisionError(f"{name} is running but did not answer within {timeout_s:g} s; "
                                       f"see {node.data_dir / (name + '.log')}")
            time.sleep(0.05)

    def _wait_listening(self, name: str, host: str, port: int, timeout_s: float) -> None:
        """Until the program takes TCP connections: the managed PostgreSQL answers the nodes' logins once it
        does, the console its pages."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SupervisionError(f"{name} is running but did not take connections within {timeout_s:g} s; "
                                           f"see {stderr_path(self.cluster, name)}") from None
                time.sleep(0.05)

    def status(self) -> list[NodeStatus]:
        """Every node supervisord runs, in cluster-file order."""
        order = {name: i for i, name in enumerate(program_names(self.cluster))}
        addresses = {n.name: n.address for n in self.cluster.nodes}
        if self.cluster.postgres is not None:
            addresses[POSTGRES] = f"127.0.0.1:{self.cluster.postgres.port}"
        if self.cluster.console is not None:
            addresses[CONSOLE] = self.cluster.console.url
        infos = sorted(self._call("getAllProcessInfo"), key=lambda i: (order.get(i["name"], len(order)), i["name"]))
        return [
            NodeStatus(
                name=i["name"],
                state=i["statename"],
                pid=i["pid"] or None,
                address=addresses.get(i["name"], "?"),
                description=i["description"],
                exit_status=i.get("exitstatus"),
            )
            for i in infos
        ]

    def pid(self, name: str) -> int | None:
        try:
            info = self._call("getProcessInfo", self._namespec(name))
        except SupervisorFault as e:
            if e.code == Faults.BAD_NAME:
                raise self._unknown_to_supervisor(name) from None
            raise
        return info["pid"] or None

    def supervisord_pid(self) -> int:
        return int(self._call("getPID"))

    def is_running(self) -> bool:
        """Whether a supervisord holds the socket (one that is shutting down still does)."""
        try:
            self._call("getState")
        except SupervisorShuttingDown:
            return True
        except SupervisorUnavailable:
            return False
        return True

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop every node and supervisord itself, waiting (bounded) until it is gone."""
        self._call("shutdown")
        deadline = time.monotonic() + timeout_s
        while self.is_running():
            if time.monotonic() > deadline:
                raise SupervisionError(f"supervisor at {self.socket} still running after {timeout_s:.0f} s")
            time.sleep(0.1)


# --- run ---------------------------------------------------------------------


def _clear_stale_socket(cluster: ClusterConfig) -> None:
    sock = socket_path(cluster)
    if not os.path.lexists(sock):
        return
    sup = Supervisor(cluster)
    try:
        pid = sup.supervisord_pid()
    except SupervisorShuttingDown:
        raise ClusterRunning("cluster is still shutting down; try again in a few seconds") from None
    except SupervisorUnavailable:
        sock.unlink(missing_ok=True)  # left by a supervisord that was killed
        return
    raise ClusterRunning(f"cluster already running (pid {pid}); stop it with Ctrl-C in its terminal or kill {pid}")


def run(cluster: ClusterConfig) -> int:
    """Run supervisord with every node of the cluster until it stops; its exit code.

    Raises NodeFailedToStart, once every node is stopped, if one could not start.
    """
    _clear_stale_socket(cluster)
    postgres = managed_postgres(cluster)
    if postgres is not None:
        postgres.initialise()  # initdb on the first run only
    write_supervisord_conf(cluster, postgres)
    shown = [*([(POSTGRES, f"127.0.0.1:{postgres.port}")] if postgres else []), *((n.name, n.address) for n in cluster.nodes),
             *([(CONSOLE, f"{cluster.console.url}  (sign in: miniupi console --url)")] if cluster.console else [])]
    width = max(len(name) for name, _ in shown)
    for name, address in shown:
        print(f"{name:<{width}}  {address}")
    print(f"logs below; Ctrl-C stops everything (data in {cluster.data_dir})", flush=True)
    tails = _StderrTails(cluster)
    # supervisord applies its own umask only when it daemonizes: set it here, for its log and pid files.
    os.umask(0o077)
    proc = _spawn(supervisord_argv(cluster))
    # Ctrl-C reaches supervisord from the terminal too; SIGTERM from a script reaches only us.
    forwarded = {sig: signal.signal(sig, lambda signum, frame: proc.send_signal(signum)) for sig in FORWARDED}
    try:
        failed = _watch(Supervisor(cluster), proc, tails)
    finally:
        if proc.poll() is None:  # we are failing ourselves: still leave no node behind
            proc.terminate()
            proc.wait()
        for sig, handler in forwarded.items():
            signal.signal(sig, handler)
    tails.pump()
    if failed is None:
        return proc.returncode
    line = tails.last_line.get(failed.name, "").removeprefix("miniupi: ") or failed.description
    raise NodeFailedToStart(f"{failed.name} failed to start: {line}")


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def _watch(sup: Supervisor, proc: subprocess.Popen[bytes], tails: _StderrTails) -> NodeStatus | None:
    """Until supervisord exits: copy node stderr, and stop everything if a node cannot start."""
    while True:
        try:
            proc.wait(timeout=WATCH_EVERY_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        tails.pump()
        try:
            failed = next((s for s in sup.status() if s.failed_to_start), None)
        except SupervisorUnavailable:  # not listening yet, or already stopping
            continue
        if failed is not None:
            try:
                sup.shutdown()
            except SupervisorUnavailable:
                pass  # it was stopping anyway
            proc.wait()
            return failed


class _StderrTails:
    """Copies what each node writes to stderr onto ours, remembering each node's last line."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.paths = {name: stderr_path(cluster, name) for name in program_names(cluster)}
        for path in self.paths.values():
            path.unlink(missing_ok=True)  # a line from an earlier run is not this run's error
        self.offsets = dict.fromkeys(self.paths, 0)
        self.partial = dict.fromkeys(self.paths, b"")
        self.last_line: dict[str, str] = {}

    def pump(self) -> None:
        for name, path in self.paths.items():
            try:
                with open(path, "rb") as f:
                    if os.fstat(f.fileno()).st_size < self.offsets[name]:
                        self.offsets[name] = 0  # supervisord truncated it at its size limit
                    f.seek(self.offsets[name])
                    data = f.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self.offsets[name] += len(data)
            sys.stderr.buffer.write(data)
            sys.stderr.flush()
            *lines, self.partial[name] = (self.partial[name] + data).split(b"\n")
            for line in reversed(lines):
                if line.strip():
                    self.last_line[name] = line.decode(errors="replace").strip()
                    break
