"""What one DecideAndPrepare round costs a bank, by batch size.

    .venv/bin/python benchmarks/bank_call_cost.py --batch 1 --rounds 1000

Boots a two-bank cluster, then sends bank_0 rounds directly with the
gateway's certificate over one stream, as the gateway does, one round at
a time: a batch of prepares, then a batch of the matching commits.
Reports the bank process's CPU per round and per payment, to set beside
benchmarks/echo.py's server CPU per call.
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

from miniupi.ops.bench import bench_spec, open_bench_accounts
from miniupi.ops.testing import LocalCluster
from miniupi.tls import channel_credentials
from miniupi.v1 import bank_pb2, bank_pb2_grpc

from cpu_per_payment import cpu_seconds


async def drive(cluster: LocalCluster, batch: int, rounds: int) -> dict[str, float]:
    payees = await open_bench_accounts(cluster.config, 100)
    names = payees["bank_0"]
    creds = channel_credentials(cluster.config.certs_dir, "gateway")
    async with grpc.aio.secure_channel(cluster.config.banks["bank_0"].address, creds) as channel:
        stream = bank_pb2_grpc.BankStub(channel).DecideAndPrepare()

        async def round_trip(request: bank_pb2.DecideAndPrepareRequest) -> bank_pb2.DecideAndPrepareReply:
            await stream.write(request)
            return await stream.read()

        pid = cluster.supervisor.pid("bank_0")
        before, start = cpu_seconds(pid), time.perf_counter()
        for _ in range(rounds // 2):
            ids = [str(uuid.uuid4()) for _ in range(batch)]
            votes = await round_trip(bank_pb2.DecideAndPrepareRequest(prepares=[
                bank_pb2.PrepareRequest(txn_id=i, currency=cluster.config.currency, legs=[
                    bank_pb2.Leg(account=names[k % len(names)], delta_minor=-1, counterparty="x@bank_1")])
                for k, i in enumerate(ids)]))
            if not all(v.yes for v in votes.votes):
                raise SystemExit(f"a prepare was refused: {votes}")
            await round_trip(bank_pb2.DecideAndPrepareRequest(
                decisions=[bank_pb2.Decision(txn_id=i, commit=True) for i in ids]))
        await stream.done_writing()
        used, elapsed = cpu_seconds(pid) - before, time.perf_counter() - start
    done = rounds // 2 * 2
    return {"batch": batch, "rounds": done, "rounds_per_s": round(done / elapsed, 1),
            "bank_cpu_ms_per_round": round(used / done * 1000, 3),
            "bank_cpu_ms_per_payment": round(used / (done // 2 * batch) * 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="payments per call")
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    with LocalCluster(Path(tempfile.mkdtemp(prefix="miniupi-bankcall-")), bench_spec(2, "sqlite")) as cluster:
        print(json.dumps(asyncio.run(drive(cluster, args.batch, args.rounds))))


if __name__ == "__main__":
    main()
