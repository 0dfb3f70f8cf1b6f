"""Running sums a guard keeps per key (a refunded payment, a payer's day) without the history in memory.

A tally is what is committed, kept as a row of the store, plus what is in
flight, kept in memory: payments admitted and not yet durably decided. The
row changes only in the batch that makes a decision durable (the guard's
puts ride in the coordinator's decision write), so a restart finds the row
exactly as the decisions on disk have it. A key's tally is read from its
row (one `get`) the first time a payment needs it; it stays in memory while
anything for it is in flight, then in a bounded cache.

Rows are written whole, computed from memory, and the group commit keeps
batches in order, so the last row written for a key is the latest one. One
case needs care: a row written while another commit of the same key is
still being written counts that commit too, and that other write might
fail (a full disk) and the gateway die before aborting it. So a row names
such commits ("deciding": {txn id: amount}); whoever reads the row takes
each one back out unless the store holds its payment COMMITTED.

Where several gateways share the store (replicas.py), no gateway's memory
sees the others' payments in flight, so the row holds them too ("held":
{txn id: amount}) and is the only copy: `reserve` reads it, checks, and
gives the put that holds the payment, for the INITIATED record's batch;
`settle` gives the put that moves it to committed (or drops it), for the
decision's. Each put expects the row's version ("v") it was computed from,
so of two gateways changing one row at once the store lets one through and
the other computes again from the new row (coordinator.py retries).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from miniupi.contract.store import Expect, Put, Store, read, read_many
from miniupi.states import TxnState

TXNS = "txns"
Change = tuple[list[Put], list[Expect]]  # puts, and what they expect of the rows they replace


@dataclass(slots=True)
class Tally:
    committed: int = 0  # the sum of the committed payments, as durable
    in_flight: dict[str, int] = field(default_factory=dict)  # admitted txn id -> amount, until durably decided
    committing: dict[str, int] = field(default_factory=dict)  # of those, the ones whose COMMITTED is being written
    ids: list[str] = field(default_factory=list)  # every payment counted here, oldest first (if kept)

    @property
    def counted(self) -> int:
        """Committed, plus everything admitted and not aborted."""
        return self.committed + sum(self.in_flight.values())


class Tallies:
    """The tallies of one table of rows ({"committed": minor, ["ids": [...]], ["deciding": {...}]})."""

    def __init__(self, table: str, store: Store | None, cache: int, keep_ids: bool = False,
                 shared: bool = False) -> None:
        self.table, self.shared = table, shared
        self._store = store
        self._keep_ids = keep_ids
        self._busy: dict[str, Tally] = {}  # something in flight
        self._idle: OrderedDict[str, Tally] = OrderedDict()  # nothing in flight: as the row, cached
        self._cache = cache

    def look(self, key: str) -> Tally:
        """The tally, for reading: memory's, else the row's (not kept)."""
        if self.shared:
            return self._shared(key)[1]
        tally = self._busy.get(key)
        if tally is None:
            tally = self._idle.get(key)
        return tally if tally is not None else self._read(key)

    def count(self, key: str, txn_id: str, amount: int, check: Callable[[Tally], None] = lambda t: None) -> None:
        """Run `check` on the tally (it raises a refusal), then count the payment as in flight."""
        tally = self._take(key)
        try:
            check(tally)
        except BaseException:
            self._settle(key, tally)
            raise
        tally.in_flight[txn_id] = amount
        self._name(tally, txn_id)

    def uncount(self, key: str, txn_id: str) -> None:
        """A payment counted but never recorded: it was not, and its id goes."""
        tally = self._busy.get(key)
        if tally is None or txn_id not in tally.in_flight:
            return
        del tally.in_flight[txn_id]
        tally.committing.pop(txn_id, None)
        if self._keep_ids and txn_id in tally.ids:
            tally.ids.remove(txn_id)
        self._settle(key, tally)

    def row(self, key: str, txn_id: str, amount: int, decision: TxnState) -> Put:
        """The row as it is once this decision is durable: a put for the decision's own batch.

        A payment not counted in this process (presumed abort at a restart) is counted first.
        """
        tally = self._take(key)
        if txn_id not in tally.in_flight:
            tally.in_flight[txn_id] = amount
            self._name(tally, txn_id)
        if decision == TxnState.COMMITTED:
            tally.committing[txn_id] = tally.in_flight[txn_id]
        # "v": the version gateways sharing the store expect (reserve, settle); one alone never needs more
        # than a row that has one, in case its store is shared later.
        value: dict[str, Any] = {"committed": tally.committed + sum(tally.committing.values()), "v": 0}
        if self._keep_ids:
            value["ids"] = list(tally.ids)
        others = {i: a for i, a in tally.committing.items() if i != txn_id}
        if others:  # commits on their way to the disk in other batches: see the module's docstring
            value["deciding"] = others
        return Put(self.table, key, value)

    def written(self, key: str, txn_id: str, decision: TxnState, durable: bool) -> None:
        """The decision's batch went down (`durable`), or failed: then the payment is still in flight."""
        tally = self._busy.get(key)
        if tally is None:
            return
        tally.committing.pop(txn_id, None)
        if not durable:
            return
        amount = tally.in_flight.pop(txn_id, 0)
        if decision == TxnState.COMMITTED:
            tally.committed += amount
        self._settle(key, tally)

    # -- gateways sharing the store: the row is the tally ----------------------------------------

    async def reserve(self, key: str, txn_id: str, amount: int,
                      check: Callable[[Tally], None] = lambda t: None) -> Change:
        """Run `check` on the row's tally, its held payments counted (it raises a refusal); then the
        change that holds this payment too."""
        row, tally = await self._ashared(key)
        check(tally)
        tally.in_flight[txn_id] = amount
        self._name(tally, txn_id)
        return self._rewrite(key, row, tally)

    async def settle(self, key: str, txn_id: str, amount: int, decision: TxnState) -> Change:
        """The change that ends the hold of a decided payment, counting it if it committed."""
        row, tally = await self._ashared(key)
        held = tally.in_flight.pop(txn_id, None)
        if decision == TxnState.COMMITTED:
            tally.committed += amount if held is None else held
        self._name(tally, txn_id)
        return self._rewrite(key, row, tally)

    def _shared(self, key: str) -> tuple[dict[str, Any] | None, Tally]:
        row = None if self._store is None else self._store.get(self.table, key)
        return row, _held(row, self._committed(row, self._deciding(row)))

    async def _ashared(self, key: str) -> tuple[dict[str, Any] | None, Tally]:
        """As _shared, its reads awaited: for reserve and settle, on every payment of a shared store."""
        row = None if self._store is None else await read(self._store, self.table, key)
        deciding = {} if row is None or "deciding" not in row else await read_many(
            self._store, TXNS, list(row["deciding"]))
        return row, _held(row, self._committed(row, deciding))

    def _rewrite(self, key: str, row: dict[str, Any] | None, tally: Tally) -> Change:
        version = 0 if row is None else int(row.get("v", 0))
        value: dict[str, Any] = {"committed": tally.committed, "held": tally.in_flight, "v": version + 1}
        if self._keep_ids:
            value["ids"] = tally.ids
        expect = Expect(self.table, key, None) if row is None else Expect(self.table, key, "v", row.get("v"))
        return [Put(self.table, key, value)], [expect]

    def _name(self, tally: Tally, txn_id: str) -> None:
        """Keep the payment's id in the tally's list, once, where the table keeps ids (refunds)."""
        if self._keep_ids and txn_id not in tally.ids:
            tally.ids.append(txn_id)

    def _read(self, key: str) -> Tally:
        row = None if self._store is None else self._store.get(self.table, key)
        if row is None:
            return Tally()
        return Tally(self._committed(row, self._deciding(row)), ids=list(row.get("ids", ())))

    def _deciding(self, row: dict[str, Any] | None) -> dict[str, Any]:
        """The records of the commits the row names as being written ({txn id: record}, present ones)."""
        if row is None or "deciding" not in row:
            return {}
        assert self._store is not None
        found = ((txn_id, self._store.get(TXNS, txn_id)) for txn_id in row["deciding"])
        return {txn_id: record for txn_id, record in found if record is not None}

    @staticmethod
    def _committed(row: dict[str, Any] | None, records: dict[str, Any]) -> int:
        """The row's committed sum, less the commits it names whose `records` do not say COMMITTED."""
        if row is None:
            return 0
        committed = int(row["committed"])
        for txn_id, amount in row.get("deciding", {}).items():
            record = records.get(txn_id)
            if record is None or record["state"] != TxnState.COMMITTED:
                committed -= int(amount)
        return committed

    def _take(self, key: str) -> Tally:
        """The tally, busy from now on (until `_settle`)."""
        tally = self._busy.get(key)
        if tally is None:
            tally = self._idle.pop(key, None)
            if tally is None:
                tally = self._read(key)
            self._busy[key] = tally
        return tally

    def _settle(self, key: str, tally: Tally) -> None:
        if tally.in_flight:
            return
        self._busy.pop(key, None)
        if self._cache <= 0:
            return
        self._idle[key] = tally
        self._idle.move_to_end(key)
        while len(self._idle) > self._cache:
            self._idle.popitem(last=False)


def _held(row: dict[str, Any] | None, committed: int) -> Tally:
    """A shared row's tally: its committed sum (as `_committed` gives it) and the payments it holds."""
    if row is None:
        return Tally()
    held = {txn_id: int(amount) for txn_id, amount in row.get("held", {}).items()}
    return Tally(committed, held, ids=list(row.get("ids", ())))
