"""The cluster file: one TOML file that names every node and its plugins.

Loaded into frozen dataclasses and checked once, so that a typo fails at
start-up with the file, the key and what was expected, not minutes later
inside a payment. Relative paths are taken from the working directory, as
in `data_dir = "var/data"` run from the project root.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from miniupi.money import BadAmount, parse_amount

DEFAULT_CONFIG = "config/cluster.toml"
# \Z, not $: "$" would also accept a name ending in a newline.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
# The certificate identity every gateway holds, and the name of the one gateway of a [gateway] table.
GATEWAY = "gateway"
# Certificate identities other than the banks': no bank or gateway, and no user, may take one of these names.
RESERVED_NAMES = frozenset({GATEWAY, "client", "admin", "treasury", "ca"})
# Settings every gateway must share: a session key one gateway hands out lives as long at every other.
SESSION_DEFAULTS = {"session_idle_s": 15 * 60, "session_max_s": 24 * 3600}
SESSION_KEYS = tuple(SESSION_DEFAULTS)
NODE_NAME_RULE = "lower-case letters, digits and _ (not gateway, client, admin, treasury, ca or localhost)"
# Every node certificate names this host, so a bank of that name would be passed by any node's leaf.
LOCALHOST = "localhost"
# Far below 2**63 - 1 minor units, so no sum of balances and credits in flight can overflow an int64.
DEFAULT_MAX_BALANCE = 10**15


class ConfigError(Exception):
    """The cluster file is missing, unreadable or wrong; the message says where."""

    exit_code = 2  # like a usage error: what was asked for cannot be started as written


@dataclass(frozen=True)
class NodeConfig:
    """One node (a gateway or a bank) as the cluster file describes it."""

    name: str  # "gateway" for the one gateway of a [gateway] table; a replica's own name under [gateways]
    role: str  # "gateway" or "bank"
    host: str
    port: int
    storage: str
    auth: str
    cluster: ClusterConfig = field(repr=False, compare=False)
    accounts: Path | None = None
    # Where the node serves its Prometheus metrics (on `host`, path /metrics); None: it serves none.
    metrics_port: int | None = None
    # Sub-tables named after the node's storage or auth kind, such as [banks.bank_b.json]:
    # that plugin's own settings, checked against what it declares by miniupi.contract.registry.
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def identity(self) -> str:
        """The name of the certificate it serves and dials with: every gateway is `gateway`, so banks
        accept any of them and clients reach any of them by the one name they pin."""
        return GATEWAY if self.role == GATEWAY else self.name

    @property
    def where(self) -> str:
        """The node's table in the cluster file, for messages: "gateway", "gateways.gw1" or "banks.bank_a"."""
        if self.role != GATEWAY:
            return f"banks.{self.name}"
        return GATEWAY if self.name == GATEWAY else f"gateways.{self.name}"

    @property
    def data_dir(self) -> Path:
        return self.cluster.data_dir / self.name


@dataclass(frozen=True)
class PostgresConfig:
    """The cluster file's [postgres] table: a PostgreSQL server that `miniupi run` runs for the cluster."""

    managed: bool  # run it under supervisord; nodes with `managed = true` in their postgres settings use it
    port: int  # on 127.0.0.1 only
    bin_dir: Path | None  # where `postgres` and `initdb` are; None: found on the machine


# The web console's port when the cluster file gives none (or has no [console] table at all).
CONSOLE_PORT = 8700
# The console's supervised program, a name no node may take when the file has a [console] table.
CONSOLE = "console"


