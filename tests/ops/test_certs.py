"""Cluster certificates on disk, and mutual TLS over real gRPC connections."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from miniupi.ops.certs import cert_pem, identities, init_certs, issue_cert, key_pem, make_ca
from miniupi.config import ClusterConfig, ConfigError, parse_config
from miniupi.tls import CertsMissing, channel_credentials, peer_identity, server_credentials

TIMEOUT = 5.0
NODES = ["gateway", "bank_a", "bank_b"]
USERS = ["client", "admin", "treasury"]
NAMES = [*NODES, *USERS]


def make_cluster(certs_dir: Path) -> ClusterConfig:
    raw = {
        "cluster": {"certs_dir": str(certs_dir)},
        "gateway": {"host": "gw.example.test", "port": 7000},
        "banks": {"bank_a": {"host": "10.1.2.3", "port": 7001}, "bank_b": {"port": 7002}},
    }
    return parse_config(raw, Path("test.toml"))


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterConfig:
    return make_cluster(tmp_path / "certs")


def all_files(certs_dir: Path) -> set[Path]:
    return {certs_dir / "ca.pem", certs_dir / "ca.key"} | {
        certs_dir / f"{n}.{ext}" for n in NAMES for ext in ("pem", "key")
    }


def snapshot(certs_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in certs_dir.iterdir()}


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


# --- files on disk -----------------------------------------------------------------------------


def test_identities_are_nodes_then_tools(cluster: ClusterConfig) -> None:
    assert identities(cluster) == NAMES


def test_the_one_gateway_leaf_names_the_host_of_every_gateway_and_replicas_get_none_of_their_own(
        tmp_path: Path) -> None:
    cluster = parse_config({
        "cluster": {"certs_dir": str(tmp_path / "certs")},
        "gateways": {"gw1": {"host": "gw1.example.test", "port": 7000}, "gw2": {"host": "10.0.0.9", "port": 7000}},
        "banks": {"bank_a": {"host": "10.1.2.3", "port": 7001}},
    }, Path("test.toml"))
    assert identities(cluster) == ["gateway", "bank_a", *USERS]
    init_certs(cluster)
    names = sans(load_cert(cluster.certs_dir / "gateway.pem"))
    assert names[0] == x509.DNSName("gateway")
    assert x509.DNSName("gw1.example.test") in names and x509.IPAddress(ipaddress.ip_address("10.0.0.9")) in names
    assert x509.IPAddress(ipaddress.ip_address("10.1.2.3")) not in names  # the bank's host is the bank's
    assert not (cluster.certs_dir / "gw1.pem").exists() and not (cluster.certs_dir / "gw2.pem").exists()
    # A gateway added on a new host re-issues the leaf so it names that host too.
    grown = parse_config({**cluster.raw, "gateways": {**cluster.raw["gateways"],
                                                      "gw3": {"host": "gw3.example.test", "port": 7000}}},
                         Path("test.toml"))
    assert cluster.certs_dir / "gateway.pem" in init_certs(grown)
    assert x509.DNSName("gw3.example.test") in sans(load_cert(cluster.certs_dir / "gateway.pem"))


def test_init_creates_every_file_with_private_modes(cluster: ClusterConfig) -> None:
    written = init_certs(cluster)
    d = cluster.certs_dir
    assert set(written) == all_files(d) and len(written) == len(all_files(d))
    assert {p.name for p in d.iterdir()} == {p.name for p in all_files(d)}  # no stray temp files
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for path in d.glob("*.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_existing_dir_is_tightened_to_0700(cluster: ClusterConfig) -> None:
    cluster.certs_dir.mkdir(mode=0o755)
    cluster.certs_dir.chmod(0o755)
    init_certs(cluster)
    assert stat.S_IMODE(cluster.certs_dir.stat().st_mode) == 0o700


def test_second_call_writes_nothing(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    before = snapshot(cluster.certs_dir)
    assert init_certs(cluster) == []
    assert snapshot(cluster.certs_dir) == before


def test_deleting_one_leaf_recreates_only_it(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    before = snapshot(d)
    (d / "bank_a.pem").unlink()
    assert sorted(init_certs(cluster)) == sorted([d / "bank_a.pem", d / "bank_a.key"])
    after = snapshot(d)
    assert after["bank_a.key"] != before["bank_a.key"]  # a new key to go with the new certificate
    assert {k: v for k, v in after.items() if not k.startswith("bank_a.")} == {
        k: v for k, v in before.items() if not k.startswith("bank_a.")
    }


def test_force_recreates_everything(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    before = snapshot(cluster.certs_dir)
    assert set(init_certs(cluster, force=True)) == all_files(cluster.certs_dir)
    after = snapshot(cluster.certs_dir)
    assert all(after[name] != before[name] for name in before)


def test_new_ca_reissues_every_leaf(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    (d / "ca.key").unlink()
    assert set(init_certs(cluster)) == all_files(d)
    ca = load_cert(d / "ca.pem")
    for name in NAMES:
        load_cert(d / f"{name}.pem").verify_directly_issued_by(ca)


def test_leaf_from_another_ca_is_reissued(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    other_ca, other_key = make_ca("intruder CA")
    pem, key = issue_cert(other_ca, other_key, "client", ["localhost", "127.0.0.1", "::1"])
    (d / "client.pem").write_bytes(pem)
    (d / "client.key").write_bytes(key)
    assert sorted(init_certs(cluster)) == sorted([d / "client.pem", d / "client.key"])
    load_cert(d / "client.pem").verify_directly_issued_by(load_cert(d / "ca.pem"))


def test_leaf_with_mismatched_key_is_reissued(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    (d / "admin.key").write_bytes((d / "client.key").read_bytes())
    assert sorted(init_certs(cluster)) == sorted([d / "admin.pem", d / "admin.key"])


def test_new_extra_host_reissues_leaves(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    written = init_certs(cluster, extra_hosts=["node.example.test"])
    d = cluster.certs_dir
    assert set(written) == {d / f"{n}.{ext}" for n in NODES for ext in ("pem", "key")}  # users name no host
    assert x509.DNSName("node.example.test") in sans(load_cert(cluster.certs_dir / "gateway.pem"))


@pytest.mark.parametrize("host", ["gateway", "GATEWAY.", "bank_b", "treasury", "", "*.example.test"])
def test_a_host_spelt_like_an_identity_is_refused_and_writes_nothing(cluster: ClusterConfig, host: str) -> None:
    """Clients accept a server whose certificate names the identity anywhere: `--host gateway` on every
    node leaf would let bank_a's key pass for the gateway."""
    with pytest.raises(ConfigError, match="--host"):
        init_certs(cluster, extra_hosts=[host])
    assert not cluster.certs_dir.exists()


