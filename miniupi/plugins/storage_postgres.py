"""A store in PostgreSQL: one schema per node, a row per key, shared by as many processes as connect.

For nodes that must outlive their host's disk, or share their state with
other processes (gateway replicas): PostgreSQL's own durability,
replication and backups then hold the node's state. Each node has a schema
of its own (its name, unless `schema` says otherwise), so several nodes,
and several clusters, can share one database.

The Store contract is synchronous (the group commit calls write() from its
writer thread), so writes use psycopg's synchronous API, with two
`psycopg_pool.ConnectionPool`s: one connection for the writer, a few for
readers, so a read never waits behind a write and sees only committed
batches. The event loop's reads are coroutines too (contract/store.py,
AsyncReads: aget, aget_many, ascan) over an `AsyncConnectionPool` opened on
the loop at its first read: a gateway sharing the store reads rows on every
call, and the loop serves other calls while PostgreSQL answers. Values are stored in a `json`
column, as the exact text written: integers of any size come back exactly,
and nothing is re-encoded on the way in.

Conditional writes and claims are decided by the database, under row
locks, so processes racing on one schema get exactly one winner.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
from dataclasses import dataclass
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from miniupi.config import ConfigError
from miniupi.contract.expectations import check_claim, claimable, claimed, inserted_keys, last_puts, require
from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.registry import Register, Setting, StorageKind
from miniupi.contract.store import Conflict, Expect, Put, StoreDamaged
from miniupi.errors import StoreUnavailable

if TYPE_CHECKING:
    from miniupi.config import NodeConfig

NAME = "postgres"
SCHEMA_VERSION = 1
SCAN_PAGE = 1000  # rows read at once by scan() and load()
# A group of conditional batches that PostgreSQL ended to break a deadlock is tried again this often.
DEADLOCK_TRIES = 5
POOL_SIZE = 2  # reader connections
CONNECT_WAIT_S = 30.0  # at open: PostgreSQL may be starting alongside the node (miniupi run)
ACQUIRE_S = 5.0  # the longest a call waits for a connection while PostgreSQL is up
ACQUIRE_DOWN_S = 0.2  # and once a connection was lost, until one works again: fail fast, not stall the loop
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout, unless the connection settings give one
SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

# Each version's statements, applied in order to a schema at a lower version; {s} is the schema.
# "C" collation: keys sort by code point, as in the SQLite and JSON stores, whatever the database's locale.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("""CREATE TABLE {s}.kv (
               tbl text COLLATE "C" NOT NULL,
               key text COLLATE "C" NOT NULL,
               value json NOT NULL,
               PRIMARY KEY (tbl, key))""",),
}


class PostgresUnreachable(ConfigError):
    """The node's PostgreSQL could not be reached at open, or its settings cannot be used: one line.

    A ConfigError, so a node that cannot open its store refuses to start
    with this line rather than a traceback.
    """


class _SteadyAttempt(AttemptWithBackoff):
    # psycopg_pool doubles its wait between reconnection attempts without a bound: after a minute's
    # outage a node would wait another minute before it noticed PostgreSQL was back. Once a second.
    DELAY_BACKOFF = 1.0


class _Pool(ConnectionPool):
    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _SteadyAttempt(timeout=self.reconnect_timeout), growing)


class _AsyncPool(AsyncConnectionPool):
    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(attempt or _SteadyAttempt(timeout=self.reconnect_timeout), growing)


@dataclass(frozen=True)
class _Prepared:
    """One batch made ready before any transaction: encoded (a bad value fails with nothing sent) and
    sorted, so that processes writing one schema lock its rows in one order and do not deadlock."""

    upserts: list[tuple[str, str, str]]
    deletes: list[tuple[str, str]]
    new_rows: list[tuple[str, str, str]]
    checks: list[Expect]

    @classmethod
    def of(cls, batch: Sequence[Put], expect: Sequence[Expect]) -> _Prepared | None:
        last = last_puts(batch)
        inserts = inserted_keys(batch, expect)
        if not last:
            return None
        return cls(sorted((t, k, _encode(v)) for (t, k), v in last.items() if v is not None and (t, k) not in inserts),
                   sorted(tk for tk, v in last.items() if v is None),
                   sorted((t, k, _encode(last[t, k])) for t, k in inserts),
                   sorted((e for e in expect if e.field is not None), key=lambda e: (e.table, e.key)))


class PostgresStore:
    """A Store in schema `schema` of the database `conninfo` names; see miniupi.contract.store.Store."""

    def __init__(self, conninfo: str, schema: str, pool_size: int = POOL_SIZE,
                 connect_wait_s: float = CONNECT_WAIT_S) -> None:
        if not SCHEMA_RE.match(schema):
            raise ValueError(f"not a schema name this store uses: {schema!r}")
        self.schema = schema
        where = conninfo_to_dict(conninfo)
        self.target = f"{where.get('host', 'localhost')}:{where.get('port', 5432)}/{where.get('dbname', '')}"
        _wait_for_server(conninfo, self.target, connect_wait_s)
        pools = dict(kwargs={"autocommit": True}, timeout=ACQUIRE_S, reconnect_timeout=365 * 86400.0, open=False)
        # The async readers' pool, made on the loop of the first async read (its tasks live on that loop).
        self._async_pool = functools.partial(_AsyncPool, conninfo, min_size=1, max_size=pool_size,
                                             name=f"{schema}-async-readers", **pools)
        self._async_readers: tuple[asyncio.AbstractEventLoop, _AsyncPool] | None = None
        # The writer's connection is checked (one round trip) before each batch goes out on it, so a
        # connection the server dropped, at a restart, is replaced rather than failing a batch.
        self._writers = _Pool(conninfo, min_size=1, max_size=1, name=f"{schema}-writer",
                              check=ConnectionPool.check_connection, **pools)
        self._readers = _Pool(conninfo, min_size=1, max_size=pool_size, name=f"{schema}-readers", **pools)
        self._down = False  # a connection was lost and none has worked since
        s = sql.Identifier(schema)
        q = {name: sql.SQL(text).format(s=s) for name, text in _STATEMENTS.items()}
        self._q = q
        try:
            for pool in (self._writers, self._readers):
                pool.open(wait=True, timeout=connect_wait_s)
            self._migrate()
        except PoolTimeout:
            self.close()
            raise PostgresUnreachable(f"cannot reach PostgreSQL at {self.target} within {connect_wait_s:g} s") from None
        except BaseException:
            self.close()
            raise

    # --- opening ---

    def _migrate(self) -> None:
        """Create the schema, or bring it to SCHEMA_VERSION; refuse one this store did not make."""
        s = sql.Identifier(self.schema)
        with self._writers.connection() as conn, conn.transaction():
            # Two processes opening one schema at once (replicas starting together) take turns.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"miniupi schema {self.schema}",))
            tables = {name for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (self.schema,))}
            if "miniupi_schema" not in tables:
                if tables:
                    raise StoreDamaged(f"PostgreSQL {self.target} schema {self.schema}: holds tables this store "
                                       f"did not make ({', '.join(sorted(tables))})")
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {s}").format(s=s))
                conn.execute(sql.SQL("CREATE TABLE {s}.miniupi_schema (version integer NOT NULL)").format(s=s))
                conn.execute(sql.SQL("INSERT INTO {s}.miniupi_schema VALUES (0)").format(s=s))
            rows = conn.execute(sql.SQL("SELECT version FROM {s}.miniupi_schema").format(s=s)).fetchall()
            if len(rows) != 1:
                raise StoreDamaged(f"PostgreSQL {self.target} schema {self.schema}: miniupi_schema holds "
                                   f"{len(rows)} rows, not one")
            version = rows[0][0]
            if version > SCHEMA_VERSION:
                raise StoreDamaged(f"PostgreSQL {self.target} schema {self.schema} is at version {version}, "
                                   f"newer than this miniupi's {SCHEMA_VERSION}: upgrade miniupi")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    conn.execute(sql.SQL(statement).format(s=s))
            if version < SCHEMA_VERSION:
                conn.execute(sql.SQL("UPDATE {s}.miniupi_schema SET version = %s").format(s=s), (SCHEMA_VERSION,))

    # --- connections ---

    @contextlib.contextmanager
    def _connection(self, pool: ConnectionPool) -> Iterator[psycopg.Connection[Any]]:
        try:
            with pool.connection(timeout=ACQUIRE_DOWN_S if self._down else ACQUIRE_S) as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout):
            self._down = True
            raise
        self._down = False

    def _read(self, query: sql.Composed, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        # A read is tried twice: a reader the server dropped (a restart) fails once and is replaced,
        # and reading again changes nothing. A server still away is StoreUnavailable, which the node
        # answers as UNAVAILABLE (try again), as it does a failed write: not a fault of the node.
        for attempt in (1, 2):
            try:
                with self._connection(self._readers) as conn:
                    return conn.execute(query, params).fetchall()
            except (psycopg.OperationalError, PoolTimeout) as e:
                self._give_up(e, attempt)
        raise AssertionError("unreachable")

    async def _aread(self, query: sql.Composed, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """As _read, awaited on the event loop: the loop serves other calls while PostgreSQL answers."""
        for attempt in (1, 2):
            try:
                pool = await self._areaders()
                async with pool.connection(timeout=ACQUIRE_DOWN_S if self._down else ACQUIRE_S) as conn:
                    cursor = await conn.execute(query, params)
                    rows = await cursor.fetchall()
                self._down = False
                return rows
            except (psycopg.OperationalError, PoolTimeout) as e:
                self._down = True
                self._give_up(e, attempt)
        raise AssertionError("unreachable")

    def _give_up(self, error: psycopg.OperationalError | PoolTimeout, attempt: int) -> None:
        """Return to read once more, or raise StoreUnavailable: a second failure, or no connection at all."""
        if attempt == 2 or isinstance(error, PoolTimeout):
            raise StoreUnavailable(f"PostgreSQL at {self.target} unavailable: {_first_line(error)}") from error

    async def _areaders(self) -> _AsyncPool:
        loop = asyncio.get_running_loop()
        if self._async_readers is None or self._async_readers[0] is not loop:
            # Opened here, without waiting for a connection: a read waits at most ACQUIRE_S for one.
            self._async_readers = (loop, self._async_pool())
            await self._async_readers[1].open()
        return self._async_readers[1]

    # --- reads ---

    def load(self, tables: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
        # Page by page, as scan: no result of a whole large table held twice at once.
        names = None if tables is None else sorted(set(tables))
        if names == []:
            return {}
        loaded: dict[str, dict[str, Any]] = {}
        after: tuple[str, str] = ("", "")
        while True:
            if names is None:
                page = self._read(self._q["load_all"], (*after, SCAN_PAGE))
            else:
                page = self._read(self._q["load_named"], (names, *after, SCAN_PAGE))
            for tbl, key, value in page:
                loaded.setdefault(tbl, {})[key] = value
            if len(page) < SCAN_PAGE:
                return loaded
            after = (page[-1][0], page[-1][1])

    def get(self, table: str, key: str) -> Any | None:
        rows = self._read(self._q["get"], (table, key))
        return rows[0][0] if rows else None

    def scan(self, table: str) -> Iterator[tuple[str, Any]]:
        # Pages by key: no connection or transaction is held across the caller's awaits.
        after = None
        while True:
            page = self._read(*self._scan_page(table, after))
            yield from page
            if len(page) < SCAN_PAGE:
                return
            after = page[-1][0]

    def _scan_page(self, table: str, after: str | None) -> tuple[sql.Composed, tuple[Any, ...]]:
        """The query of a scan's first page (after None), or of the page after key `after`."""
        if after is None:
            return self._q["scan_first"], (table, SCAN_PAGE)
        return self._q["scan_after"], (table, after, SCAN_PAGE)

    # --- reads on the event loop (contract/store.py, AsyncReads) ---

    async def aget(self, table: str, key: str) -> Any | None:
        rows = await self._aread(self._q["get"], (table, key))
        return rows[0][0] if rows else None

    async def aget_many(self, table: str, keys: Collection[str]) -> dict[str, Any]:
        if not keys:
            return {}
        return dict(await self._aread(self._q["get_many"], (table, list(keys))))

    async def ascan(self, table: str) -> AsyncIterator[tuple[str, Any]]:
        after = None
        while True:
            page = await self._aread(*self._scan_page(table, after))
            for row in page:
                yield row
            if len(page) < SCAN_PAGE:
                return
            after = page[-1][0]

    async def aclose(self) -> None:
        readers, self._async_readers = self._async_readers, None
        if readers is not None and readers[0] is asyncio.get_running_loop():
            await readers[1].close()

    # --- writes ---

    def write(self, batch: Sequence[Put], expect: Sequence[Expect] = ()) -> None:
        prepared = _Prepared.of(batch, expect)
        if prepared is None:
            return
        with self._connection(self._writers) as conn:
            if not prepared.checks and not prepared.new_rows:
                # One round trip: BEGIN, the statements and COMMIT go out together.
                with conn.pipeline(), conn.transaction():
                    self._apply(conn, prepared.upserts, prepared.deletes)
                return
            with conn.transaction():
                self._lock(conn, prepared.checks)
                self._run(conn, prepared)

    def write_each(self, batches: Sequence[tuple[Sequence[Put], Sequence[Expect]]]) -> list[Conflict | None]:
        """Each batch atomically and in order, all made durable by one COMMIT; a batch whose expectations
        fail is left out (its Conflict in the answer) and the others go down. Any other failure applies
        none. So gateways sharing the store pay one WAL flush for many conditional batches, not one each.
        """
        prepared = [_Prepared.of(batch, expect) for batch, expect in batches]
        checks = sorted({(e.table, e.key) for p in prepared if p for e in p.checks})
        for attempt in range(1, DEADLOCK_TRIES + 1):
            answers: list[Conflict | None] = []
            try:
                with self._connection(self._writers) as conn, conn.transaction():
                    # Every row any batch expects, locked first and in one order: two gateways' groups
                    # then wait for each other rather than each holding a row the other needs.
                    self._lock(conn, [Expect(t, k, "") for t, k in checks], check=False)
                    for p in prepared:
                        if p is None:
                            answers.append(None)
                            continue
                        try:
                            with conn.transaction():  # a savepoint: a Conflict undoes this batch alone
                                self._lock(conn, p.checks)
                                self._run(conn, p)
                            answers.append(None)
                        except Conflict as e:
                            answers.append(e)
                return answers
            except psycopg.errors.DeadlockDetected:
                # Two new rows inserted in other orders by two groups: PostgreSQL ends one of them, and
                # nothing of it was applied; the same group again meets the other's rows committed.
                if attempt == DEADLOCK_TRIES:
                    raise
        raise AssertionError("unreachable")

    def _lock(self, conn: psycopg.Connection[Any], checks: Sequence[Expect], check: bool = True) -> None:
        for e in checks:
            # Locked until COMMIT: another writer's change to this row waits for us, or we for it.
            row = conn.execute(self._q["lock"], (e.table, e.key)).fetchone()
            if check:
                require(e, None if row is None else row[0])

    def _run(self, conn: psycopg.Connection[Any], p: _Prepared) -> None:
        for t, k, v in p.new_rows:
            # Of two transactions inserting one key, the second waits for the first and then
            # inserts nothing: the database decides the race.
            if conn.execute(self._q["insert"], (t, k, v)).rowcount != 1:
                raise Conflict(f"{t}/{k}: expected no row")
        self._apply(conn, p.upserts, p.deletes)

    def _apply(self, conn: psycopg.Connection[Any], upserts: list[tuple[str, str, str]],
               deletes: list[tuple[str, str]]) -> None:
        if upserts:
            conn.execute(self._q["upsert"], [list(column) for column in zip(*upserts)])
        if deletes:
            conn.execute(self._q["delete"], [list(column) for column in zip(*deletes)])

    def claim(self, table: str, field: str, owners: Collection[str], owner: str, limit: int) -> list[tuple[str, Any]]:
        check_claim(table, field, owner, limit)
        owners = sorted(set(owners))
        if not owners or limit == 0:
            return []
        with self._connection(self._writers) as conn, conn.transaction():
            # SKIP LOCKED: rows another claimer (or writer) holds are passed over, never waited for,
            # so concurrent claimers split the rows between them and none is claimed twice.
            # Rows are matched on their text, as this store wrote it (compact, ASCII): `"field":"owner"`
            # in it. PostgreSQL's own ->> would have to read every string of the row, and fails on one
            # holding \u0000; the text match may also find the pair deeper in a row, which the check
            # below passes over.
            patterns = [_like(f"{_encode(field)}:{_encode(o)}") for o in owners]
            rows = conn.execute(self._q["claim"], (table, patterns, limit)).fetchall()
            taken = [(key, claimed(value, field, owner)) for key, value in rows if claimable(value, field, owners)]
            if taken:
                self._apply(conn, [(table, key, _encode(value)) for key, value in taken], [])
        return taken

    def close(self) -> None:
        for pool in (getattr(self, "_writers", None), getattr(self, "_readers", None)):
            if pool is not None:
                pool.close()