@dataclass(frozen=True)
class ConsoleConfig:
    """The cluster file's [console] table: the web console `miniupi run` runs beside the nodes."""

    host: str  # loopback unless public
    port: int
    public: bool  # the operator's explicit consent to listen beyond loopback

    @property
    def url(self) -> str:
        """Where its page is (with no key: `miniupi console --url` gives the one that signs in)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def console_bind_problem(host: str, public: bool) -> str | None:
    """Why the console may not listen on `host`, or None: it controls the cluster, so only loopback
    unless the operator said public."""
    if public or host == LOCALHOST:
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"a loopback address (127.0.0.1, ::1 or localhost), not {host!r}: the console controls the cluster; "
            "set public = true to listen beyond this machine")


@dataclass(frozen=True)
class ClusterConfig:
    path: Path
    name: str
    data_dir: Path
    certs_dir: Path
    currency: str
    prepare_timeout_s: float
    call_timeout_s: float
    session_idle_s: float
    session_max_s: float
    login_attempts: int
    login_lockout_s: float
    max_opening_deposit: int  # minor units a customer may bring to Register; 0: accounts open at zero
    max_balance: int  # no account may hold more, counting credits still in flight
    log_json: bool
    # What one payer may send per calendar day in time_zone, in minor units; 0: no limit.
    daily_limit: int
    time_zone: str  # an IANA name such as "Asia/Kolkata"; the day of daily_limit and of settlement dates
    # Where several gateways share a store: how long one may go unheard before another takes its
    # unfinished payments over (miniupi/nodes/replicas.py).
    gateway_lease_s: float
    plugins: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)
    # Per-account exceptions to daily_limit, from the [daily_limits] table: "user@bank" -> minor units.
    daily_limits: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    # What the file says of each node, the gateways first. The NodeConfigs point back at this cluster,
    # so they are made from it once, on first use: a cached_property writes no frozen field.
    node_fields: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)
    postgres: PostgresConfig | None = None  # the [postgres] table, if there is one
    console: ConsoleConfig | None = None  # the [console] table, if there is one

    @cached_property
    def _nodes(self) -> tuple[NodeConfig, ...]:
        return tuple(NodeConfig(**fields, cluster=self) for fields in self.node_fields)

    @property
    def nodes(self) -> list[NodeConfig]:
        return list(self._nodes)

    @cached_property
    def gateways(self) -> dict[str, NodeConfig]:
        """Every gateway, in file order: the one "gateway" of a [gateway] table, or each [gateways.NAME]."""
        return {node.name: node for node in self._nodes if node.role == GATEWAY}

    @cached_property
    def gateway(self) -> NodeConfig:
        """The first gateway: the one, in a cluster with a [gateway] table."""
        return self._nodes[0]

    def gateway_named(self, name: str | None) -> NodeConfig:
        """The gateway of that name; None: the only one (a cluster of several must be told which)."""
        if name is None:
            if len(self.gateways) > 1:
                raise ConfigError(f"{self.path}: this cluster has gateways {', '.join(self.gateways)}; "
                                  "name one with --name")
            return self.gateway
        if name not in self.gateways:
            raise ConfigError(f"{self.path}: no gateway named {name!r} (have {', '.join(self.gateways)})")
        return self.gateways[name]

    @cached_property
    def banks(self) -> dict[str, NodeConfig]:
        return {node.name: node for node in self._nodes if node.role == "bank"}

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def daily_limit_of(self, account: str) -> int:
        """What `account` may send per day in minor units; 0: no limit."""
        return self.daily_limits.get(account, self.daily_limit)

    @cached_property
    def reserved_user_names(self) -> frozenset[str]:
        """Every identity's and bank's name: no customer may register one (it would read like that identity
        in logs), and no host in a certificate may be spelt as one (it would pass for that identity)."""
        return RESERVED_NAMES | frozenset(self.banks)

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ConfigError(f"{self.path}: no node named {name!r} (have {', '.join(n.name for n in self.nodes)})")


class _Section:
    """Reads one table of the file, remembering which keys were used."""

    def __init__(self, path: Path, where: str, table: Any) -> None:
        self.path, self.where = path, where
        if not isinstance(table, dict):
            raise self.error("", "a table")
        self.table = table
        self.used: set[str] = set()
        self.kinds: tuple[str, ...] = ()  # the node's storage and auth kinds, whose tables it may hold

    def error(self, key: str, expected: str) -> ConfigError:
        name = f"{self.where}.{key}" if key else self.where
        return ConfigError(f"{self.path}: key '{name}': expected {expected}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., expected: str = "") -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise ConfigError(f"{self.path}: missing key '{self.where}.{key}' ({expected or _kind_name(kind)})")
            return default
        value = self.table[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(key, expected or _kind_name(kind))
        if not isinstance(value, kind):
            raise self.error(key, expected or _kind_name(kind))
        return value

    def port(self, key: str = "port", default: Any = ...) -> Any:
        value = self.get(key, int, default, expected="a port number from 1 to 65535")
        if value is None:
            return None
        if not 0 < value < 65536:
            raise self.error(key, "a port number from 1 to 65535")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.get(key, (int, float), default, expected="a positive number of seconds")
        if value <= 0:
            raise self.error(key, "a positive number of seconds")
        return float(value)

    def amount(self, key: str, default: int) -> int:
        """Money, written as the command line takes it (\"10000.00\"), in minor units."""
        value = self.get(key, str, None, expected='an amount as a string, such as "10000.00"')
        if value is None:
            return default
        try:
            return parse_amount(value)
        except BadAmount as e:
            raise self.error(key, f'an amount as a string, such as "10000.00" ({e})') from None

    def plugin_tables(self, *kinds: str) -> dict[str, dict[str, Any]]:
        """The sub-tables named after the node's chosen kinds; their keys are the plugins' to check."""
        self.kinds = tuple(dict.fromkeys(kinds))
        return {kind: self.get(kind, dict, expected=f"a table of the {kind!r} plugin's settings")
                for kind in self.kinds if kind in self.table and kind not in self.used}

    def done(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra and isinstance(self.table[extra[0]], dict) and self.kinds:
            raise ConfigError(
                f"{self.path}: unknown table '{self.where}.{extra[0]}': a node's plugin settings go in a table "
                f"named after its storage or auth kind ({', '.join(self.kinds)})")
        if extra:
            raise ConfigError(
                f"{self.path}: unknown key '{self.where}.{extra[0]}' (known: {', '.join(sorted(self.used))})"
            )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Read and check the cluster file (default: $MINIUPI_CONFIG, then config/cluster.toml)."""
    path = Path(path or os.environ.get("MINIUPI_CONFIG") or DEFAULT_CONFIG)
    return parse_config(read_toml(path, "cluster file"), path)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's tables, or a one-line ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def parse_config(raw: dict[str, Any], path: Path) -> ClusterConfig:
    """Check a parsed cluster file; `path` is only used in messages."""
    top = _Section(path, "(top level)", raw)
    c = _Section(path, "cluster", top.get("cluster", dict, expected="a [cluster] table"))
    name = c.get("name", str, "miniupi")
    currency = c.get("currency", str, "INR")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise c.error("currency", "a three-letter ISO 4217 code such as \"INR\"")
    settings: dict[str, Any] = dict(
        path=path.resolve(),
        name=name,
        data_dir=Path(c.get("data_dir", str, "var/data")).resolve(),
        certs_dir=Path(c.get("certs_dir", str, "certs")).resolve(),
        currency=currency,
        prepare_timeout_s=c.positive("prepare_timeout_s", 10),
        call_timeout_s=c.positive("call_timeout_s", 10),
        login_attempts=c.get("login_attempts", int, 5, expected="a whole number of attempts, at least 1"),
        login_lockout_s=c.positive("login_lockout_s", 300),
        max_opening_deposit=c.amount("max_opening_deposit", 0),
        max_balance=c.amount("max_balance", DEFAULT_MAX_BALANCE),
        log_json=c.get("log_json", bool, False, expected="true or false"),
        daily_limit=c.amount("daily_limit", 0),
        time_zone=c.get("time_zone", str, "UTC", expected='an IANA time zone such as "Asia/Kolkata"'),
        gateway_lease_s=c.positive("gateway_lease_s", 5),
        raw=raw,
    )
    try:
        ZoneInfo(settings["time_zone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise c.error("time_zone", 'an IANA time zone such as "Asia/Kolkata" or "UTC"') from None
    if settings["login_attempts"] < 1:
        raise c.error("login_attempts", "a whole number of attempts, at least 1")
    if not 0 < settings["max_balance"] <= DEFAULT_MAX_BALANCE:
        raise c.error("max_balance", f"a positive amount of at most {DEFAULT_MAX_BALANCE // 100}.00")
    if settings["max_opening_deposit"] > settings["max_balance"]:
        raise c.error("max_opening_deposit", "an amount no larger than max_balance")

    nodes = _gateways(path, top, c, settings)
    c.done()

    banks_table = _Section(path, "banks", top.get("banks", dict, expected="a [banks.NAME] table per bank"))
    gateway_names = {node["name"] for node in nodes}
    for bank_name in banks_table.table:
        _check_node_name(banks_table, bank_name, "bank")
        if bank_name in gateway_names:
            raise banks_table.error(bank_name, f"a name of its own: {bank_name} is a gateway's name")
        b = _Section(path, f"banks.{bank_name}", banks_table.get(bank_name, dict))
        accounts = b.get("accounts", str, None)
        nodes.append({**_node_fields(b, bank_name, "bank"), "accounts": Path(accounts).resolve() if accounts else None})
        b.done()
    if len(nodes) == len(gateway_names):
        raise banks_table.error("", "at least one [banks.NAME] table")

    limits = _Section(path, "daily_limits", top.get("daily_limits", dict, {}))
    daily_limits: dict[str, int] = {}
    for account in limits.table:
        try:
            split_address(account)
        except ValueError:
            raise limits.error(account, "a key that is an account address, such as \"alice@bank_a\"") from None
        daily_limits[account] = limits.amount(account, 0)
    limits.done()

    postgres = _postgres(path, top.get("postgres", dict, None, expected="a [postgres] table"))
    if postgres is not None and postgres.managed and "postgres" in (n["name"] for n in nodes):
        raise banks_table.error("postgres", "a bank name other than postgres (the managed PostgreSQL's program)")

    console = _console(path, top.get("console", dict, None, expected="a [console] table"))
    if console is not None and CONSOLE in (n["name"] for n in nodes):
        raise banks_table.error(CONSOLE, "a node name other than console (the web console's program)")

    p = _Section(path, "plugins", top.get("plugins", dict, {}))
    load = p.get("load", list, [], expected="a list of module names")
    if not all(isinstance(m, str) and m for m in load):
        raise p.error("load", "a list of module names")
    p.done()
    top.done()

    cluster = ClusterConfig(**settings, daily_limits=daily_limits, plugins=tuple(load), node_fields=tuple(nodes),
                            postgres=postgres, console=console)
    for account in daily_limits:
        if split_address(account)[1] not in cluster.banks:
            raise limits.error(account, f"an account at one of this cluster's banks ({', '.join(cluster.banks)})")
    for node in cluster.nodes:
        problem = host_problem(node.host, cluster.reserved_user_names)
        if problem:
            raise ConfigError(f"{path}: key '{node.where}.host': {problem}")
    ports: dict[tuple[str, int], str] = {}
    if postgres is not None and postgres.managed:
        ports["127.0.0.1", postgres.port] = "postgres"
    if console is not None:
        ports.setdefault((console.host, console.port), CONSOLE)
    for node in cluster.nodes:
        other = ports.setdefault((node.host, node.port), node.name)
        if other != node.name:
            raise ConfigError(f"{path}: {node.name} and {other} both use {node.address}")
    for node in cluster.nodes:  # after every node's own port, so a clash names the metrics port
        if node.metrics_port is not None:
            mine = f"{node.where}.metrics_port"
            other = ports.setdefault((node.host, node.metrics_port), mine)
            if other != mine:
                raise ConfigError(f"{path}: key '{mine}': {node.host}:{node.metrics_port} is taken by {other}")
    return cluster


def _postgres(path: Path, table: dict[str, Any] | None) -> PostgresConfig | None:
    if table is None:
        return None
    t = _Section(path, "postgres", table)
    managed = t.get("managed", bool, expected="true or false (true: `miniupi run` runs this PostgreSQL)")
    bin_dir = t.get("bin_dir", str, None, expected="the directory holding the postgres and initdb programs")
    config = PostgresConfig(managed=managed, port=t.port(), bin_dir=Path(bin_dir).resolve() if bin_dir else None)
    t.done()
    return config


def _console(path: Path, table: dict[str, Any] | None) -> ConsoleConfig | None:
    if table is None:
        return None
    t = _Section(path, CONSOLE, table)
    host = t.get("host", str, "127.0.0.1", expected="the address the console listens on")
    public = t.get("public", bool, False, expected="true or false (true: the console may listen beyond loopback)")
    port = t.port() if "port" in t.table else t.get("port", int, CONSOLE_PORT)
    problem = console_bind_problem(host, public)
    if problem:
        raise t.error("host", problem)
    t.done()
    return ConsoleConfig(host=host, port=port, public=public)


def _check_node_name(table: _Section, name: str, what: str) -> None:
    """A node's name is its supervised program's, its data directory's and, for a bank, its identity's."""
    if not NAME_RE.match(name) or name in RESERVED_NAMES or name == LOCALHOST:
        raise table.error(name, f"a {what} name of {NODE_NAME_RULE}")


def _node_fields(section: _Section, name: str, role: str) -> dict[str, Any]:
    """What a gateway's or a bank's table says of the node itself."""
    storage, auth = section.get("storage", str, "sqlite"), section.get("auth", str, "session")
    return dict(name=name, role=role, host=section.get("host", str, "127.0.0.1"), port=section.port(),
                metrics_port=section.port("metrics_port", None), storage=storage, auth=auth,
                plugin_settings=section.plugin_tables(storage, auth))


def _gateways(path: Path, top: _Section, c: _Section, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The gateways' node fields, from a [gateway] table or from [gateways.NAME] tables (never both),
    and the session settings they share into `settings`.

    The session settings are the cluster's, under [cluster], since every
    gateway must honour a key another one handed out for as long; the one
    [gateway] table may hold them instead.
    """
    single, several = "gateway" in top.table, "gateways" in top.table
    if single and several:
        raise ConfigError(f"{path}: both [gateway] and [gateways.NAME] tables: use one form "
                          "([gateway] for one gateway, [gateways.NAME] for each of several)")
    if not single and not several:
        raise ConfigError(f"{path}: missing key '(top level).gateway' (a [gateway] table, "
                          "or a [gateways.NAME] table per gateway)")
    for key, default in SESSION_DEFAULTS.items():
        settings[key] = c.positive(key, default)
    if single:
        g = _Section(path, GATEWAY, top.get(GATEWAY, dict, expected="a [gateway] table"))
        fields = _node_fields(g, GATEWAY, GATEWAY)
        for key in SESSION_KEYS:
            if key in g.table and key in c.table:
                raise ConfigError(f"{path}: key '{GATEWAY}.{key}': set once, under [cluster] or [gateway], "
                                  "not in both")
            if key in g.table:
                settings[key] = g.positive(key, SESSION_DEFAULTS[key])
        g.done()
        return [fields]
    table = _Section(path, "gateways", top.get("gateways", dict, expected="a [gateways.NAME] table per gateway"))
    if not table.table:
        raise table.error("", "at least one [gateways.NAME] table")
    nodes = []
    for name in table.table:
        _check_node_name(table, name, "gateway")
        g = _Section(path, f"gateways.{name}", table.get(name, dict, expected="a table of that gateway's keys"))
        shared = next((key for key in SESSION_KEYS if key in g.table), None)
        if shared is not None:
            raise ConfigError(f"{path}: key 'gateways.{name}.{shared}': every gateway shares it; "
                              "set it once under [cluster]")
        nodes.append(_node_fields(g, name, GATEWAY))
        g.done()
    return nodes


def host_problem(host: str, identities: frozenset[str]) -> str | None:
    """Why `host` may not be a name in a node's certificate, or None.

    Clients check that a certificate *names* the identity they dial, so a host
    spelt like an identity (gRPC compares names without case or a trailing
    dot) would let that node's leaf pass for the identity: bank_a's key
    would serve as the gateway.
    """
    if not host.strip():
        return "a host name or address, not empty"
    if "*" in host:
        return f"a host name without wildcards, not {host!r}"
    if host.casefold().rstrip(".") in identities:
        return f"{host!r} is an identity's name (a certificate naming it would pass for that identity)"
    return None


def split_address(address: str) -> tuple[str, str]:
    """'alice@bank_a' -> ('alice', 'bank_a'); ValueError names what is wrong."""
    user, sep, bank = address.partition("@")
    if not sep or not user or not bank:
        raise ValueError(f"not an account address (user@bank): {address!r}")
    if not NAME_RE.match(user):
        raise ValueError(f"bad user name in {address!r}: use lower-case letters, digits and _")
    if not NAME_RE.match(bank):
        raise ValueError(f"bad bank name in {address!r}")
    return user, bank
