"""Node logs: the call log's lines, and the file rotated by size without asking the file per line."""
from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from loguru import logger

from miniupi.errors import InsufficientFunds
from miniupi.logs import _SizeRotation
from miniupi.testing import DEFAULT_SPEC, LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc
from conftest import PASSWORD, open_account, running_cluster, wait_for


def test_the_log_rotates_past_its_size_and_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_text("x" * 150 + "\n")  # lines from before a restart count towards the first file
    sink = logger.add(path, format="{message}", rotation=_SizeRotation(400), buffering=1 << 16)
    try:
        for i in range(40):
            logger.info(f"line {i:02d} " + "y" * 40)
    finally:
        logger.remove(sink)
    files = sorted(tmp_path.glob("node*.log"))
    assert len(files) >= 5
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert sorted(line[:7] for line in lines if line.startswith("line")) == [f"line {i:02d}" for i in range(40)]
    assert all(f.stat().st_size <= 400 for f in files)


# -- the call log, as a running node writes it --------------------------------------------------

@pytest.fixture(scope="module", params=["text", "json"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    spec = copy.deepcopy(DEFAULT_SPEC)
    spec["cluster"]["log_json"] = request.param == "json"
    with running_cluster(tmp_path_factory.mktemp(f"logs-{request.param}"), spec) as c:
        yield c


def _call_lines(cluster: LocalCluster, node: str, needle: str) -> list[dict[str, str]]:
    """The node's call-log lines containing needle, as their key=value fields (text or JSON lines alike).

    The file is buffered while the node runs, so its stdout (cluster.log) is read too; a line
    found in both counts once.
    """
    path = cluster.config.node(node).data_dir / f"{node}.log"
    raw = (path.read_text().splitlines() if path.exists() else []) + cluster.log_path.read_text().splitlines()
    out = []
    for line in dict.fromkeys(line for line in raw if needle in line):
        if line.startswith("{"):
            record = json.loads(line)["record"]
            if record["extra"]["node"] == node:
                out.append({k: str(v) for k, v in record["extra"].items() if k != "node"})
            continue
        stamp, level, node_name, text = line[:23], line[24:31], *line[32:].split(" ", 1)
        if node_name != node:
            continue
        time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")  # the same layout as every other line
        assert level == "INFO   ", line
        out.append(dict(kv.split("=", 1) for kv in text.split(" ")))
    return out


def test_every_call_is_logged_once_with_its_caller_amount_status_and_latency(cluster: LocalCluster) -> None:
    payer, payee = open_account(cluster, "bank_a", 5_00), open_account(cluster, "bank_b", 0)
    paid, refused = str(uuid.uuid4()), str(uuid.uuid4())
    with cluster.client() as c:
        c.login(payer, PASSWORD)
        c.pay(payee, 2_00, txn_id=paid)
        with pytest.raises(InsufficientFunds):
            c.pay(payee, 9_00, txn_id=refused)

    def logged() -> list[dict[str, str]]:
        return _call_lines(cluster, "gateway", paid) + _call_lines(cluster, "gateway", refused)

    lines = wait_for("both Pay lines in the gateway's log file", lambda: len(logged()) == 2 and logged())
    ok, no = sorted(lines, key=lambda f: f["txn_id"] != paid)
    assert {k: ok[k] for k in ("method", "caller", "user", "amount", "code")} == \
        {"method": "Pay", "caller": "client", "user": payer, "amount": "200", "code": "OK"}
    assert {k: no[k] for k in ("method", "amount", "code")} == \
        {"method": "Pay", "amount": "900", "code": "FAILED_PRECONDITION"}
    assert float(ok["ms"]) > 0 and float(no["ms"]) > 0


def test_a_bank_logs_a_round_stream_once_when_it_ends(cluster: LocalCluster) -> None:
    """The gateway sends its rounds to a bank over one long-lived stream, which is one call: one
    line when it ends, not one per round. A stream of our own, as the gateway, shows that line."""
    before = len(_call_lines(cluster, "bank_a", "DecideAndPrepare"))
    with grpc.secure_channel(cluster.config.node("bank_a").address,
                             channel_credentials(cluster.config.certs_dir, "gateway")) as channel:
        rounds = [bank_pb2.DecideAndPrepareRequest(), bank_pb2.DecideAndPrepareRequest()]
        replies = list(bank_pb2_grpc.BankStub(channel).DecideAndPrepare(iter(rounds), timeout=10))
    assert len(replies) == 2
    # Each node's stdout is flushed on its own clock, so the bank's line may come a moment later.
    lines = wait_for("the stream's line in bank_a's log",
                     lambda: (found := _call_lines(cluster, "bank_a", "DecideAndPrepare"))[before:] and found)
    assert [(f["method"], f["caller"], f["code"]) for f in lines[before:]] == [("DecideAndPrepare", "gateway", "OK")]
