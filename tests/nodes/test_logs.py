"""Node logs: the call log's lines, and the file rotated by size without asking the file per line."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from loguru import logger

from miniupi.errors import InsufficientFunds
from miniupi.nodes import logs
from miniupi.nodes.logs import LINE_FORMAT, MAX_HELD_LINES, _CallLines, _SizeRotation
from miniupi.ops.testing import DEFAULT_SPEC, LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, gateway_pb2
from conftest import PASSWORD, open_account, wait_for


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


def test_call_lines_go_to_loguru_together_and_never_after_a_later_record() -> None:
    lines = _CallLines()
    messages: list[str] = []
    sink = logger.add(messages.append, format=LINE_FORMAT)
    logger.configure(patcher=lines.before_record)
    try:
        with logger.contextualize(node="n"):
            lines.add("method=A")
            lines.add("method=B")
            assert messages == []  # held for the next flush
            logger.warning("the disk is full")
            lines.add("method=C")
            lines.flush()
    finally:
        logger.configure(patcher=lambda record: None)
        logger.remove(sink)
    assert [m.count("method=") for m in messages] == [2, 0, 1]  # A and B as one message
    assert [m.split("method=")[1][0] if "method=" in m else "W" for m in messages] == ["A", "W", "C"]
    assert "the disk is full" in messages[1]


def test_call_lines_held_past_the_limit_go_at_once() -> None:
    lines = _CallLines()
    messages: list[str] = []
    sink = logger.add(messages.append, format=LINE_FORMAT)
    try:
        with logger.contextualize(node="n"):
            for i in range(MAX_HELD_LINES + 1):
                lines.add(f"method=M{i}")
    finally:
        logger.remove(sink)
    assert [m.count("method=") for m in messages] == [MAX_HELD_LINES]  # the last one waits for a flush


def test_the_flusher_outlives_a_broken_stdout_and_still_sends_call_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once supervisord's pipe is gone, stdout fails on every flush; the call lines must still reach
    the other sinks (the node's file), so the flusher must not end at the first failure."""
    def broken() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(logs._stdout, "flush", broken)
    messages: list[str] = []
    sink = logger.add(messages.append, format=LINE_FORMAT)

    async def scenario() -> bool:
        flusher = asyncio.create_task(logs.flush_logs_periodically())
        with logger.contextualize(node="n"):
            logs._call_lines.add("method=Before")
            await asyncio.sleep(2.5 * logs.FLUSH_EVERY_S)
            logs._call_lines.add("method=After")
            await asyncio.sleep(2.5 * logs.FLUSH_EVERY_S)
        alive = not flusher.done()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await flusher
        return alive

    try:
        alive = asyncio.run(scenario())
    finally:
        logger.remove(sink)
    assert alive
    assert [m.split("method=")[1].strip() for m in messages if "method=" in m] == ["Before", "After"]


# -- the call log, as a running node writes it --------------------------------------------------

