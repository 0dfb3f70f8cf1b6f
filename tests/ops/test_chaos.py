"""The bank workload under a seeded nemesis, short: every invariant holds after kills, pauses and restarts.

This is `make chaos` (benchmarks/chaos_run.py, where the workload, the nemesis
and the checker are described) for 30 seconds. The seed is random unless
CHAOS_SEED is set; it is printed with the command that replays the run,
and a failure message repeats it:

    CHAOS_SEED=7 .venv/bin/pytest tests/ops/test_chaos.py -s      # this test, seed 7
    make chaos DURATION=30 SEED=7                              # the same run from the command line
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from miniupi.ops.audit import BankView, GatewayTxnView
from miniupi.ops.postgres_server import LocalPostgres
from conftest import ROOT

# chaos_run.py is a tool beside the benchmarks (make chaos runs it); its workload and checker are tested here.
sys.path.insert(0, str(ROOT / "benchmarks"))
from chaos_run import FAULT_KINDS, PLUGIN_DIR, ChaosSettings, Op, report_text, run_chaos, verify  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def test_bank_workload_under_kills_pauses_and_restarts_keeps_every_invariant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))
    settings = ChaosSettings(duration_s=float(os.environ.get("CHAOS_DURATION", "30")), seed=seed)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))

    result = run_chaos(settings, tmp_path / "cluster")

    replay = f"replay: {settings.make_command()} (logs in {tmp_path / 'cluster'})"
    assert result.ok, f"{len(result.violations)} violations, seed {seed}:\n{report_text(result)}\n{replay}"
    payments, faults = result.summary["payments"], result.summary["faults"]
    # A run that tested nothing must not pass: payments went through, every kind of fault
    # landed, the gateway was hit, and every unknown payment got its final answer in the end.
    assert payments["ok"] >= 100, replay
    assert set(faults) == set(FAULT_KINDS), f"fault kinds injected: {faults}; {replay}"
    assert result.summary["faults_by_node"].get("gateway", 0) >= 1, replay
    assert payments["still_unknown"] == 0, replay
    assert result.summary["live_reads"].get("taken", 0) >= 1, replay


def test_bank_workload_with_two_gateways_on_postgres_under_kills_pauses_and_restarts_keeps_every_invariant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, miniupi_postgres: LocalPostgres) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))
    settings = ChaosSettings(duration_s=float(os.environ.get("CHAOS_DURATION", "30")), seed=seed, replicas=2)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])))

    result = run_chaos(settings, tmp_path / "cluster", postgres=miniupi_postgres)

    replay = f"replay: {settings.make_command()} (logs in {tmp_path / 'cluster'})"
    assert result.ok, f"{len(result.violations)} violations, seed {seed}:\n{report_text(result)}\n{replay}"
    payments, by_node = result.summary["payments"], result.summary["faults_by_node"]
    assert payments["ok"] >= 100, replay
    assert set(result.summary["faults"]) == set(FAULT_KINDS), replay
    assert by_node.get("gw1", 0) + by_node.get("gw2", 0) >= 2, replay  # the gateways were hit
    assert payments["still_unknown"] == 0, replay


# -- the checker itself, on hand-made readings: it must catch what it claims to ----------------

OPENING = 100_00
TXN = "5f0c3b3e-6c1a-4d51-9a53-0d6c2f8e7a10"


def reading(payer_state: str | None = "COMMITTED", payee_state: str | None = "COMMITTED", payer_balance: int = 70_00,
            payee_balance: int = 130_00, gateway_state: str = "COMMITTED"
            ) -> tuple[dict[str, GatewayTxnView], list[BankView]]:
    a = BankView("bank_a", deposits=OPENING, accounts={"acct0": (payer_balance, 0, OPENING)})
    b = BankView("bank_b", deposits=OPENING, accounts={"acct0": (payee_balance, 0, OPENING)})
    if payer_state:
        a.txns[TXN] = (payer_state, [("acct0", -30_00, "acct0@bank_b")])
    if payee_state:
        b.txns[TXN] = (payee_state, [("acct0", 30_00, "acct0@bank_a")])
    return {TXN: GatewayTxnView("acct0@bank_a", "acct0@bank_b", 30_00, gateway_state, True)}, [a, b]


def op(*answers: str) -> Op:
    o = Op(TXN, 0, "acct0@bank_a", "acct0@bank_b", 30_00, 0.0, list(answers))
    o.during_run = o.final = o.outcome()
    return o


def test_checker_passes_a_payment_applied_once_on_both_banks() -> None:
    assert verify([op("ok")], *reading(), OPENING) == []
    assert verify([op("unknown:Unavailable: gateway unreachable")], *reading(), OPENING) == []


def test_checker_passes_an_unknown_or_refused_payment_applied_nowhere() -> None:
    nothing = reading(None, None, OPENING, OPENING, "ABORTED")
    assert verify([op("unknown:Unavailable: gateway unreachable")], *nothing, OPENING) == []
    assert verify([op("failed:Aborted: payment aborted")], *nothing, OPENING) == []


def test_checker_catches_an_acknowledged_payment_that_was_lost() -> None:
    found = verify([op("ok")], *reading(None, None, OPENING, OPENING, "ABORTED"), OPENING)
    assert any("acknowledged but not applied" in v for v in found), found


def test_checker_catches_a_refused_payment_that_was_applied() -> None:
    found = verify([op("failed:InsufficientFunds: insufficient funds")], *reading(), OPENING)
    assert any("refused but applied" in v for v in found), found


def test_checker_catches_a_payment_applied_on_one_bank_only() -> None:
    found = verify([op("unknown:Unavailable: x")], *reading("COMMITTED", "ABORTED", 70_00, OPENING), OPENING)
    assert any("applied on some banks, not all" in v for v in found), found
    assert any("total money" in v for v in found), found


def test_checker_catches_a_payment_applied_twice() -> None:
    found = verify([op("ok")], *reading(payer_balance=40_00, payee_balance=160_00), OPENING)
    assert sum("applied exactly once" in v for v in found) == 2, found


def test_checker_catches_a_payment_nobody_sent_and_a_negative_balance() -> None:
    found = verify([], *reading(payer_balance=-30_00, payee_balance=230_00), OPENING)
    assert any("no client ever sent it" in v for v in found), found
    assert any("negative balance" in v for v in found), found


def test_checker_catches_one_id_with_two_different_answers() -> None:
    found = verify([op("ok", "failed:Aborted: payment aborted")], *reading(), OPENING)
    assert any("different definite answers" in v for v in found), found