_STATEMENTS = {
    "get": "SELECT value FROM {s}.kv WHERE tbl = %s AND key = %s",
    "get_many": "SELECT key, value FROM {s}.kv WHERE tbl = %s AND key = ANY(%s::text[])",
    "lock": "SELECT value FROM {s}.kv WHERE tbl = %s AND key = %s FOR UPDATE",
    "scan_first": "SELECT key, value FROM {s}.kv WHERE tbl = %s ORDER BY key LIMIT %s",
    "scan_after": "SELECT key, value FROM {s}.kv WHERE tbl = %s AND key > %s ORDER BY key LIMIT %s",
    "load_all": "SELECT tbl, key, value FROM {s}.kv WHERE (tbl, key) > (%s, %s) ORDER BY tbl, key LIMIT %s",
    "load_named": "SELECT tbl, key, value FROM {s}.kv WHERE tbl = ANY(%s) AND (tbl, key) > (%s, %s) "
                  "ORDER BY tbl, key LIMIT %s",
    "insert": "INSERT INTO {s}.kv (tbl, key, value) VALUES (%s, %s, %s::json) ON CONFLICT (tbl, key) DO NOTHING",
    "upsert": "INSERT INTO {s}.kv (tbl, key, value) SELECT t, k, v::json FROM unnest(%s::text[], %s::text[], %s::text[])"
              " AS u(t, k, v) ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
    "delete": "DELETE FROM {s}.kv USING unnest(%s::text[], %s::text[]) AS d(t, k) WHERE tbl = d.t AND key = d.k",
    "claim": "SELECT key, value FROM {s}.kv WHERE tbl = %s AND value::text LIKE ANY(%s) ORDER BY key LIMIT %s "
             "FOR UPDATE SKIP LOCKED",
}