@pytest.fixture(scope="module", params=["text", "json"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    spec = copy.deepcopy(DEFAULT_SPEC)
    spec["cluster"]["log_json"] = request.param == "json"
    with LocalCluster(tmp_path_factory.mktemp(f"logs-{request.param}"), spec) as c:
        yield c


def _call_lines(cluster: LocalCluster, node: str, needle: str) -> list[dict[str, str]]:
    """The node's call-log lines containing needle, as their key=value fields (text or JSON lines alike).

    The file is buffered while the node runs, so its stdout (cluster.log) is read too; a line
    counts as often as the source holding more of it has it. (Two rounds of one stream can log
    identical lines within a millisecond: counting each distinct line once lost one of them.)
    """
    path = cluster.config.node(node).data_dir / f"{node}.log"
    in_file = [line for line in (path.read_text().splitlines() if path.exists() else []) if needle in line]
    in_stdout = [line for line in cluster.log_path.read_text().splitlines() if needle in line]
    file_count, stdout_count = Counter(in_file), Counter(in_stdout)
    out = []
    for line in (line for line in dict.fromkeys(in_file + in_stdout)
                 for _ in range(max(file_count[line], stdout_count[line]))):
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
    # The gateway's rounds to a bank go over one long-lived stream; each round is a call and has
    # its line, naming no one transaction. Each node's stdout is flushed on its own clock, so the
    # bank's lines may reach cluster.log after the gateway's.
    rounds = wait_for("bank_a's DecideAndPrepare lines", lambda: _call_lines(cluster, "bank_a", "DecideAndPrepare"))
    assert {(f["method"], f["caller"], f["code"]) for f in rounds} == {("DecideAndPrepare", "gateway", "OK")}
    assert all(float(f["ms"]) > 0 for f in rounds)


def test_each_round_on_a_stream_is_logged_as_a_call(cluster: LocalCluster) -> None:
    """Two rounds and a malformed third on one stream of our own, as the gateway: three lines,
    the last with the status that ended the stream."""
    def logged() -> list[dict[str, str]]:
        return _call_lines(cluster, "bank_b", "method=DecideAndPrepare")

    # The gateway's rounds for the payments before this test may still be on their way to the log.
    counts = [len(logged())]
    while len(counts) < 3 or counts[-1] != counts[-3]:
        time.sleep(0.3)  # the nodes flush stdout every 0.2 s
        counts.append(len(logged()))
    before = counts[-1]
    # A well-formed round with a bad item is answered item by item; bytes that do not parse end it.
    refused_item = bank_pb2.DecideAndPrepareRequest(decisions=[bank_pb2.Decision(txn_id="not-a-uuid")])
    with grpc.secure_channel(cluster.config.node("bank_b").address,
                             channel_credentials(cluster.config.certs_dir, "gateway")) as channel:
        send = channel.stream_stream("/miniupi.v1.Bank/DecideAndPrepare")
        rounds = [bank_pb2.DecideAndPrepareRequest().SerializeToString(), refused_item.SerializeToString(), b"\xff\xff"]
        with pytest.raises(grpc.RpcError) as ended:
            list(send(iter(rounds), timeout=10))
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    lines = wait_for("three round lines in bank_b's log", lambda: len(found := logged()) >= before + 3 and found)
    assert [(f["method"], f["caller"], f["code"]) for f in lines[before:]] == [
        ("DecideAndPrepare", "gateway", "OK"), ("DecideAndPrepare", "gateway", "OK"),
        ("DecideAndPrepare", "gateway", "INVALID_ARGUMENT")]


def test_a_call_refused_by_a_check_is_logged_with_the_status_the_caller_got(cluster: LocalCluster) -> None:
    """Checks raise; the error door, outside the call log, sets the status after the line
    is written, so the line must say what the door sends: never UNKNOWN."""
    stranger = f"nobody{uuid.uuid4().hex[:12]}"
    got: dict[str, grpc.StatusCode] = {}
    with grpc.secure_channel(cluster.config.gateway.address,
                             channel_credentials(cluster.config.certs_dir, "client")) as channel:
        with pytest.raises(grpc.RpcError) as no_session:  # refused by the session check
            channel.unary_unary("/miniupi.v1.Gateway/Balance")(
                gateway_pb2.BalanceRequest(account=f"{stranger}@bank_a").SerializeToString(), timeout=10)
        got["gateway"] = no_session.value.code()
    with grpc.secure_channel(cluster.config.node("bank_a").address,
                             channel_credentials(cluster.config.certs_dir, "client")) as channel:
        with pytest.raises(grpc.RpcError) as not_the_gateway:  # refused by the core caller check
            channel.unary_unary("/miniupi.v1.Bank/GetAccount")(
                bank_pb2.AccountRequest(account=stranger).SerializeToString(), timeout=10)
        got["bank_a"] = not_the_gateway.value.code()
    assert got == {"gateway": grpc.StatusCode.UNAUTHENTICATED, "bank_a": grpc.StatusCode.PERMISSION_DENIED}
    for node, code in got.items():
        [line] = wait_for(f"the refused call in {node}'s log", lambda: _call_lines(cluster, node, stranger))
        assert line["code"] == code.name, line
