"""Every node's Prometheus endpoint, scraped in a real cluster: it parses, and its counters move by
exactly the payments made, with their outcomes and reasons (miniupi/plugins/metrics.py)."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from miniupi.errors import Aborted, AccountLocked, BadCredentials, InsufficientFunds, InvalidAmount
from miniupi.ops.testing import LocalCluster, free_ports
from conftest import PLUGIN_DIR, cluster_with_test_plugins, refusal, wait_for

sys.path.insert(0, str(PLUGIN_DIR))  # the nodes load it from PYTHONPATH; the test arms it directly
import faults  # noqa: E402

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    gateway, bank_a, bank_b = free_ports(3)
    spec = {"cluster": {"name": "metrics", "login_attempts": 2}, "gateway": {"metrics_port": gateway},
            "banks": {"bank_a": {"metrics_port": bank_a}, "bank_b": {"metrics_port": bank_b, "storage": "json"}},
            "plugins": {"load": ["faults"]}}
    accounts = {"bank_a": {"alice": ("10.00", "pw"), "carol": ("0", "pw")}, "bank_b": {"bob": ("0", "pw")}}
    with cluster_with_test_plugins(tmp_path_factory.mktemp("metrics"), spec, accounts=accounts) as c:
        yield c


def scrape(cluster: LocalCluster, node: str) -> Samples:
    """Every sample of the node's endpoint, parsed by prometheus_client's own parser."""
    config = cluster.config.node(node)
    with urllib.request.urlopen(f"http://{config.host}:{config.metrics_port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_every_node_serves_its_metrics_in_the_exposition_format(cluster: LocalCluster) -> None:
    for node in cluster.config.nodes:
        samples = scrape(cluster, node.name)
        assert value(samples, "miniupi_node_info", node=node.name, role=node.role) == 1
        assert ("miniupi_store_write_seconds_count", ()) in samples
        assert ("miniupi_store_write_items_count", ()) in samples
        assert (("miniupi_payments_total", (("kind", "payment"), ("outcome", "committed"), ("reason", ""))) in samples
                ) == (node.role == "gateway")
        assert (("miniupi_bank_votes_total", (("vote", "yes"),)) in samples) == (node.role == "bank")


def test_counters_move_by_exactly_the_payments_made_with_their_outcomes_and_reasons(cluster: LocalCluster) -> None:
    nodes = [n.name for n in cluster.config.nodes]
    before = {node: scrape(cluster, node) for node in nodes}
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        paid = [c.pay("bob@bank_b", 100).txn_id for _ in range(3)]
        c.pay("carol@bank_a", 50)  # within one bank: one prepare, to bank_a alone
        for _ in range(2):
            assert isinstance(refusal(lambda: c.pay("bob@bank_b", 100_000)), InsufficientFunds)
        assert isinstance(refusal(lambda: c.pay("bob@bank_b", 0)), InvalidAmount)  # refused before any 2PC
        c.pay("bob@bank_b", 100, txn_id=paid[0])  # a resend: answered from the record, not paid again
        c.login("bob@bank_b", "pw")
        c.refund(paid[1])
    decided = 3 + 1 + 2 + 1  # payments, the one within bank_a, the aborted two, the refund

    def acknowledged() -> bool:
        now = scrape(cluster, "gateway")
        return (value(now, "miniupi_decisions_unacknowledged") == 0
                and moved(before["gateway"], now, "miniupi_2pc_phase_seconds_count", phase="phase2") == decided)

    wait_for("every decision acknowledged", acknowledged)
    after = {node: scrape(cluster, node) for node in nodes}
    g0, g1 = before["gateway"], after["gateway"]
    payments = "miniupi_payments_total"
    assert moved(g0, g1, payments, outcome="committed", reason="", kind="payment") == 4
    assert moved(g0, g1, payments, outcome="committed", reason="", kind="refund") == 1
    assert moved(g0, g1, payments, outcome="aborted", reason="INSUFFICIENT_FUNDS", kind="payment") == 2
    assert moved(g0, g1, payments, outcome="refused", reason="INVALID_AMOUNT", kind="payment") == 1
    assert sum(v for (name, _), v in g1.items() if name == payments) - sum(
        v for (name, _), v in g0.items() if name == payments) == 8
    assert moved(g0, g1, "miniupi_repeated_ids_total") == 1
    assert moved(g0, g1, "miniupi_payment_seconds_count") == decided
    for phase in ("prepare", "decision_write", "phase2"):
        assert moved(g0, g1, "miniupi_2pc_phase_seconds_count", phase=phase) == decided
    assert moved(g0, g1, "miniupi_bank_prepare_seconds_count", bank="bank_a") == 7  # every payment touches bank_a
    assert moved(g0, g1, "miniupi_bank_prepare_seconds_count", bank="bank_b") == 6  # all but the one within bank_a
    assert value(g1, "miniupi_payments_in_flight") == 0 and value(g1, "miniupi_sessions_live") >= 1
    assert value(g1, "miniupi_payment_seconds_sum") > moved(g0, g1, "miniupi_2pc_phase_seconds_sum",
                                                             phase="decision_write") > 0
    # bank_a: alice's 4 payments and the refund's credit vote YES, the two too large NO; bank_b holds
    # the credits of 5 payments (2 of them aborted) and the refund's debit.
    a0, a1, b0, b1 = before["bank_a"], after["bank_a"], before["bank_b"], after["bank_b"]
    assert (moved(a0, a1, "miniupi_bank_votes_total", vote="yes"), moved(a0, a1, "miniupi_bank_votes_total", vote="no")
            ) == (5, 2)
    assert (moved(a0, a1, "miniupi_bank_decisions_total", decision="committed"),
            moved(a0, a1, "miniupi_bank_decisions_total", decision="aborted")) == (5, 0)
    assert (moved(b0, b1, "miniupi_bank_votes_total", vote="yes"), moved(b0, b1, "miniupi_bank_votes_total", vote="no")
            ) == (6, 0)
    assert (moved(b0, b1, "miniupi_bank_decisions_total", decision="committed"),
            moved(b0, b1, "miniupi_bank_decisions_total", decision="aborted")) == (4, 2)
    for node in nodes:  # every node wrote durably, and each write held at least one writer's batch
        writes = moved(before[node], after[node], "miniupi_store_write_items_count")
        assert writes > 0 and moved(before[node], after[node], "miniupi_store_write_items_sum") >= writes


def test_a_payment_a_plugin_vetoes_counts_once_as_aborted_never_as_refused(cluster: LocalCluster) -> None:
    before = scrape(cluster, "gateway")
    faults.arm(cluster.config.data_dir, {"node": "gateway", "point": "before_prepare", "action": "raise"})
    with cluster.client() as c:
        c.login("alice@bank_a", "pw")
        assert refusal(lambda: c.pay("bob@bank_b", 1)).reason == Aborted.reason
    assert faults.fired(cluster.config.data_dir)
    after = scrape(cluster, "gateway")
    assert moved(before, after, "miniupi_payments_total", outcome="aborted", reason="PAYMENT_ABORTED",
                 kind="payment") == 1
    assert sum(v for (name, _), v in after.items() if name == "miniupi_payments_total") - sum(
        v for (name, _), v in before.items() if name == "miniupi_payments_total") == 1
    assert moved(before, after, "miniupi_2pc_phase_seconds_count", phase="prepare") == 0  # no bank was asked


def test_logins_refused_for_a_locked_account_are_counted_as_lockouts(cluster: LocalCluster) -> None:
    before = scrape(cluster, "gateway")
    with cluster.client() as c:
        # login_attempts = 2: the second wrong password locks the account, and says so.
        wrong = [refusal(lambda: c.login("carol@bank_a", "wrong")) for _ in range(2)]
        locked = [refusal(lambda: c.login("carol@bank_a", "pw")) for _ in range(2)]
    assert [type(e) for e in wrong + locked] == [BadCredentials, AccountLocked, AccountLocked, AccountLocked]
    assert moved(before, scrape(cluster, "gateway"), "miniupi_lockouts_total") == 3


def test_the_endpoint_listens_on_the_nodes_host_alone(cluster: LocalCluster) -> None:
    """The socket is bound to 127.0.0.1 itself, not to every address (0.0.0.0 or ::)."""
    listening = _listening_addresses()
    for node in cluster.config.nodes:
        assert listening.get(node.metrics_port) == {"127.0.0.1"}, (node.name, listening.get(node.metrics_port))


def _listening_addresses() -> dict[int, set[str]]:
    """Port -> the addresses listened on, from the kernel's tables (Linux)."""
    found: dict[int, set[str]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host order (little-endian here).
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.setdefault(int(port, 16), set()).add(socket.inet_ntop(family, raw))
    return found


def test_a_metrics_port_in_use_stops_the_node_before_it_serves_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = {"cluster": {}, "gateway": {"metrics_port": port}, "banks": {"bank_a": {}}}
        with pytest.raises(RuntimeError) as e:
            LocalCluster(tmp_path, spec, accounts={"bank_a": {}}).start()
    assert f"gateway failed to start: gateway: cannot serve metrics on 127.0.0.1:{port}: " in str(e.value)


def test_a_bad_metrics_port_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(tomli_w.dumps({"cluster": {"data_dir": str(tmp_path / "data")},
                                   "gateway": {"port": 1, "metrics_port": 99999}, "banks": {"bank_a": {"port": 2}}}))
    run = subprocess.run([sys.executable, "-m", "miniupi", "run", str(path)], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [f"miniupi: {path}: key 'gateway.metrics_port': expected a port number from "
                                       "1 to 65535"]
    assert not (tmp_path / "data").exists()


def test_the_operations_guide_lists_exactly_the_metrics_the_nodes_serve(cluster: LocalCluster) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
    section = text[text.index("\n## Metrics\n"):text.index("\n## Troubleshooting\n")]
    listed = set(re.findall(r"^\| `(miniupi_\w+)` \|", section, re.MULTILINE))
    served = {re.sub(r"_(bucket|count|sum)$", "", name) for node in ("gateway", "bank_a")
              for name, _ in scrape(cluster, node) if name.startswith("miniupi_")}
    assert listed == served
