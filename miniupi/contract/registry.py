"""The storage and auth kinds that plugins provide, by name, checked before anything starts.

Each plugin adds its kinds in `miniupi_register_kinds(register)`; the
cluster file names a kind per node and the core looks it up here, never a
plugin comparing names itself. So a typo in a name or in a plugin's own
setting is one line naming it and what exists, at config load, before
supervisord, a node or a data directory exists (the shape of tox 4's
`tox_register_tox_env`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from miniupi.config import ClusterConfig, ConfigError, NodeConfig
from miniupi.contract.manager import PluginError, make_plugin_manager

if TYPE_CHECKING:
    import grpc

    from miniupi.contract.auth import Authenticator
    from miniupi.contract.store import Store


class PluginChoiceError(ConfigError):
    """The cluster file names a kind or a plugin setting that no plugin provides (exit 2, as any ConfigError)."""


@dataclass(frozen=True)
class Setting:
    """A key a kind reads from its node's sub-table, e.g. `[banks.bank_b.json] compact_after`."""

    name: str
    default: Any
    expected: str  # what a good value is, for the error message: "a whole number, at least 1"
    valid: Callable[[Any], bool]


@dataclass(frozen=True)
class StorageKind:
    """`open(node, path, settings)` returns the node's Store in directory `path`, creating it.

    `check(node, settings)`, if given, says what is wrong with the settings taken
    together (None: nothing), once each one is valid on its own.
    """

    name: str
    open: Callable[[NodeConfig, Path, Mapping[str, Any]], Store]
    settings: Sequence[Setting] = ()
    check: Callable[[NodeConfig, Mapping[str, Any]], str | None] | None = None
    # One store that several processes may open at once with the same settings (a database server):
    # what several gateways of one cluster must run on, as they share one truth.
    shared: bool = False


@dataclass(frozen=True)
class Auth:
    """What an auth kind gives one node: the gateway's session issuer, and server interceptors."""

    authenticator: Authenticator | None = None  # required at the gateway, unused at a bank
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()


@dataclass(frozen=True)
class AuthKind:
    """`make(node, settings)` returns the node's Auth. A bank's caller check is core, not an auth kind's."""

    name: str
    make: Callable[[NodeConfig, Mapping[str, Any]], Auth]
    settings: Sequence[Setting] = ()


class Register:
    """What `miniupi_register_kinds` receives; a name taken twice is a plugin error."""

    def __init__(self) -> None:
        self.storage: dict[str, StorageKind] = {}
        self.auth: dict[str, AuthKind] = {}

    def add_storage(self, kind: StorageKind) -> None:
        _add(self.storage, "storage", kind)

    def add_auth(self, kind: AuthKind) -> None:
        _add(self.auth, "auth", kind)


def _add(kinds: dict[str, Any], what: str, kind: StorageKind | AuthKind) -> None:
    if kind.name in kinds:
        raise PluginError(f"two plugins register the {what} kind {kind.name!r}")
    kinds[kind.name] = kind


def setting_at_least(name: str, default: float, minimum: float, whole: bool = False) -> Setting:
    """A number setting with a floor; booleans and NaN are refused."""
    expected = f"a whole number, at least {minimum}" if whole else f"a number, at least {minimum}"

    def valid(value: Any) -> bool:
        kinds = (int,) if whole else (int, float)
        return (isinstance(value, kinds) and not isinstance(value, bool)
                and not math.isnan(value) and value >= minimum)

    return Setting(name, default, expected, valid)


@dataclass(frozen=True)
class Plugins:
    """The plugin manager and what every node of the cluster file chose, already checked."""

    pm: pluggy.PluginManager
    kinds: Register
    settings: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)  # (node, kind) -> values

    def open_store(self, node: NodeConfig) -> Store:
        kind = self.kinds.storage[node.storage]
        return kind.open(node, node.data_dir, self.settings[node.name, kind.name])

    def auth(self, node: NodeConfig) -> Auth:
        kind = self.kinds.auth[node.auth]
        return kind.make(node, self.settings[node.name, kind.name])