def test_a_node_leaf_naming_another_identity_is_reissued(cluster: ClusterConfig) -> None:
    """Such a leaf, made before hosts were checked, must not survive the next `certs init` or `miniupi run`."""
    init_certs(cluster)
    d = cluster.certs_dir
    ca = load_cert(d / "ca.pem")
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    pem, key = issue_cert(ca, ca_key, "bank_a", ["localhost", "127.0.0.1", "::1", "10.1.2.3", "Gateway."])  # type: ignore[arg-type]
    (d / "bank_a.pem").write_bytes(pem)
    (d / "bank_a.key").write_bytes(key)
    assert sorted(init_certs(cluster)) == sorted([d / "bank_a.pem", d / "bank_a.key"])
    assert x509.DNSName("Gateway.") not in sans(load_cert(d / "bank_a.pem"))


def test_user_side_leaf_from_before_roles_is_reissued_client_only(cluster: ClusterConfig) -> None:
    """A `client.pem` that could also serve, naming the loopback hosts, is what let a customer pose as a bank."""
    init_certs(cluster)
    d = cluster.certs_dir
    ca = load_cert(d / "ca.pem")
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    pem, key = issue_cert(ca, ca_key, "client", ["localhost", "127.0.0.1", "::1"])  # type: ignore[arg-type]
    (d / "client.pem").write_bytes(pem)
    (d / "client.key").write_bytes(key)
    assert sorted(init_certs(cluster)) == sorted([d / "client.pem", d / "client.key"])
    cert = load_cert(d / "client.pem")
    assert sans(cert) == [x509.DNSName("client")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]


