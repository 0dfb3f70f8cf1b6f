"""The gRPC transport settings miniupi makes at import are ones the pinned grpcio knows."""
from __future__ import annotations

import os
import subprocess
import sys

import miniupi


def import_grpc_after_miniupi(setting: str | None) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, as every node and client starts: miniupi first, then grpc."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if setting is not None:
        env["GRPC_EXPERIMENTS"] = setting
    return subprocess.run([sys.executable, "-c", "import miniupi, grpc, os; print(os.environ['GRPC_EXPERIMENTS'])"],
                          env=env, capture_output=True, text=True, check=True, timeout=60)


def test_every_experiment_named_is_known_to_grpc() -> None:
    out = import_grpc_after_miniupi(None)
    assert out.stdout.strip() == miniupi.GRPC_EXPERIMENTS
    assert "Unknown experiment" not in out.stderr, out.stderr


def test_an_operators_own_setting_wins_and_grpc_reports_a_name_it_lacks() -> None:
    out = import_grpc_after_miniupi("-event_engine_nonesuch")
    assert out.stdout.strip() == "-event_engine_nonesuch"
    assert "Unknown experiment: event_engine_nonesuch" in out.stderr
