"""Flat cost, measured in pairs: 16 banks against 2, or many accounts against 1,000 per bank.

    .venv/bin/python benchmarks/flat_cost.py --vary banks --storage sqlite --pairs 4
    .venv/bin/python benchmarks/flat_cost.py --vary accounts --storage json --pairs 4
    .venv/bin/python benchmarks/flat_cost.py --vary million --pairs 4

`accounts` is 100,000 per bank (issue 6's bar), `million` 500,000 per bank,
1,000,000 in all (DESIGN.md section 9's).

This machine's throughput moves by a third within the hour, so two
figures taken minutes apart can show a gap that is only the neighbours'.
Each pair here runs the two clusters back to back (which one goes first
alternates), and the figure that counts is each pair's ratio: the larger
cluster's throughput over the smaller's. Prints one JSON line per run,
then the ratios and their median.
"""
from __future__ import annotations

import argparse
import json
import statistics

from bench_run import bench_json

VARIED = {
    "banks": (["--banks", "2"], ["--banks", "16"]),
    "accounts": (["--accounts", "1000"], ["--accounts", "100000"]),
    "million": (["--accounts", "1000"], ["--accounts", "500000"]),
}


def throughput(args: list[str]) -> float:
    result = bench_json(args)
    if result["failed"] or not result.get("audit_ok"):
        raise SystemExit(f"flat_cost: a run failed payments or its audit: {json.dumps(result)}")
    return float(result["throughput_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vary", choices=sorted(VARIED), required=True)
    parser.add_argument("--storage", default="sqlite")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--payments", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    common = ["--storage", args.storage, "--payments", str(args.payments), "--concurrency", str(args.concurrency)]
    small, large = VARIED[args.vary]
    ratios = []
    for pair in range(args.pairs):
        order = [("small", small), ("large", large)]
        if pair % 2:
            order.reverse()
        got = {}
        for which, extra in order:
            got[which] = throughput([*common, *extra, "--seed", str(7 + pair)])
            print(json.dumps({"pair": pair + 1, "cluster": " ".join(extra), "payments_per_s": got[which]}), flush=True)
        ratios.append(round(got["large"] / got["small"], 3))
    print(json.dumps({"vary": args.vary, "storage": args.storage, "ratios": ratios,
                      "median_ratio": round(statistics.median(ratios), 3)}))


if __name__ == "__main__":
    main()
