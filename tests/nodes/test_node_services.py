"""Every node serves the standard health and reflection services over mTLS."""
from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from miniupi.ops.testing import is_serving
from miniupi.tls import channel_credentials


def _services(cluster, address: str) -> set[str]:
    creds = channel_credentials(cluster.certs_dir, "admin")
    with grpc.secure_channel(address, creds) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    return {s.name for s in replies[0].list_services_response.service}


def test_each_node_answers_health_and_lists_its_services_by_reflection(miniupi_cluster) -> None:
    cluster = miniupi_cluster()
    config = cluster.config
    expected = {"gateway": "miniupi.v1.Gateway", "bank_a": "miniupi.v1.Bank", "bank_b": "miniupi.v1.Bank"}
    for node in config.nodes:
        assert is_serving(node)
        services = _services(config, node.address)
        assert {expected[node.name], "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    cluster.stop_node("bank_b")
    assert not is_serving(config.banks["bank_b"], timeout=1)
