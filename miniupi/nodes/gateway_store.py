"""The gateway's store: which tables a start loads.

A gateway loads only its live tables at start: the auth kind's sessions,
"unfinished" (payments not acknowledged by every bank), "open_requests"
and "meta". Everything else is read by key when needed: "txns" (every
payment), "refunds" and "daily" (the guards' rows), "requests" and
"deposits".
"""
from __future__ import annotations

from collections.abc import Collection

from miniupi.nodes import collect
from miniupi.nodes.txn_index import UNFINISHED

META = "meta"
LIVE_TABLES = (UNFINISHED, collect.OPEN, META)


def live_tables(auth_tables: Collection[str]) -> list[str]:
    """What a gateway loads at start: its own live tables and the auth kind's."""
    return sorted({*LIVE_TABLES, *auth_tables})
