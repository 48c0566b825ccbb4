"""Certificates the way Kubernetes uses them: a CA, serving certificates for the hosts clients dial, and client
certificates whose subject is the identity (CommonName = user, Organization = groups).

Keys are ECDSA P-256: every Kubernetes component accepts them, and one is made in microseconds where an RSA
key takes tens of milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
BACKDATE = datetime.timedelta(hours=1)  # tolerate a client whose clock is a little behind


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_pem(self.key)

    def write(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        """Both as PEM files, the key readable by its owner only."""
        write_pem(cert_path, self.cert_pem)
        write_pem(key_path, self.key_pem, private=True)
        return cert_path, key_path

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Self:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("expected an ECDSA private key")
        return cls(x509.load_pem_x509_certificate(cert_pem), key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Self:
        return cls.from_pem(cert_path.read_bytes(), key_path.read_bytes())


@dataclass(frozen=True)
class Authority(Issued):
    """A certificate authority that signs serving and client certificates."""

    @classmethod
    def create(cls, common_name: str, days: int = CA_DAYS) -> Self:
        key = new_key()
        name = _name(common_name)
        cert = (
            _builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue_server(self, common_name: str, hosts: Iterable[str], days: int = LEAF_DAYS) -> Issued:
        """A serving certificate valid for each of ``hosts`` (DNS names or IP addresses)."""
        return self._issue(_name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, days, sans(hosts))

    def issue_client(self, user: str, groups: Iterable[str] = (), days: int = LEAF_DAYS) -> Issued:
        """A client certificate: the API server (and a kubelet) read the user from CN and groups from O."""
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        subject = x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, user)])
        return self._issue(subject, ExtendedKeyUsageOID.CLIENT_AUTH, days, None)

    def _issue(
        self, subject: x509.Name, purpose: x509.ObjectIdentifier, days: int, names: list[x509.GeneralName] | None
    ) -> Issued:
        key = new_key()
        builder = (
            _builder(subject, self.cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


def self_signed_server(common_name: str, hosts: Iterable[str], days: int = LEAF_DAYS) -> Issued:
    """A serving certificate that is its own issuer (what a kubelet makes when nobody signs one for it)."""
    key = new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(sans(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def identity(cert: x509.Certificate) -> tuple[str, list[str]]:
    """The user (CommonName) and groups (Organizations) a client certificate names, as Kubernetes reads them."""
    subject = cert.subject
    user = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    groups = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return (user[0] if user else ""), groups


def sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names: an IP address entry for addresses, a DNS entry for names, no duplicates."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_pem(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data``; a private file is created 0600 before any byte lands in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
    path.write_bytes(data)
    if not private:
        path.chmod(0o644)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
