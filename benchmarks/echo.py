"""The transport alone: a raw gRPC echo over the same mTLS stack, for scale.

    python benchmarks/echo.py --concurrency 64 --calls 20000
    python benchmarks/echo.py --concurrency 1 --calls 2000 --stream

Server and client are separate processes on this machine, as in `miniupi
bench`, with certificates from a throw-away CA made by miniupi's own code.
Each payment costs the gateway one such call in and the banks a share of
batched calls, so payments/s divided by echo calls/s says how close the
payment path is to what gRPC over mTLS can do here. With --stream each
caller sends its calls as messages on one long-lived bidirectional
stream, as the gateway sends its rounds to a bank.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from miniupi.ops.bench import percentile
from miniupi.ops.certs import init_certs
from miniupi.config import parse_config
from miniupi.ops.testing import free_port
from miniupi.tls import channel_credentials, server_credentials

from cpu_per_payment import cpu_seconds

METHOD = "/bench.Echo/Echo"
STREAM_METHOD = "/bench.Echo/EchoStream"


def _identity(b: bytes) -> bytes:
    return b


async def _serve(certs_dir: Path, port: int, ready: mp.Event) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def echo_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request

    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, _identity, _identity),
        "EchoStream": grpc.stream_stream_rpc_method_handler(echo_stream, _identity, _identity)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(f"127.0.0.1:{port}", server_credentials(certs_dir, "gateway"))
    await server.start()
    ready.set()
    await server.wait_for_termination()


def _server_process(certs_dir: Path, port: int, ready: mp.Event) -> None:
    asyncio.run(_serve(certs_dir, port, ready))


async def _drive(certs_dir: Path, port: int, concurrency: int, calls: int, size: int,
                 stream: bool) -> dict[str, object]:
    creds = channel_credentials(certs_dir, "client")
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        call = channel.unary_unary(METHOD, request_serializer=_identity, response_deserializer=_identity)
        open_stream = channel.stream_stream(STREAM_METHOD, request_serializer=_identity,
                                            response_deserializer=_identity)
        payload = b"x" * size
        await call(payload, timeout=10)
        latencies: list[float] = []
        remaining = [calls]

        async def worker() -> None:
            messages = open_stream() if stream else None
            while remaining[0] > 0:
                remaining[0] -= 1
                start = time.perf_counter()
                if messages is None:
                    await call(payload, timeout=10)
                else:
                    await messages.write(payload)
                    await messages.read()
                latencies.append((time.perf_counter() - start) * 1000)
            if messages is not None:
                await messages.done_writing()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"calls": calls, "concurrency": concurrency, "stream": stream, "calls_per_s": round(calls / elapsed, 1),
            "latency_ms": {q: round(percentile(latencies, v), 3) for q, v in (("p50", .5), ("p99", .99))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--size", type=int, default=120, help="payload bytes (a PayRequest is about 120)")
    parser.add_argument("--stream", action="store_true", help="calls as messages on one stream per caller")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="miniupi-echo-"))
    cluster = parse_config({"cluster": {"certs_dir": str(root)}, "gateway": {"port": 1},
                            "banks": {"bank_a": {"port": 2}}}, root / "c.toml")
    init_certs(cluster)
    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=_server_process, args=(root, port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit("echo server did not start")
        before = cpu_seconds(server.pid)
        result = asyncio.run(_drive(root, port, args.concurrency, args.calls, args.size, args.stream))
        result["server_cpu_ms_per_call"] = round((cpu_seconds(server.pid) - before) / args.calls * 1000, 3)
        print(json.dumps(result))
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
