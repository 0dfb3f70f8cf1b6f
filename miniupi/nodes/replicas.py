"""Gateways that share one store: every payment has one owner, and a lapsed owner's payments are taken over.

Several gateways may run against one store (PostgreSQL) so that any of them
serves any client and the death of one stops nobody. No gateway leads; the
store's row locks decide everything that two of them could do at once:

- **An id is taken by an insert.** The INITIATED record goes down with the
  expectation that the id is absent (contract/store.py, Expect), so of two
  gateways given one id at once exactly one runs its 2PC; the other reads
  the record and answers with its decision once the store holds it.
- **A payment's "unfinished" row names its owner**, the gateway that runs
  it, and every decision is written with the expectation that this gateway
  still owns it: a compare under the row's lock. A gateway that was paused
  and lost a payment cannot decide it, whatever its clock says (fencing by
  the store); it answers with the decision of the gateway that took over.
- **Each gateway holds a lease**: a row of "leases" with the Unix time until
  which it is alive, renewed every lease_s / 3. Every gateway looks every
  lease_s / 3 for leases that lapsed and claims their unfinished payments
  (Store.claim: FOR UPDATE SKIP LOCKED, so two survivors never claim one),
  then finishes them: the decision resent to the banks until acknowledged
  for the decided, as a restart would; phase 1 run again from the record
  for the undecided, where a restart presumes abort, so that a client
  resending its id to a survivor gets the payment it asked for. A gateway
  stopping cleanly ends its lease at once, so the others take over without
  waiting for it to lapse.
- **A bank's GetDecision is answered by any gateway**, from the store.

Clocks only decide how soon a payment is taken over, never whether money
moves twice: a payment taken over from an owner still alive (paused, or
cut off from the store) is decided by the taker alone, because the owner's
own decision write then fails.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from loguru import logger

from miniupi.contract.store import Put, read_table
from miniupi.nodes.coordinator import Coordinator
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.txn_index import UNFINISHED

LEASES = "leases"  # gateway name -> {"until": Unix time, "host", "pid"}
CLAIM_AT_ONCE = 500  # unfinished payments claimed per store call


def owned(unfinished: Mapping[str, Any], owner: str) -> list[str]:
    """The ids of the "unfinished" rows that name `owner` (what its restart finishes itself)."""
    return [txn_id for txn_id, row in unfinished.items() if isinstance(row, dict) and row.get("owner") == owner]


def lapsed(leases: Iterable[tuple[str, Any]], me: str, now: float) -> list[str]:
    """The other gateways whose lease ran out before `now`."""
    return [name for name, row in leases
            if name != me and isinstance(row, dict) and float(row.get("until", 0)) < now]


class Replica:
    """One gateway's lease, and its watch over the others' (see the module's docstring)."""

    def __init__(self, name: str, commit: GroupCommit, coordinator: Coordinator, lease_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.name, self.lease_s = name, lease_s
        self._commit, self._coordinator, self._clock = commit, coordinator, clock
        self._task: asyncio.Task[None] | None = None
        self.taken_over = 0  # payments this gateway took over, for tests and logs

    async def start(self) -> None:
        """Hold the lease before serving, then keep it and watch the others."""
        await self.renew()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def renew(self, until: float | None = None) -> None:
        until = self._clock() + self.lease_s if until is None else until
        await self._commit.write([Put(LEASES, self.name, {"until": until, "host": socket.gethostname(),
                                                          "pid": os.getpid()})])

    async def take_over(self) -> int:
        """Claim and finish the unfinished payments of every gateway whose lease lapsed; how many."""
        gone = lapsed(await read_table(self._commit.store, LEASES), self.name, self._clock())
        if not gone:
            return 0
        total = 0
        while rows := await self._commit.claim(UNFINISHED, "owner", gone, self.name, CLAIM_AT_ONCE):
            undecided, resent = await self._coordinator.take_over([txn_id for txn_id, _ in rows])
            total += len(rows)
            logger.warning("took over {} payments of {} (lease lapsed): {} undecided run again from phase 1, "
                           "{} decisions being resent", len(rows), ", ".join(gone), undecided, resent)
            if len(rows) < CLAIM_AT_ONCE:
                break
        self.taken_over += total
        return total

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
                await self.take_over()
            except Exception as e:  # the store away: the next round tries again
                logger.error("gateway lease or takeover failed: {!r}", e)

    async def close(self) -> None:
        """Stop renewing, and end the lease now: the others take over what is unfinished at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.renew(until=0.0)
        except Exception as e:
            logger.warning("could not end the lease at stop ({!r}); the others wait for it to lapse", e)
