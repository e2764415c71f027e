"""A throwaway CA, server and client certificate for TLS tests (made with cryptography)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_certificates(
    directory: Path, server_names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> dict[str, Path]:
    """Write ca.crt, server.crt/.key (naming ``server_names``) and client.crt/.key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("elastic-sessions test CA"))
        .issuer_name(_name("elastic-sessions test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "ca", ca_key, ca)
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"elastic-sessions test {role}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if role == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(name) for name in server_names]),
                critical=False,
            )
        _write(directory / role, key, builder.sign(ca_key, hashes.SHA256()))
    return {
        "ca": directory / "ca.crt",
        "cert": directory / "server.crt",
        "key": directory / "server.key",
        "client_cert": directory / "client.crt",
        "client_key": directory / "client.key",
    }


def client_tls_options(certs: dict[str, Path]) -> dict[str, str]:
    """redis-py's options for mutual TLS with the certificates of ``make_certificates``."""
    return {
        "ssl_ca_certs": str(certs["ca"]),
        "ssl_certfile": str(certs["client_cert"]),
        "ssl_keyfile": str(certs["client_key"]),
    }


def engine_tls_settings(certs: dict[str, Path]) -> dict[str, str]:
    """The same, as ELASTIC_SESSIONS keys."""
    return {name.upper(): value for name, value in client_tls_options(certs).items()}
