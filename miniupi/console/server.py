"""`miniupi console`: listen where the cluster file says (loopback unless told), and serve the app.

The socket is bound here, before uvicorn starts, so that a port taken is
one line and exit 3 (as a node that cannot start: `miniupi run` then stops
with that line) rather than uvicorn's own report.
"""
from __future__ import annotations

import socket
from dataclasses import replace

import uvicorn

from miniupi.config import CONSOLE_PORT, ClusterConfig, ConfigError, ConsoleConfig, console_bind_problem
from miniupi.console.access import Access, key_path, load_key, loopback_names
from miniupi.nodes.server import NodeStartError

SHUTDOWN_GRACE_S = 2.0  # open feeds are cut after this long when the console stops


def console_settings(cluster: ClusterConfig, host: str | None = None, port: int | None = None,
                     public: bool = False) -> ConsoleConfig:
    """The cluster file's [console] (or the defaults), with what the command line overrides."""
    base = cluster.console or ConsoleConfig(host="127.0.0.1", port=CONSOLE_PORT, public=False)
    settings = replace(base, host=host or base.host, port=port or base.port, public=public or base.public)
    problem = console_bind_problem(settings.host, settings.public)
    if problem:
        raise ConfigError(f"console host: expected {problem.replace('set public = true', 'give --public')}"
                          if host else f"{cluster.path}: key 'console.host': expected {problem}")
    return settings


def sign_in_url(cluster: ClusterConfig, settings: ConsoleConfig) -> str:
    """The URL that signs a browser in: only whoever may read the key file can make it."""
    return f"{settings.url}?token={load_key(cluster)}"


def serve(cluster: ClusterConfig, settings: ConsoleConfig) -> None:
    """Serve the console until SIGTERM or Ctrl-C."""
    from miniupi.console.app import create_app

    access = Access(load_key(cluster), None if settings.public else loopback_names(settings.host))
    sock = _bind(settings)
    config = uvicorn.Config(create_app(cluster, access), loop="asyncio", log_level="warning", access_log=False,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    print(f"console of {cluster.name} at {settings.url} (sign in with the URL `miniupi console --url` prints; "
          f"its key is in {key_path(cluster)})", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def _bind(settings: ConsoleConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as e:
        sock.close()
        raise NodeStartError(f"console cannot listen on {settings.host}:{settings.port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
