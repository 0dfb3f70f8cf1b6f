"""The one plugin manager: our default plugins, entry points, then the cluster file's modules.

Our own storage, auth and logging plugins are registered exactly as a
third-party plugin is, by module and name, the way datasette lists its
defaults. They are also declared in the `miniupi` entry point group, which
pluggy then skips for names already registered: listing them here is what
lets a source checkout that was never pip-installed run a cluster.
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

PROJECT = "miniupi"
# Entry-point name -> module, as in pyproject.toml's [project.entry-points.miniupi] (a test keeps them equal).
DEFAULT_PLUGINS = {
    "storage_sqlite": "miniupi.plugins.storage_sqlite",
    "storage_json": "miniupi.plugins.storage_json",
    "auth_session": "miniupi.plugins.auth_session",
    "call_log": "miniupi.plugins.call_log",
}


def make_plugin_manager(extra_modules: Iterable[str] = ()) -> pluggy.PluginManager:
    """The default plugins, every installed one, and `extra_modules` (the cluster file's [plugins] load)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, module_name in DEFAULT_PLUGINS.items():
        _register_module(pm, module_name, name)
    pm.load_setuptools_entrypoints(PROJECT)
    for name in extra_modules:
        _register_module(pm, name, name)
    pm.check_pending()
    if os.environ.get("MINIUPI_TRACE_PLUGINS") == "1":
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def _register_module(pm: pluggy.PluginManager, module_name: str, name: str) -> None:
    """Import `module_name` and register it as plugin `name`, once however often it is named."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginError(f"cannot load plugin module {module_name!r}: {e}") from None
    if not pm.has_plugin(name) and not pm.is_registered(module):
        pm.register(module, name)


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


def fire_after(fire: Fire, point: str, **details: Any) -> None:
    """A hook after a step that is already durable: the step stands whatever the plugin does.

    So a failing plugin is logged, not raised: raised, it would make the
    caller take a done step for a failed one (resend it, or stop there).
    """
    try:
        fire(point, **details)
    except Exception:
        logger.exception("hook {} failed: {}", point, details)
