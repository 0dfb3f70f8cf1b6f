"""miniupi: a small, readable, distributed payment gateway."""
import os

__version__ = "0.1.0"

# gRPC's newer EventEngine endpoints read and write each socket on threads
# of their own, so every message costs one more thread hop before the
# completion-queue poller and the event loop see it. The older endpoints
# read on the poller thread itself. On two cores shared by a gateway, its
# banks and the load, every payment waits for a dozen such wake-ups in a
# row; alternated runs are in docs/BENCHMARKS.md. gRPC reads this variable once,
# when it is first imported, and every entry point imports this package
# before grpc. The names are checked against the pinned grpcio by
# tests/test_grpc_experiments.py; a value already set by the operator wins.
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
