"""gRPC credentials from the certs dir, and who is on the other end.

Every link is mutual TLS under the one cluster CA: servers demand a client
certificate, and clients pin the identity they meant to reach. A valid
certificate from the cluster CA is not enough for a server: the customers'
shared `client.pem` is one too, and so is every other bank's. So every
channel miniupi opens (`dial`) makes gRPC check the server's certificate
against the *identity* (`gateway`, `bank_b`) rather than the host dialled,
inside the TLS handshake, before a byte of any request is written.
Files are read on each call rather than cached, so certificates re-made by
`miniupi certs init --force` are picked up by the next channel or server.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import grpc

# The cluster CA's certificate in the certs dir; its key (ca.key) is needed only to issue leaves.
CA_CERT = "ca.pem"


class CertsMissing(Exception):
    """A certificate or key file this process needs is not in the certs dir."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertsMissing(
            f"{path}: not found; run `miniupi certs init` to make the cluster certificates"
        ) from None


def load_identity(certs_dir: Path, name: str) -> tuple[bytes, bytes, bytes]:
    """(CA cert, NAME key, NAME cert) as PEM bytes; CertsMissing names the first absent file."""
    certs_dir = Path(certs_dir)
    return _read(certs_dir / CA_CERT), _read(certs_dir / f"{name}.key"), _read(certs_dir / f"{name}.pem")


def server_credentials(certs_dir: Path, name: str) -> grpc.ServerCredentials:
    """Serve as `name`, and refuse any client without a certificate from the cluster CA."""
    ca, key, cert = load_identity(certs_dir, name)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(certs_dir: Path, name: str) -> grpc.ChannelCredentials:
    """Dial as `name`, trusting only servers whose certificate comes from the cluster CA."""
    ca, key, cert = load_identity(certs_dir, name)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


ChannelOptions = Sequence[tuple[str, Any]]
# How gRPC (pinned in pyproject.toml) words the two handshake refusals that keep an impostor out: a
# server leaf naming another identity than the pinned one, and a client-only leaf (certs.py) serving.
# tests/security/test_security_impostor.py fails if a new gRPC words them otherwise.
WRONG_IDENTITY, CLIENT_ONLY_LEAF = "Hostname Verification Check failed", "unsupported certificate purpose"


def pin(peer: str, options: ChannelOptions = ()) -> list[tuple[str, Any]]:
    """`options` plus the one that makes the handshake accept only a certificate naming `peer`.

    gRPC checks the server's certificate against this name instead of the
    dialled host. Only a node's own leaf names it: user-side leaves name
    nothing but themselves, and no host in a node's leaf may be spelt like
    an identity (`config.host_problem`).
    """
    return [*options, ("grpc.ssl_target_name_override", peer)]


@overload
def dial(certs_dir: Path, identity: str, peer: str, address: str, options: ChannelOptions = (), *,
         aio: Literal[True] = True) -> grpc.aio.Channel: ...


@overload
def dial(certs_dir: Path, identity: str, peer: str, address: str, options: ChannelOptions = (), *,
         aio: Literal[False]) -> grpc.Channel: ...


def dial(certs_dir: Path, identity: str, peer: str, address: str, options: ChannelOptions = (), *,
         aio: bool = True) -> grpc.aio.Channel | grpc.Channel:
    """A channel to `address` as `identity` that reaches only `peer`: the one way miniupi dials."""
    creds = channel_credentials(certs_dir, identity)
    if aio:
        return grpc.aio.secure_channel(address, creds, options=pin(peer, options))
    return grpc.secure_channel(address, creds, options=pin(peer, options))


def impostor(details: str | None) -> bool:
    """Whether a failed call's details say the server's certificate is not the pinned peer's."""
    return any(refusal in (details or "") for refusal in (WRONG_IDENTITY, CLIENT_ONLY_LEAF))


def _first(auth: dict[str, list[bytes]], key: str) -> str | None:
    values = auth.get(key) or []
    if not values:
        return None
    value = values[0]
    return value.decode() if isinstance(value, bytes) else str(value)


SAN_KEY = "x509_subject_alternative_name"


def peer_identity(context: Any) -> str | None:
    """The caller's identity: the first SAN of its certificate, where the cluster's leaves put the name.

    Never the common name: gRPC names a certificate by its CN when it has no
    SAN, and the cluster CA issues none such, so a certificate without SANs
    is nobody here. None when the call did not come over mutual TLS.
    """
    # peer_identities() is the identity list alone: far cheaper than the whole auth_context on every call.
    if hasattr(context, "peer_identities"):
        key = context.peer_identity_key()
        if (key.decode() if isinstance(key, bytes) else key) != SAN_KEY:
            return None
        identities = context.peer_identities()
        if identities:
            first = identities[0]
            return first.decode() if isinstance(first, bytes) else str(first)
        return None
    return _first(context.auth_context() or {}, SAN_KEY)
