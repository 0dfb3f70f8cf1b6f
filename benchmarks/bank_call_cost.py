"""What one DecideAndPrepare call costs a bank, by batch size.

    .venv/bin/python benchmarks/bank_call_cost.py --batch 1 --calls 1000

Boots a two-bank cluster, then calls bank_0 directly with the gateway's
certificate, one call at a time: a batch of prepares, then a batch of the
matching commits. Reports the bank process's CPU per call and per payment,
to set beside benchmarks/echo.py's server CPU per call.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from miniupi.bench import bench_spec, open_bench_accounts
from miniupi.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc

from cpu_per_payment import cpu_seconds


async def drive(cluster: LocalCluster, batch: int, calls: int) -> dict[str, float]:
    payees = await open_bench_accounts(cluster.config, 100)
    names = payees["bank_0"]
    creds = channel_credentials(cluster.config.certs_dir, "gateway")
    async with grpc.aio.secure_channel(cluster.config.banks["bank_0"].address, creds) as channel:
        stub = bank_pb2_grpc.BankStub(channel)
        pid = cluster.supervisor.pid("bank_0")
        before, start = cpu_seconds(pid), time.perf_counter()
        for _ in range(calls // 2):
            ids = [str(uuid.uuid4()) for _ in range(batch)]
            votes = await stub.DecideAndPrepare(bank_pb2.DecideAndPrepareRequest(prepares=[
                bank_pb2.PrepareRequest(txn_id=i, currency=cluster.config.currency, legs=[
                    bank_pb2.Leg(account=names[k % len(names)], delta_minor=-1, counterparty="x@bank_1")])
                for k, i in enumerate(ids)]))
            if not all(v.yes for v in votes.votes):
                raise SystemExit(f"a prepare was refused: {votes}")
            await stub.DecideAndPrepare(bank_pb2.DecideAndPrepareRequest(
                decisions=[bank_pb2.Decision(txn_id=i, commit=True) for i in ids]))
        used, elapsed = cpu_seconds(pid) - before, time.perf_counter() - start
    done = calls // 2 * 2
    return {"batch": batch, "calls": done, "calls_per_s": round(done / elapsed, 1),
            "bank_cpu_ms_per_call": round(used / done * 1000, 3),
            "bank_cpu_ms_per_payment": round(used / (done // 2 * batch) * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="payments per call")
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    with LocalCluster(Path(tempfile.mkdtemp(prefix="miniupi-bankcall-")), bench_spec(2, "sqlite")) as cluster:
        print(json.dumps(asyncio.run(drive(cluster, args.batch, args.calls))))


if __name__ == "__main__":
    main()
