"""`miniupi audit` on a live cluster: the nodes' streams joined by id, and the ids read again."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from miniupi.ops import audit
from miniupi.ops.testing import LocalCluster

ALICE, BOB, CAROL = "alice@bank_a", "bob@bank_b", "carol@bank_a"
EARLY = "00000000-0000-4000-8000-000000000001"  # lower than every other id here
PAID = "88888888-0000-4000-8000-000000000001"
ALSO_PAID = "99999999-0000-4000-8000-000000000001"
LATE = "ffffffff-0000-4000-8000-000000000001"  # higher than every other id here


def test_a_refund_on_either_side_of_its_original_and_a_paid_request_pass_and_only_the_passed_original_is_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[tuple[set[str], set[str]]] = []
    look_up = audit._look_up

    async def spy(cluster, txn_ids, request_ids, timeout):  # type: ignore[no-untyped-def]
        looked_up.append((set(txn_ids), set(request_ids)))
        return await look_up(cluster, txn_ids, request_ids, timeout)

    monkeypatch.setattr(audit, "_look_up", spy)
    with LocalCluster(tmp_path) as cluster:
        clients = {}
        for account in (ALICE, BOB, CAROL):
            clients[account] = cluster.client()
            clients[account].register(account, "pw", initial=100_00)
            clients[account].login(account, "pw")
        try:
            clients[ALICE].pay(BOB, 50_00, txn_id=PAID)
            clients[ALICE].pay(BOB, 30_00, txn_id=ALSO_PAID)
            clients[BOB].refund(PAID, 10_00, refund_id=EARLY)  # met before its original: kept when reached
            clients[BOB].refund(ALSO_PAID, 20_00, refund_id=LATE)  # met after it: its original is read again
            asked = clients[CAROL].request_money(BOB, 5_00)
            clients[BOB].approve(asked.request_id)
            report = asyncio.run(audit.audit(cluster.config, settle_s=10))
        finally:
            for client in clients.values():
                client.close()
    assert report.ok, report.violations
    assert (report.committed, report.refunds, report.requests, report.accounts) == (5, 2, 1, 3)
    assert looked_up and all(ids == ({ALSO_PAID}, set()) for ids in looked_up)  # once per reading
    assert report.total == report.issued == 300_00