def test_ca_is_a_ca(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    ca = load_cert(cluster.certs_dir / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > dt.timedelta(days=9 * 365)
    ca.verify_directly_issued_by(ca)


def test_leaves_are_signed_by_the_ca_and_name_their_identity_first(cluster: ClusterConfig) -> None:
    init_certs(cluster, extra_hosts=["extra.example.test", "192.0.2.7"])
    d = cluster.certs_dir
    ca = load_cert(d / "ca.pem")
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for name in NAMES:
        cert = load_cert(d / f"{name}.pem")
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        names = sans(cert)
        assert names[0] == x509.DNSName(name)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if name in USERS:  # client-only, and no host: it can serve as nothing
            assert names == [x509.DNSName(name)]
            assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        else:
            for expected in (
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
                x509.DNSName("extra.example.test"),
                x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
            ):
                assert expected in names, (name, expected)
            assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"
        key = serialization.load_pem_private_key((d / f"{name}.key").read_bytes(), password=None)
        assert key.public_key() == cert.public_key()
    assert x509.DNSName("gw.example.test") in sans(load_cert(d / "gateway.pem"))
    assert x509.IPAddress(ipaddress.ip_address("10.1.2.3")) in sans(load_cert(d / "bank_a.pem"))
    assert x509.IPAddress(ipaddress.ip_address("10.1.2.3")) not in sans(load_cert(d / "bank_b.pem"))


def test_missing_files_raise_certs_missing(tmp_path: Path) -> None:
    with pytest.raises(CertsMissing, match=r"ca\.pem.*miniupi certs init"):
        server_credentials(tmp_path, "gateway")
    init_certs(make_cluster(tmp_path))
    (tmp_path / "client.key").unlink()
    with pytest.raises(CertsMissing, match=r"client\.key.*miniupi certs init"):
        channel_credentials(tmp_path, "client")


class FakeContext:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self.auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth


def test_peer_identity_is_never_the_common_name() -> None:
    """A certificate without SANs is no identity here, whatever its CN says (the CA issues none such)."""
    assert peer_identity(FakeContext({"x509_common_name": [b"gateway"]})) is None
    assert peer_identity(FakeContext({})) is None


def test_peer_identity_prefers_first_san_over_common_name() -> None:
    auth = {"x509_subject_alternative_name": [b"bank_a", b"localhost"], "x509_common_name": [b"other"]}
    assert peer_identity(FakeContext(auth)) == "bank_a"


# --- mutual TLS over real connections ----------------------------------------------------------


class RecordingHealth(health.aio.HealthServicer):
    """The standard health service, noting who called."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[str | None] = []
        self.auth: list[dict[str, list[bytes]]] = []

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        self.callers.append(peer_identity(context))
        self.auth.append(context.auth_context())
        return await super().Check(request, context)


@contextlib.asynccontextmanager
async def serving(creds: grpc.ServerCredentials) -> AsyncIterator[tuple[int, RecordingHealth]]:
    server = grpc.aio.server()
    servicer = RecordingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(None)


async def check(port: int, creds: grpc.ChannelCredentials, options: list | None = None) -> int:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        return reply.status


def refused(server_creds: grpc.ServerCredentials, client_creds: grpc.ChannelCredentials) -> None:
    """The call fails at the TLS handshake: UNAVAILABLE, and the service never runs."""

    async def go() -> None:
        async with serving(server_creds) as (port, servicer):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await check(port, client_creds)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
            assert servicer.callers == []

    asyncio.run(go())


def ca_pem(certs_dir: Path) -> bytes:
    return (certs_dir / "ca.pem").read_bytes()


def client_with(certs_dir: Path, cert: bytes, key: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca_pem(certs_dir), private_key=key, certificate_chain=cert)


def load_ca(certs_dir: Path):  # type: ignore[no-untyped-def]
    key = serialization.load_pem_private_key((certs_dir / "ca.key").read_bytes(), password=None)
    return load_cert(certs_dir / "ca.pem"), key


def test_mtls_client_is_served_and_identified(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir

    async def go() -> None:
        async with serving(server_credentials(d, "bank_a")) as (port, servicer):
            assert await check(port, channel_credentials(d, "client")) == health_pb2.HealthCheckResponse.SERVING
            assert servicer.callers == ["client"]
            # The key names peer_identity relies on, as grpc really fills them in.
            auth = servicer.auth[0]
            assert auth["x509_subject_alternative_name"] == [b"client"]
            assert auth["x509_common_name"] == [b"client"]
            assert auth["transport_security_type"] == [b"ssl"]

    asyncio.run(go())


def test_client_without_certificate_is_refused(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    refused(server_credentials(d, "gateway"), grpc.ssl_channel_credentials(root_certificates=ca_pem(d)))


def test_client_from_another_ca_is_refused(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    other_ca, other_key = make_ca("intruder CA")
    cert, key = issue_cert(other_ca, other_key, "client", ["localhost", "127.0.0.1"])
    refused(server_credentials(d, "gateway"), client_with(d, cert, key))


def test_expired_client_is_refused(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = issue_cert(*load_ca(d), "client", ["localhost"], now - dt.timedelta(days=30), now - dt.timedelta(days=1))
    refused(server_credentials(d, "gateway"), client_with(d, cert, key))


def test_not_yet_valid_client_is_refused(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = issue_cert(*load_ca(d), "client", ["localhost"], now + dt.timedelta(days=1), now + dt.timedelta(days=30))
    refused(server_credentials(d, "gateway"), client_with(d, cert, key))


def test_server_with_wrong_name_is_refused_by_client(cluster: ClusterConfig) -> None:
    init_certs(cluster)
    d = cluster.certs_dir
    cert, key = issue_cert(*load_ca(d), "elsewhere.invalid", [])
    server_creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca_pem(d), require_client_auth=True)
    refused(server_creds, channel_credentials(d, "client"))

    # The same certificate is accepted when the client expects that name: only the name was wrong.
    async def go() -> None:
        async with serving(server_creds) as (port, servicer):
            options = [("grpc.ssl_target_name_override", "elsewhere.invalid")]
            assert await check(port, channel_credentials(d, "client"), options) == health_pb2.HealthCheckResponse.SERVING
            assert servicer.callers == ["client"]

    asyncio.run(go())


def test_issue_cert_round_trips_through_pem() -> None:
    ca, ca_key = make_ca("test CA")
    cert_bytes, key_bytes = issue_cert(ca, ca_key, "bank_a", ["127.0.0.1", "localhost", "127.0.0.1"])
    cert = x509.load_pem_x509_certificate(cert_bytes)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(cert_pem(ca)))
    assert sans(cert) == [
        x509.DNSName("bank_a"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    assert key_pem(serialization.load_pem_private_key(key_bytes, password=None)) == key_bytes


def test_a_client_certificate_without_sans_is_nobody_even_named_gateway_in_its_cn(cluster: ClusterConfig) -> None:
    """gRPC reports a SAN-less certificate by its CN; that must not make its holder the gateway."""
    init_certs(cluster)
    d = cluster.certs_dir
    ca, ca_key = load_ca(d)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))

    async def go() -> None:
        async with serving(server_credentials(d, "bank_a")) as (port, servicer):
            assert await check(port, client_with(d, cert_pem(cert), key_pem(key))) == \
                health_pb2.HealthCheckResponse.SERVING
            assert servicer.auth[0]["x509_common_name"] == [b"gateway"]  # gRPC does see the CN...
            assert servicer.callers == [None]  # ...and it names nobody

    asyncio.run(go())
