"""How a bank lays out its store, and what it reads of it at start.

Tables:

- `accounts`: name -> the account's record, with `entries`, its number of
  history rows (the newest is row number `entries`).
- `meta`: the bank's counters (`deposits`, `treasury`), `setup_loaded`, and
  `format`, the layout the store is in (FORMAT), written with the first
  accounts.
- `txns`: id -> every transaction the bank ever took part in, prepared,
  decided or deposited. Read by key (an idempotent repeat, a late decision)
  or streamed (the audit); never loaded whole.
- `in_doubt`: id -> 1 for each transaction prepared and not yet decided.
  Written in the batch that writes the PREPARED record, deleted in the one
  that writes the decision, so it always names exactly the in-doubt ones.
- `history`: f"{account}|{n:012d}" -> [txn_id, counterparty, delta,
  applied_at], the account's n-th applied entry (from 1), written in the
  batch that applies it. A page of history is a run of point reads down
  from a row number.

A restart loads `accounts`, `meta` and `in_doubt`, then reads the in-doubt
records by key: its cost follows what is live, not how long the bank has run.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from loguru import logger

from miniupi.contract.store import Put, Store, StoreDamaged
from miniupi.states import TxnState

FORMAT = 2  # 1 (no `format` in meta): every table loaded whole, no index tables
LIVE_TABLES = ("accounts", "meta", "in_doubt")
UPGRADE_CHUNK = 5000  # puts per write while upgrading


def history_key(account: str, n: int) -> str:
    """The key of `account`'s n-th history row (from 1); zero-padded, so an account's rows sort by n."""
    return f"{account}|{n:012d}"


def history_row(txn_id: str, counterparty: str, delta: int, applied_at: float) -> list[Any]:
    return [txn_id, counterparty, delta, applied_at]


def load_live(store: Store, tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The live tables as the Ledger takes them: `tables` (LIVE_TABLES, as loaded), with `txns`
    holding the in-doubt records only. Upgrades a store of an earlier format first.

    Runs before the bank serves (from a worker thread); raises StoreDamaged
    if the index and the records disagree.
    """
    upgrade(store, tables)
    in_doubt: dict[str, Any] = {}
    for txn_id in tables.get("in_doubt", {}):
        record = store.get("txns", txn_id)
        if not isinstance(record, dict) or record.get("state") != TxnState.PREPARED:
            raise StoreDamaged(f"in_doubt names {txn_id}, but its record in txns is "
                               f"{record.get('state') if isinstance(record, dict) else record!r}, not PREPARED")
        in_doubt[txn_id] = record
    tables["txns"] = in_doubt
    return tables


def upgrade(store: Store, tables: dict[str, dict[str, Any]]) -> bool:
    """Bring a store written before FORMAT up to it, in place; True if it did.

    One pass over `txns` builds `in_doubt` and every account's `history`
    rows, numbered in the order the transactions were applied (by
    `decided_at`, as the earlier format ordered them at load, then by id),
    and each account's entry count. The rows go down in chunks and the
    format last: a crash in between leaves the format unwritten, and the
    next start does it all again, writing the same rows. The pass holds
    each applied transaction's legs until it has sorted them, as the earlier
    format held every transaction for as long as the bank ran.
    """
    meta = tables.setdefault("meta", {})
    found = meta.get("format")
    if found == FORMAT:
        return False
    if found is not None:
        raise StoreDamaged(f"the bank's store is in format {found!r}; this miniupi reads format {FORMAT}")
    if not tables.get("accounts"):
        # A new bank (or one that only ever heard aborts of unknown ids): nothing to index, since every
        # transaction that applies or holds names an account. The Ledger writes the format with its
        # first accounts, so a bank that refuses to start on a bad setup file leaves its store empty.
        return False
    started = time.monotonic()
    applied: list[tuple[float, str, list[Any]]] = []
    in_doubt: list[str] = []
    for txn_id, record in store.scan("txns"):
        state = record["state"]
        if state == TxnState.PREPARED:
            in_doubt.append(txn_id)
        elif state in (TxnState.COMMITTED, TxnState.DEPOSITED):
            applied.append((record["decided_at"] or 0.0, txn_id, record["legs"]))
    applied.sort(key=lambda a: (a[0], a[1]))
    accounts = tables.setdefault("accounts", {})
    counts: dict[str, int] = defaultdict(int)

    def rows() -> Iterable[Put]:
        for applied_at, txn_id, legs in applied:
            for leg in legs:
                account, delta, counterparty = leg[0], leg[1], leg[2] if len(leg) > 2 else ""
                counts[account] += 1
                yield Put("history", history_key(account, counts[account]),
                          history_row(txn_id, counterparty, delta, applied_at))
        yield from (Put("in_doubt", txn_id, 1) for txn_id in in_doubt)

    _write_chunked(store, rows())
    for name, record in accounts.items():
        record["entries"] = counts.get(name, 0)
    _write_chunked(store, (Put("accounts", name, record) for name, record in accounts.items()))
    store.write([Put("meta", "format", FORMAT)])
    meta["format"] = FORMAT
    tables["in_doubt"] = dict.fromkeys(in_doubt, 1)
    if applied or in_doubt:
        logger.info("store upgraded to format {} in {:.1f} s: history of {} applied transactions, {} in doubt",
                    FORMAT, time.monotonic() - started, len(applied), len(in_doubt))
    return True


def _write_chunked(store: Store, puts: Iterable[Put]) -> None:
    chunk: list[Put] = []
    for put in puts:
        chunk.append(put)
        if len(chunk) >= UPGRADE_CHUNK:
            store.write(chunk)
            chunk = []
    if chunk:
        store.write(chunk)
