"""Generate miniupi/v1 from proto/miniupi/v1: the one way the wire code is made.

Run `python scripts/gen_proto.py` after editing a .proto file;
tests/test_proto_current.py fails while the checked-in code is stale.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    """Write the *_pb2*.py(i) files below out_dir/miniupi/v1 and return them."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("miniupi/v1/*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / "miniupi" / "v1").glob("*_pb2*.py*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write miniupi/v1 under")
    out = parser.parse_args().out
    for path in generate(out):
        print(path.relative_to(out))


if __name__ == "__main__":
    sys.exit(main())
