"""The one plugin manager: entry points first, then the cluster file's modules.

Our own storage, auth and logging plugins arrive through the `miniupi`
entry point group like anyone else's; nothing here names them.
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

PROJECT = "miniupi"


def plugin_manager(*plugins: object) -> pluggy.PluginManager:
    """A manager that knows every hook spec and holds only `plugins` (a test's, say)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    return pm


def make_plugin_manager(extra_modules: Iterable[str] = ()) -> pluggy.PluginManager:
    """Every installed plugin plus `extra_modules` (the cluster file's [plugins] load)."""
    pm = plugin_manager()
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


def fire_after(hook: Callable[..., None], **details: Any) -> None:
    """A hook after a step that is already durable: the step stands whatever the plugin does.

    So a failing plugin is logged, not raised: raised, it would make the
    caller take a done step for a failed one (resend it, or stop there).
    """
    try:
        hook(**details)
    except Exception:
        caller = getattr(hook, "func", hook)
        logger.exception("hook {} failed: {}", getattr(caller, "name", caller), details)