def collect_kinds(pm: pluggy.PluginManager) -> Register:
    register = Register()
    pm.hook.miniupi_register_kinds(register=register)
    return register


def check_plugins(cluster: ClusterConfig) -> Plugins:
    """Load every plugin and check each node's storage, auth and their settings against them.

    `miniupi run`, `miniupi bank` and `miniupi gateway` call this right
    after loading the cluster file, so a bad name stops them before they
    start or create anything.
    """
    pm = make_plugin_manager(cluster.plugins)
    kinds = collect_kinds(pm)
    settings: dict[tuple[str, str], Mapping[str, Any]] = {}
    for node in cluster.nodes:
        chosen: list[StorageKind | AuthKind] = [
            _lookup(cluster, node, "storage", node.storage, kinds.storage),
            _lookup(cluster, node, "auth", node.auth, kinds.auth)]
        for kind in chosen:
            settings[node.name, kind.name] = _settings(cluster, node, kind, chosen)
        storage = kinds.storage[node.storage]
        problem = storage.check(node, settings[node.name, storage.name]) if storage.check else None
        if problem:
            raise PluginChoiceError(f"{cluster.path}: {node.where}.{storage.name}: {problem}")
    _check_one_store(cluster, kinds.storage, settings)
    return Plugins(pm, kinds, settings)


def _check_one_store(cluster: ClusterConfig, kinds: Mapping[str, StorageKind],
                     settings: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
    """Several gateways must open one store: with a store each, one id could be paid at two of them."""
    gateways = list(cluster.gateways.values())
    if len(gateways) < 2:
        return
    first = gateways[0]
    shared = sorted(name for name, kind in kinds.items() if kind.shared)
    for node in gateways:
        if not kinds[node.storage].shared:
            raise PluginChoiceError(
                f"{cluster.path}: {node.where}.storage: several gateways must share one store, and {node.storage!r} "
                f"is a store of one process; use one that several can open ({', '.join(shared) or 'none loaded'})")
        if node.storage != first.storage or settings[node.name, node.storage] != settings[first.name, first.storage]:
            raise PluginChoiceError(
                f"{cluster.path}: {node.where}: several gateways must share one store, so the same storage "
                f"and storage settings as {first.where}")


def _lookup(cluster: ClusterConfig, node: NodeConfig, key: str, name: str, kinds: Mapping[str, Any]) -> Any:
    if name not in kinds:
        have = ", ".join(sorted(kinds)) or "none"
        raise PluginChoiceError(f"{cluster.path}: {node.where}.{key}: no {key} plugin named {name!r} (have: {have})")
    return kinds[name]


def _settings(cluster: ClusterConfig, node: NodeConfig, kind: StorageKind | AuthKind,
              chosen: Sequence[StorageKind | AuthKind]) -> dict[str, Any]:
    """`kind`'s settings from the node's sub-table named after it, defaults filled in."""
    given = node.plugin_settings.get(kind.name, {})
    # A storage and an auth kind of the same name share their sub-table.
    known = {s.name for k in chosen if k.name == kind.name for s in k.settings}
    for key in given:
        if key not in known:
            has = f"it has: {', '.join(sorted(known))}" if known else "it has none"
            raise PluginChoiceError(f"{cluster.path}: {node.where}.{kind.name}.{key}: "
                                    f"no setting {key!r} for the {kind.name} plugin ({has})")
    values = {}
    for setting in kind.settings:
        value = given.get(setting.name, setting.default)
        if setting.name in given and not setting.valid(value):
            raise PluginChoiceError(f"{cluster.path}: {node.where}.{kind.name}.{setting.name}: "
                                    f"expected {setting.expected}")
        values[setting.name] = value
    return values
