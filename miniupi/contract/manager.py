"""The one plugin manager: entry points first, then the cluster file's modules.

Our own storage, auth and logging plugins arrive through the `miniupi`
entry point group like anyone else's; nothing here names them.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any, Protocol

import pluggy
from loguru import logger

from miniupi.contract import hookspecs
from miniupi.config import NodeConfig
from miniupi.errors import Aborted, MiniupiError

PROJECT = "miniupi"


def make_plugin_manager(extra_modules: Iterable[str] = ()) -> pluggy.PluginManager:
    """Every installed plugin plus `extra_modules` (the cluster file's [plugins] load)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(PROJECT)
    for name in extra_modules:
        if pm.has_plugin(name):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise PluginError(f"cannot load plugin module {name!r}: {e}") from None
        pm.register(module, name)
    pm.check_pending()
    if os.environ.get("MINIUPI_TRACE_PLUGINS") == "1":
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


class Fire(Protocol):
    """Announces a step of 2PC by its hook name without the miniupi_ prefix."""

    def __call__(self, point: str, **details: Any) -> None: ...


def hook_firer(pm: pluggy.PluginManager, node: NodeConfig) -> Fire:
    """fire("after_vote", txn_id=...) calls hook miniupi_after_vote(node=node, txn_id=...).

    A step no plugin implements costs a dict lookup: these fire several
    times per payment. Plugins are all registered before a node serves.
    """
    wanted: dict[str, Any] = {}

    def fire(point: str, **details: Any) -> None:
        if point not in wanted:
            caller = getattr(pm.hook, f"miniupi_{point}")
            wanted[point] = caller if caller.get_hookimpls() else None
        caller = wanted[point]
        if caller is not None:
            caller(node=node, **details)

    return fire


class PluginError(Exception):
    """A plugin named in the cluster file could not be loaded or found."""


def fire_before(fire: Fire, point: str, **details: Any) -> Aborted | None:
    """A hook before a step of a payment, which may veto it: the refusal to decide the payment with, or None.

    A plugin that raises here stops the step cleanly: the payment is
    decided ABORTED like any refused one, never left half done. The
    plugin's own words reach the caller only when it raised a MiniupiError.
    """
    try:
        fire(point, **details)
    except Exception as e:
        logger.opt(exception=e).warning("hook {} vetoed the step: {}", point, details)
        why = f": {e.message}" if isinstance(e, MiniupiError) else ""
        return Aborted(f"payment aborted by a plugin at {point.replace('_', ' ')}{why}")
    return None


def fire_after(fire: Fire, point: str, **details: Any) -> None:
    """A hook after a step that is already durable: the step stands whatever the plugin does.

    So a failing plugin is logged, not raised: raised, it would make the
    caller take a done step for a failed one (resend it, or stop there).
    """
    try:
        fire(point, **details)
    except Exception:
        logger.exception("hook {} failed: {}", point, details)
