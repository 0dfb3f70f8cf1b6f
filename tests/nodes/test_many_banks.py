"""Five banks, both storage plugins, booted through the public `miniupi_cluster` fixture."""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from miniupi.client.api import AsyncClient, Client
from miniupi.ops.testing import LocalCluster, free_ports

pytestmark = pytest.mark.timeout(120)

CLUSTER_TOML = """\
[cluster]
name = "five"
prepare_timeout_s = 3
call_timeout_s = 3

[gateway]
storage = "sqlite"

[banks.bank_a]
storage = "sqlite"

[banks.bank_b]
storage = "json"

[banks.bank_c]
storage = "sqlite"

[banks.bank_d]
storage = "json"

[banks.bank_e]
storage = "json"
"""
BANKS = ["bank_a", "bank_b", "bank_c", "bank_d", "bank_e"]
# Two customers per bank, opened from setup files at first start.
OPENING = {bank: {f"first_{bank}": 100_00 + 10_00 * i, f"second_{bank}": 50_00 + i}
           for i, bank in enumerate(BANKS)}
PASSWORD = "five-banks"


@pytest.fixture
def cluster(miniupi_cluster: Callable[..., LocalCluster], tmp_path_factory: pytest.TempPathFactory) -> LocalCluster:
    path = tmp_path_factory.mktemp("five") / "five.toml"
    path.write_text(CLUSTER_TOML)
    accounts = {bank: {user: (f"{minor // 100}.{minor % 100:02d}", PASSWORD) for user, minor in users.items()}
                for bank, users in OPENING.items()}
    return miniupi_cluster(path, accounts=accounts)


def addresses() -> list[str]:
    return [f"{user}@{bank}" for bank, users in OPENING.items() for user in users]


def test_payments_between_five_banks_commit_and_conserve_money(cluster: LocalCluster) -> None:
    assert sorted(cluster.config.banks) == BANKS
    assert {b.storage for b in cluster.config.banks.values()} == {"sqlite", "json"}
    expected = {f"{user}@{bank}": minor for bank, users in OPENING.items() for user, minor in users.items()}
    total = sum(expected.values())
    clients: dict[str, Client] = {}
    try:
        for account in addresses():
            clients[account] = cluster.client()
            clients[account].login(account, PASSWORD)
        assert {a: c.balance().balance for a, c in clients.items()} == expected

        # One by one: every ordered pair of banks, first customer to second customer,
        # plus payments inside each bank.
        payments = []
        for n, (payer_bank, payee_bank) in enumerate(itertools.permutations(BANKS, 2)):
            payments.append((f"first_{payer_bank}@{payer_bank}", f"second_{payee_bank}@{payee_bank}", 1_00 + n))
        for bank in BANKS:
            payments.append((f"second_{bank}@{bank}", f"first_{bank}@{bank}", 2_22))
        for payer, payee, amount in payments:
            result = clients[payer].pay(payee, amount)
            assert result.state == "COMMITTED", (payer, payee, amount)
            expected[payer] -= amount
            expected[payee] += amount

        # Concurrently: every customer pays the next bank's first customer at once.
        sessions = {a: c.session for a, c in clients.items()}
        ring = {f"{user}@{bank}": f"first_{BANKS[(i + 1) % len(BANKS)]}@{BANKS[(i + 1) % len(BANKS)]}"
                for i, bank in enumerate(BANKS) for user in OPENING[bank]}

        async def pay_ring() -> list[object]:
            async_clients = [AsyncClient(cluster.config, session=sessions[a]) for a in ring]
            try:
                return await asyncio.gather(*(c.pay(ring[a], 3_33) for c, a in zip(async_clients, ring)),
                                            return_exceptions=True)
            finally:
                await asyncio.gather(*(c.close() for c in async_clients))

        results = asyncio.run(pay_ring())
        assert [getattr(r, "state", r) for r in results] == ["COMMITTED"] * len(ring)
        for payer, payee in ring.items():
            expected[payer] -= 3_33
            expected[payee] += 3_33

        balances = {a: c.balance() for a, c in clients.items()}
        assert {a: b.balance for a, b in balances.items()} == expected
        assert all(b.available == b.balance for b in balances.values()), balances
        assert sum(b.balance for b in balances.values()) == total
        assert all(b.balance >= 0 for b in balances.values())
        # Every payment appears once on each side, with opposite signs.
        deltas: dict[str, int] = {}
        for account, c in clients.items():
            history = c.history(limit=1000)
            assert sum(i.delta for i in history) == expected[account] - OPENING[account.split("@")[1]][
                account.split("@")[0]]
            for item in history:
                deltas[item.txn_id] = deltas.get(item.txn_id, 0) + item.delta
        assert len(deltas) == len(payments) + len(ring)
        assert set(deltas.values()) == {0}
    finally:
        for c in clients.values():
            c.close()


def test_a_sixteen_bank_cluster_gets_a_distinct_free_port_for_every_node(tmp_path: Path) -> None:
    spec = {"banks": {f"bank_{i}": {} for i in range(16)}, "gateway": {}}
    cluster = LocalCluster(tmp_path / "cluster", spec)  # configured, never started
    ports = [cluster.config.gateway.port, *(bank.port for bank in cluster.config.banks.values())]
    assert len(ports) == 17 and len(set(ports)) == 17
    assert len(set(free_ports(64))) == 64
