"""The checked-in wire code is exactly what scripts/gen_proto.py makes from proto/."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "miniupi" / "v1").glob("*_pb2*.py*")}
    current = {p.name: p.read_bytes() for p in (ROOT / "miniupi" / "v1").glob("*_pb2*.py*")}
    assert fresh, "the generator wrote nothing"
    assert sorted(fresh) == sorted(current), "generated files differ: run `make proto`"
    stale = [name for name in fresh if fresh[name] != current[name]]
    assert not stale, f"stale generated code {stale}: run `make proto`"


def test_every_proto_service_is_implemented() -> None:
    from miniupi.nodes.bank import BankServicer
    from miniupi.nodes.gateway import GatewayServicer
    from miniupi.v1 import bank_pb2, gateway_pb2

    for servicer, module, service in ((BankServicer, bank_pb2, "Bank"), (GatewayServicer, gateway_pb2, "Gateway")):
        for method in module.DESCRIPTOR.services_by_name[service].methods:
            assert method.name in servicer.__dict__, f"{service}.{method.name} is not implemented"
