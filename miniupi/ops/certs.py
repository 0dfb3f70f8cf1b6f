"""The cluster's certificates: one CA, and one leaf per identity.

Every gRPC link is mutual TLS, so every node and every user-side tool (the
customers' `client`, the operator's `admin`, the `treasury` that issues
money) holds a certificate signed by the cluster CA. The identity is the
first SAN entry (a DNS name equal to the identity), which is what servers
read back from the TLS handshake to know who is calling, and what clients
pin when they dial a node (tls.pin).

A certificate carries its role. Node leaves (the gateway, each bank) are
TLS servers and clients (extended key usage serverAuth and clientAuth) and
also name the hosts they are dialled by. User-side leaves are clients only
(clientAuth) and name nothing but their identity, so no customer can serve
as a node, whatever address it listens on.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from miniupi.config import ClusterConfig, ConfigError, host_problem
from miniupi.tls import CA_CERT

CA_KEY = "ca.key"
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=730)
# Back-date certificates a little so a peer whose clock lags ours accepts them.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Every leaf can be reached on the loopback, whatever the cluster file says.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

PrivateKey = ec.EllipticCurvePrivateKey


# Identities of the user side: client-only certificates that name no host.
USER_IDENTITIES = ("client", "admin", "treasury")


def identities(cluster: ClusterConfig) -> list[str]:
    """Every name that needs a certificate: the nodes, then the user-side identities."""
    return ["gateway", *cluster.banks, *USER_IDENTITIES]


def is_node(cluster: ClusterConfig, name: str) -> bool:
    return name == "gateway" or name in cluster.banks


def extended_key_usage(server: bool) -> list[x509.ObjectIdentifier]:
    """serverAuth and clientAuth for a node, clientAuth alone for the user side."""
    return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]


def new_key() -> PrivateKey:
    """An EC P-256 key: small and quick to handshake with."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_ca(
    name: str, not_before: dt.datetime | None = None, not_after: dt.datetime | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA allowed to sign leaves only (path length 0)."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before = not_before or _now() - CLOCK_SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after or not_before + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def san_names(name: str, hosts: Iterable[str]) -> list[x509.GeneralName]:
    """DNSName(name) first, since peers take the first SAN as the identity; then hosts, deduplicated."""
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    for host in hosts:
        general = _general_name(host)
        if general not in names:
            names.append(general)
    return names


def issue_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    name: str,
    hosts: Iterable[str] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    *,
    server: bool = True,
) -> tuple[bytes, bytes]:
    """A leaf for `name`, a TLS server and client, or with `server=False` a client only.

    Returns (cert PEM, key PEM). Any dates and hosts are accepted so tests
    can build expired or misnamed certificates with the same code the
    cluster uses.
    """
    key = new_key()
    not_before = not_before or _now() - CLOCK_SKEW
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after or not_before + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(extended_key_usage(server)),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san_names(name, hosts)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


def check_extra_hosts(cluster: ClusterConfig, extra_hosts: Sequence[str]) -> None:
    """Refuse a `--host` that no node certificate may name: one spelt like an identity, empty, or a wildcard."""
    for host in extra_hosts:
        problem = host_problem(host, cluster.reserved_user_names)
        if problem:
            raise ConfigError(f"--host {host!r}: {problem}")


def leaf_hosts(cluster: ClusterConfig, name: str, extra_hosts: Sequence[str] = ()) -> list[str]:
    """The hosts a node's leaf names besides its identity; a user-side leaf names none."""
    if not is_node(cluster, name):
        return []
    hosts = list(LOCAL_HOSTS)
    # Every gateway holds the one `gateway` leaf, so it names the hosts of them all.
    # A wildcard bind address is not something a client can dial, so it is no name.
    hosts += [n.host for n in cluster.nodes if n.identity == name and n.host not in ("0.0.0.0", "::", "")]
    hosts.extend(extra_hosts)
    return hosts


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` atomically; the file has `mode` from its first byte, never wider."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # O_CREAT's mode is cut by the umask, or ignored if tmp existed
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKey] | None:
    """The certificate and its key, or None if either is missing, unreadable or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return cert, key


def _leaf_ok(name: str, cert_path: Path, key_path: Path, ca: x509.Certificate, hosts: Sequence[str],
             server: bool, identity_names: frozenset[str]) -> bool:
    """Whether an existing leaf can stay: signed by this CA, in date, matching its key, of its role
    (a user-side leaf from before roles, which was also a server naming hosts, is not), naming every
    host, and naming no other identity (a host added as `--host gateway` would pass for the gateway)."""
    pair = _load_pair(cert_path, key_path)
    if pair is None:
        return False
    cert = pair[0]
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc <= _now():
        return False
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    if list(usage) != extended_key_usage(server):
        return False
    want = san_names(name, hosts)
    if not server:
        return list(have) == want
    others = [n.value for n in list(have)[1:] if isinstance(n, x509.DNSName)]
    if any(host_problem(other, identity_names) for other in others):
        return False
    return list(have)[:1] == want[:1] and all(n in have for n in want)


def init_certs(cluster: ClusterConfig, *, force: bool = False, extra_hosts: Sequence[str] = ()) -> list[Path]:
    """Make whatever certificates the cluster lacks; return the files written.

    With `force` everything is made anew. A new CA invalidates every leaf,
    and any leaf that does not verify against the current CA is re-issued.
    """
    check_extra_hosts(cluster, extra_hosts)
    certs_dir = cluster.certs_dir
    certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(certs_dir, 0o700)
    written: list[Path] = []

    ca_cert_path, ca_key_path = certs_dir / CA_CERT, certs_dir / CA_KEY
    pair = None if force else _load_pair(ca_cert_path, ca_key_path)
    if pair is not None and pair[0].not_valid_after_utc <= _now():
        pair = None
    if pair is None:
        ca_cert, ca_key = make_ca(f"{cluster.name} cluster CA")
        # Key first: a crash between the two leaves a mismatched pair, which the next run replaces.
        write_file(ca_key_path, key_pem(ca_key), 0o600)
        write_file(ca_cert_path, cert_pem(ca_cert), 0o644)
        written += [ca_cert_path, ca_key_path]
        force = True
    else:
        ca_cert, ca_key = pair

    for name in identities(cluster):
        cert_path, key_path = certs_dir / f"{name}.pem", certs_dir / f"{name}.key"
        hosts, server = leaf_hosts(cluster, name, extra_hosts), is_node(cluster, name)
        if not force and _leaf_ok(name, cert_path, key_path, ca_cert, hosts, server, cluster.reserved_user_names):
            continue
        leaf_pem, leaf_key_pem = issue_cert(ca_cert, ca_key, name, hosts, server=server)
        write_file(key_path, leaf_key_pem, 0o600)
        write_file(cert_path, leaf_pem, 0o644)
        written += [cert_path, key_path]
    return written