def _like(text: str) -> str:
    """A LIKE pattern matching any text that contains `text`."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _wait_for_server(conninfo: str, target: str, wait_s: float) -> None:
    """Return once a connection succeeds; a refusal that waiting will not cure (a wrong password, an
    unknown database or role) is one line at once, and a server that stays away one line after wait_s."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            psycopg.connect(conninfo).close()
            return
        except psycopg.OperationalError as e:
            reason = _first_line(e)
            if any(words in reason for words in ("authentication failed", "does not exist", "no password supplied",
                                                 "not permitted", "no pg_hba.conf entry")):
                raise PostgresUnreachable(f"PostgreSQL at {target} refused the connection: {reason}") from None
            if time.monotonic() > deadline:
                raise PostgresUnreachable(f"cannot reach PostgreSQL at {target} within {wait_s:g} s: {reason}") from None
            time.sleep(0.2)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# --- the storage kind: its settings and how a node's connection is found ---


def _valid_dsn(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = conninfo_to_dict(value)
    except psycopg.ProgrammingError:
        return False
    return "password" not in parsed


def _optional(kind: type, extra: Any = lambda v: True) -> Any:
    return lambda v: v is None or (isinstance(v, kind) and not isinstance(v, bool) and extra(v))


NO_PASSWORD = ("password_file naming a file that holds it, or dsn_env naming an environment variable "
               "that holds the whole connection string")

SETTINGS = (
    Setting("managed", False, "true or false (true: the cluster's own PostgreSQL, from its [postgres] table)",
            lambda v: isinstance(v, bool)),
    Setting("dsn_env", None, "the name of an environment variable holding the connection string",
            _optional(str, ENV_RE.match)),
    Setting("dsn", None, f"a connection string without a password (a password never goes in the cluster file: "
                         f"use {NO_PASSWORD})", _valid_dsn),
    Setting("password", None, f"no password: a password never goes in the cluster file (use {NO_PASSWORD})",
            lambda v: False),
    Setting("password_file", None, "the path of a file holding the password", _optional(str, bool)),
    Setting("host", None, "a host name or address", _optional(str, bool)),
    Setting("port", None, "a port number from 1 to 65535", _optional(int, lambda v: 0 < v < 65536)),
    Setting("dbname", None, "a database name", _optional(str, bool)),
    Setting("user", None, "a role name", _optional(str, bool)),
    Setting("schema", None, "a schema name of lower-case letters, digits and _ (default: the node's name)",
            _optional(str, SCHEMA_RE.match)),
    Setting("pool_size", POOL_SIZE, "a whole number of reader connections, at least 1",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
)
CONNECTION_KEYS = ("dsn_env", "dsn", "password_file", "host", "port", "dbname", "user")


def check_settings(node: NodeConfig, settings: Mapping[str, Any]) -> str | None:
    """What is wrong with a node's settings taken together, or None (the registry reports it as one line)."""
    given = [key for key in CONNECTION_KEYS if settings.get(key) is not None]
    if settings["managed"]:
        managed = node.cluster.postgres
        if managed is None or not managed.managed:
            return "managed = true, but the cluster file has no [postgres] table with managed = true"
        if given:
            return f"managed = true takes no connection settings of its own (got {', '.join(given)})"
    if settings["dsn_env"] is not None and settings["dsn"] is not None:
        return "dsn_env and dsn are two ways of giving one connection string: give one"
    return None


def conninfo(node: NodeConfig, settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> str:
    """The node's libpq connection string, its password read now from where the settings say.

    Settings left out are libpq's to fill, from its own environment variables
    (PGHOST, PGPASSFILE, ...) and defaults.
    """
    where = f"{node.cluster.path}: {node.where}.{NAME}"
    keywords: dict[str, Any] = {"application_name": f"miniupi {node.name}"}
    base = ""
    if settings["managed"]:
        from miniupi.ops.postgres_server import DATABASE, HOST, PASSWORD_FILE, SUPERUSER

        managed = node.cluster.postgres
        assert managed is not None
        keywords.update(host=HOST, port=managed.port, user=SUPERUSER, dbname=DATABASE)
        password_file: str | None = str(node.cluster.data_dir / PASSWORD_FILE)
    else:
        password_file = settings["password_file"]
        if settings["dsn_env"] is not None:
            base = environ.get(settings["dsn_env"], "")
            if not base:
                raise PostgresUnreachable(f"{where}.dsn_env: the environment variable {settings['dsn_env']} "
                                          "is not set; it should hold the connection string")
            try:
                conninfo_to_dict(base)
            except psycopg.ProgrammingError:
                raise PostgresUnreachable(f"{where}.dsn_env: {settings['dsn_env']} does not hold a connection "
                                          "string libpq understands") from None
        elif settings["dsn"] is not None:
            base = settings["dsn"]
        keywords.update({key: settings[key] for key in ("host", "port", "dbname", "user") if settings[key] is not None})
    if password_file is not None:
        try:
            keywords["password"] = Path(password_file).read_text().strip()
        except OSError as e:
            raise PostgresUnreachable(f"{where}: cannot read the password file {password_file}: {e.strerror}") from None
    if "connect_timeout" not in conninfo_to_dict(base):
        keywords["connect_timeout"] = CONNECT_TIMEOUT_S
    return make_conninfo(base, **keywords)


def open_postgres(node: NodeConfig, path: Path, settings: Mapping[str, Any]) -> PostgresStore:
    # Every gateway of a cluster is the identity "gateway" and opens the one schema of that name:
    # several gateways share one truth (miniupi/nodes/replicas.py).
    return PostgresStore(conninfo(node, settings), settings["schema"] or node.identity, settings["pool_size"])


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    # Set per node in its sub-table, such as [banks.bank_a.postgres] managed = true.
    register.add_storage(StorageKind(NAME, open_postgres, settings=SETTINGS, check=check_settings, shared=True))
