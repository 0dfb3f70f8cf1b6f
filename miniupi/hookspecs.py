"""Every hook a miniupi plugin can implement: the whole extension surface.

Default behaviour (storage, auth, call logging) is supplied by plugins in
miniupi/plugins, registered through the `miniupi` entry point group exactly
like a third-party plugin. Set MINIUPI_TRACE_PLUGINS=1 to print every call.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import grpc

    from miniupi.auth import Authenticator
    from miniupi.config import NodeConfig
    from miniupi.storage import Store

hookspec = pluggy.HookspecMarker("miniupi")
hookimpl = pluggy.HookimplMarker("miniupi")


@hookspec(firstresult=True)
def miniupi_make_storage(node: NodeConfig, path: Path) -> Store | None:
    """Open the durable store for `node` in directory `path`.

    Return a Store when `node.storage` is the name your plugin provides,
    else None; the first non-None answer wins.
    """


@hookspec(firstresult=True)
def miniupi_make_authenticator(node: NodeConfig) -> Authenticator | None:
    """The gateway's session issuer and checker when `node.auth` names your plugin."""


@hookspec
def miniupi_server_interceptors(node: NodeConfig) -> list[grpc.aio.ServerInterceptor]:
    """Server interceptors to install on `node`; each plugin adds a list.

    Auth plugins check `node.auth` and add theirs only when it names them.
    """


@hookspec
def miniupi_node_started(node: NodeConfig, address: str) -> None:
    """The node serves on `address`."""


@hookspec
def miniupi_before_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    """A bank has decided its vote and is about to make it durable.

    Raise or exit to inject a fault before the vote is recorded.
    """


@hookspec
def miniupi_after_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    """A bank's vote is durable and about to be sent."""


@hookspec
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    """The gateway has made `decision` (COMMITTED or ABORTED) durable, before phase 2."""


@hookspec
def miniupi_before_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    """A bank is about to apply `decision` to a transaction it prepared."""
