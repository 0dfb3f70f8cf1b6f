"""The one plugin manager: our default plugins, entry points, then the cluster file's modules.

Our own storage, auth and logging plugins are registered exactly as a
third-party plugin is, by module and name, the way datasette lists its
defaults. They are also declared in the `miniupi` entry point group, which
pluggy then skips for names already registered: listing them here is what
lets a source checkout that was never pip-installed run a cluster.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import pluggy
from loguru import logger

from miniupi.contract import hookspecs
from miniupi.config import NodeConfig
from miniupi.errors import Aborted, MiniupiError

PROJECT = "miniupi"
# Entry-point name -> module, as in pyproject.toml's [project.entry-points.miniupi] (a test keeps them equal).
DEFAULT_PLUGINS = {
    "storage_sqlite": "miniupi.plugins.storage_sqlite",
    "storage_json": "miniupi.plugins.storage_json",
    "storage_postgres": "miniupi.plugins.storage_postgres",
    "auth_session": "miniupi.plugins.auth_session",
    "call_log": "miniupi.plugins.call_log",
    "metrics": "miniupi.plugins.metrics",
}


def plugin_manager(*plugins: object) -> pluggy.PluginManager:
    """A manager that knows every hook spec and holds only `plugins` (a test's, say)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    return pm


def make_plugin_manager(extra_modules: Iterable[str] = ()) -> pluggy.PluginManager:
    """The default plugins, every installed one, and `extra_modules` (the cluster file's [plugins] load)."""
    pm = plugin_manager()
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


def _unimplemented(**details: Any) -> None:
    """What a hook that no plugin implements does."""


class NodeHooks:
    """`pm.hook` for one node: `hooks.miniupi_after_vote(txn_id=..., yes=...)` calls every plugin's
    implementation with `node=` this node.

    2PC fires several hooks per payment, so a hook is looked up once, on its
    first call, and kept as a plain attribute; one that no plugin implements
    becomes a function that does nothing. Plugins are all registered before a
    node serves. A name the hook specs lack is an AttributeError.
    """

    def __init__(self, pm: pluggy.PluginManager, node: NodeConfig | None) -> None:
        self._relay, self._node = pm.hook, node

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith(f"{PROJECT}_"):
            raise AttributeError(name)
        caller: pluggy.HookCaller = getattr(self._relay, name)
        hook = functools.partial(caller, node=self._node) if caller.get_hookimpls() else _unimplemented
        setattr(self, name, hook)  # found in the instance from now on: __getattr__ runs once per hook
        return hook


NO_HOOKS = NodeHooks(plugin_manager(), None)


class PluginError(Exception):
    """A plugin named in the cluster file could not be loaded or found."""


def _hook_name(hook: Callable[..., None]) -> str:
    """miniupi_before_prepare, for a NodeHooks attribute (a partial over pluggy's HookCaller)."""
    caller = getattr(hook, "func", hook)
    return str(getattr(caller, "name", getattr(caller, "__name__", caller)))


def fire_before(hook: Callable[..., None], **details: Any) -> Aborted | None:
    """A hook before a step of a payment, which may veto it: the refusal to decide the payment with, or None.

    A plugin that raises here stops the step cleanly: the payment is
    decided ABORTED like any refused one, never left half done. The
    plugin's own words reach the caller only when it raised a MiniupiError.
    """
    try:
        hook(**details)
    except Exception as e:
        name = _hook_name(hook)
        logger.opt(exception=e).warning("hook {} vetoed the step: {}", name, details)
        why = f": {e.message}" if isinstance(e, MiniupiError) else ""
        return Aborted(f"payment aborted by a plugin at {name.removeprefix('miniupi_').replace('_', ' ')}{why}")
    return None


def fire_after(hook: Callable[..., None], **details: Any) -> None:
    """A hook after a step that is already durable: the step stands whatever the plugin does.

    So a failing plugin is logged, not raised: raised, it would make the
    caller take a done step for a failed one (resend it, or stop there).
    """
    try:
        hook(**details)
    except Exception:
        logger.exception("hook {} failed: {}", _hook_name(hook), details)
