"""A private certificate authority and certificates for TLS to NATS (`claw nats certs`).

One step, once, for a deployment without an authority of its own (docker-compose, a few machines):
it writes a CA, a server certificate for the names clients reach nats-server by, and a client
certificate (for `nats.tls.verify`, mutual TLS), with the `cryptography` package. Keys are written
0600; the CA's key is kept only so more certificates can be issued later from it (keep it offline).
A deployment with an authority of its own issues these files from it instead.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import InvalidInputError
from common.identity import write_private

if TYPE_CHECKING:
    from cryptography import x509

# The files `issue_certs` writes into its folder, by role.
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
CLIENT_CERT = "client.pem"
CLIENT_KEY = "client.key"
FILES = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY)
DEFAULT_DAYS = 825  # what browsers and most clients still accept for a leaf certificate


def issue_certs(out: Path, hosts: list[str], *, days: int = DEFAULT_DAYS) -> list[Path]:
    """Write a CA, a server certificate for `hosts` (DNS names or IP addresses) and a client
    certificate into `out`; refuses to overwrite any of them. Returns the paths written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise InvalidInputError("give the server's names with --host (e.g. --host nats --host localhost)")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() or c in "/:@" for c in host):
                raise InvalidInputError(f"--host '{host}' is neither a DNS name nor an IP address") from None
            names.append(x509.DNSName(host))
    out.mkdir(parents=True, exist_ok=True)
    taken = [name for name in FILES if (out / name).exists()]
    if taken:
        raise InvalidInputError(
            f"{out} already holds {', '.join(taken)}: certificates are never overwritten (remove them to make new ones)"
        )
    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def build(subject: str, public: ec.EllipticCurvePublicKey, issuer: x509.Name) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
        )

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OpenClaw Cluster CA")])
    ca_cert = (
        build("OpenClaw Cluster CA", ca_key.public_key(), ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(subject: str, usage: x509.ObjectIdentifier, alt: list[x509.GeneralName] | None) -> tuple[bytes, bytes]:
        own = key()
        builder = (
            build(subject, own.public_key(), ca_name)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(own)

    server_cert, server_key = leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, names)
    client_cert, client_key = leaf("claw-client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    contents = {
        CA_CERT: ca_cert.public_bytes(serialization.Encoding.PEM),
        CA_KEY: _pem_key(ca_key),
        SERVER_CERT: server_cert,
        SERVER_KEY: server_key,
        CLIENT_CERT: client_cert,
        CLIENT_KEY: client_key,
    }
    written = []
    for name, data in contents.items():
        path = out / name
        if name.endswith(".key"):
            write_private(path, data.decode())
        else:
            path.write_bytes(data)
        written.append(path)
    return written


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca_usage() -> x509.KeyUsage:
    """A CA's key usage: signing certificates and revocation lists only."""
    from cryptography import x509

    flags = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
                           "encipher_only", "decipher_only"), False)  # fmt: skip
    return x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **flags)
