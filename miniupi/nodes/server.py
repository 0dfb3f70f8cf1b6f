"""What every node does the same way: mTLS, interceptors, health, reflection, shutdown."""
from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Collection, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loguru import logger

from miniupi.config import NodeConfig
from miniupi.nodes.garbage import quiet_garbage_collector
from miniupi.nodes.logs import flush_logs_periodically
from miniupi.nodes.callers import core_interceptors
from miniupi.nodes.error_door import ErrorDoor
from miniupi.contract.registry import Auth, Plugins
from miniupi.contract.store import Store, StoreDamaged
from miniupi.contract.manager import NodeHooks, fire_after
from miniupi.nodes.group_commit import GroupCommit, Observer
from miniupi.tls import server_credentials

MAX_MESSAGE_BYTES = 1 << 20
HANDSHAKE_TIMEOUT_S = 5
SHUTDOWN_GRACE_S = 2.0
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", 16 * MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    # The gateway's round streams stay open while a bank is idle, and its keepalive pings them
    # every 30 s (bank_links.CHANNEL_OPTIONS). gRPC's default allows one ping per 5 minutes
    # without data and answers the third with GOAWAY "too_many_pings", cutting the stream.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # A connection that has not finished its TLS handshake by then is closed (gRPC's default is 120 s),
    # so idle or half-open sockets cannot pile up and starve the node of file descriptors.
    ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_S * 1000),
]


class NodeStartError(Exception):
    """The node cannot start; the message says why in one line."""

    # The node refused to start: `miniupi run` does not restart it but stops, showing why.
    exit_code = 3


_served = False  # one node per process


def has_served() -> bool:
    """Whether this process's node got as far as serving: a failure after that is a crash, not a refusal."""
    return _served


async def open_store(plugins: Plugins, node: NodeConfig,
                     live: Collection[str] | None = None) -> tuple[GroupCommit, dict]:
    """Open the storage kind the cluster file names for `node` (checked at load) and load its
    `live` tables (None: every table); the rest is read on demand through `commit.store`."""
    store: Store | None = None
    try:
        store = plugins.open_store(node)
        tables = await asyncio.to_thread(store.load, live)
    except StoreDamaged as e:  # opening checks the files too, not only load()
        if store is not None:
            store.close()
        raise NodeStartError(f"{node.name}: refusing to start: {e}") from None
    return GroupCommit(store, observe=_store_writes(NodeHooks(plugins.pm, node))), tables


def _store_writes(hooks: NodeHooks) -> Observer:
    """The group commit's observer: miniupi_after_store_write, which never raises into the write."""
    def observe(seconds: float, items: int) -> None:
        fire_after(hooks.miniupi_after_store_write, seconds=seconds, items=items)
    return observe


def node_interceptors(node: NodeConfig, plugins: Plugins, auth: Auth) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: the error door (so whatever any of the others raises becomes a status),
    every plugin's (the call log, so refused calls are logged too), the auth kind's, then the
    core caller check, whatever the auth kind.

    The core check wraps the servicer's handler itself, so no call reaches a
    servicer without passing it.
    """
    hooked = [i for group in plugins.pm.hook.miniupi_server_interceptors(node=node) for i in group]
    return [ErrorDoor(node.name), *hooked, *auth.interceptors, *core_interceptors(node)]


async def serve(
    node: NodeConfig,
    plugins: Plugins,
    auth: Auth,
    add_services: Callable[[grpc.aio.Server], Iterable[str]],
    on_stop: Callable[[], Awaitable[None]],
    on_stopping: Callable[[], None] = lambda: None,
    readings: dict[str, Callable[[], int]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain calls and run `on_stop`.

    `on_stopping` runs once the server refuses new calls and calls in
    progress have their grace: the moment to end calls that would
    otherwise sit out the whole grace, such as a stream between rounds.
    `readings` are the node's live counts, for miniupi_node_loaded.
    """
    try:  # a plugin that cannot do its part (a metrics port in use) stops the node before it serves
        plugins.pm.hook.miniupi_node_loaded(node=node, readings=dict(readings or {}))
    except Exception as e:
        raise NodeStartError(f"{node.name}: {e}") from None
    server = grpc.aio.server(interceptors=node_interceptors(node, plugins, auth), options=SERVER_OPTIONS)
    names = list(add_services(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names += [health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    try:
        port = server.add_secure_port(node.address, server_credentials(node.cluster.certs_dir, node.identity))
    except RuntimeError as e:
        raise NodeStartError(f"{node.name}: cannot listen on {node.address}: {e}") from None
    address = f"{node.host}:{port}"
    quiet_garbage_collector()
    await server.start()
    global _served
    _served = True
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("{} serving on {} (pid {}, storage {}, auth {})", node.name, address, os.getpid(),
                node.storage, node.auth)
    plugins.pm.hook.miniupi_node_started(node=node, address=address)

    flusher = asyncio.create_task(flush_logs_periodically())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    logger.info("{} stopping", node.name)
    await health_servicer.enter_graceful_shutdown()
    stopped = asyncio.ensure_future(server.stop(grace=SHUTDOWN_GRACE_S))
    await asyncio.sleep(0)  # the stop's first step refuses new calls
    on_stopping()
    await stopped
    await on_stop()
    fire_after(NodeHooks(plugins.pm, node).miniupi_node_stopped)
    flusher.cancel()
    await asyncio.gather(flusher, return_exceptions=True)
    await logger.complete()
