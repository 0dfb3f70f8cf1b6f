"""The gateway's store: which tables a start loads, and the upgrade of a store from before the indexes.

A gateway loads only its live tables at start: the auth kind's sessions,
"unfinished" (payments not acknowledged by every bank), "open_requests"
and "meta". Everything else is read by key when needed: "txns" (every
payment), "refunds" and "daily" (the guards' rows), "requests" and
"deposits".

A store written by a gateway from before those index tables has every
record and none of the indexes. Its first start under this version finds
no format row in "meta", builds the indexes from one pass over the
records, and only then writes the format row: a crash in between builds
them again at the next start.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any

from loguru import logger

from miniupi.config import ClusterConfig
from miniupi.contract.store import Put, Store
from miniupi.nodes import collect, limits, refunds
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.txn_index import TABLE as TXNS, UNFINISHED
from miniupi.states import TxnState

META = "meta"
FORMAT_KEY = "format"
# 2: the live tables are indexed ("unfinished", "open_requests") and the guards keep rows
# ("refunds", "daily"); a store without the row is from before.
FORMAT = 2
LIVE_TABLES = (UNFINISHED, collect.OPEN, META)
WRITE_CHUNK = 2_000  # puts per write while upgrading


def live_tables(auth_tables: Collection[str]) -> list[str]:
    """What a gateway loads at start: its own live tables and the auth kind's."""
    return sorted({*LIVE_TABLES, *auth_tables})


def current(tables: Mapping[str, Mapping[str, Any]]) -> bool:
    row = tables.get(META, {}).get(FORMAT_KEY)
    return isinstance(row, dict) and row.get("version", 0) >= FORMAT


async def upgrade(commit: GroupCommit, tables: dict[str, dict[str, Any]],
                  cluster: ClusterConfig) -> dict[str, dict[str, Any]]:
    """The live tables, with the indexes built first if the store is from before them."""
    if current(tables):
        return tables
    started = time.monotonic()
    puts = await asyncio.to_thread(index_puts, commit.store, cluster, time.time())
    for start in range(0, len(puts), WRITE_CHUNK):
        await commit.write(puts[start:start + WRITE_CHUNK])
    fmt = {"version": FORMAT, "since": time.time()}
    await commit.write([Put(META, FORMAT_KEY, fmt)])
    upgraded = {name: dict(rows) for name, rows in tables.items()}
    for put in puts:
        if put.table in (UNFINISHED, collect.OPEN):
            upgraded.setdefault(put.table, {})[put.key] = put.value
    upgraded.setdefault(META, {})[FORMAT_KEY] = fmt
    logger.info("store upgraded to format {}: {} index rows built in {:.1f} s", FORMAT, len(puts),
                time.monotonic() - started)
    return upgraded


def index_puts(store: Store, cluster: ClusterConfig, now: float) -> list[Put]:
    """The index and guard rows of a store's records, from one scan of its payments and one of its requests."""
    limit = limits.DailyLimit(cluster)
    today = limit.day(now)
    puts: list[Put] = []
    refunded: dict[str, list[tuple[float, str, int, str]]] = defaultdict(list)  # original -> its refunds
    sent: dict[str, int] = defaultdict(int)  # today's day key -> committed
    for txn_id, r in store.scan(TXNS):
        if not r["acked"]:
            puts.append(Put(UNFINISHED, txn_id, True))
        if r.get("refund_of"):
            refunded[r["refund_of"]].append((r["created_at"], txn_id, r["amount"], r["state"]))
        elif (r["state"] == TxnState.COMMITTED and cluster.daily_limit_of(r["payer"]) > 0
              and limit.day(r["created_at"]) == today):
            sent[limits.day_key(today, r["payer"])] += r["amount"]
    for original, rows in refunded.items():
        rows.sort()
        committed = sum(amount for _, _, amount, state in rows if state == TxnState.COMMITTED)
        puts.append(Put(refunds.TABLE, original, {"ids": [txn_id for _, txn_id, _, _ in rows],
                                                  "committed": committed}))
    puts += [Put(limits.TABLE, key, {"committed": total}) for key, total in sent.items()]
    for request_id, row in store.scan(collect.TABLE):
        payment = store.get(TXNS, request_id)
        if payment is not None:
            is_open = payment["state"] == TxnState.INITIATED  # being paid; the restart aborts it
        else:
            is_open = not row.get("declined_at") and row["expires_at"] > now
        if is_open:
            puts.append(Put(collect.OPEN, request_id, True))
    return puts
