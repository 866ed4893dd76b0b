"""A throwaway cluster CA on this machine, issuing from the profiles that ship.

The program issues every certificate with pulumi-tls from the profiles in
components/render/tls.py; the local clusters (tests, rehearsal) issue from the
very same profiles with `cryptography` (which Ray depends on), so a profile
that lacks a name Ray dials, or a usage Ray needs, fails here for real.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.render import tls

# pulumi-tls usage names -> (KeyUsage flag or ExtendedKeyUsage OID)
_KEY_USAGES = {
    "digital_signature": "digital_signature",
    "key_encipherment": "key_encipherment",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
}
_EXTENDED_USAGES = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}
VALIDITY = dt.timedelta(days=2)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, tls.ORGANIZATION),
    ])


def _key_usage(uses: Sequence[str]) -> x509.KeyUsage:
    flags = {flag: False for flag in (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )}
    flags.update({_KEY_USAGES[use]: True for use in uses if use in _KEY_USAGES})
    return x509.KeyUsage(**flags)


def write_private(path: Path, data: bytes) -> None:
    """An owner-only file, as the program writes keys on the VMs."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class LocalCa:
    """A CA whose certificate and key live in `directory`."""

    def __init__(self, directory: Path, stack: str = "local"):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        name = _name(tls.ca_common_name(stack))
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(tls.CA_USES), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / tls.CA_CERT
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, profile: tls.CertProfile, directory: Path, extra_ips: Sequence[str] = ()) -> dict[str, str]:
        """Write `profile`'s certificate, its key and this CA into `directory` (as on a VM);
        the environment that points Ray at them. `extra_ips`: addresses only this machine adds."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(profile.common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(profile.allowed_uses), critical=True)
        )
        extended = [_EXTENDED_USAGES[use] for use in profile.allowed_uses if use in _EXTENDED_USAGES]
        if extended:
            builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
        ips = list(dict.fromkeys([*profile.ip_addresses, *extra_ips])) if profile.ip_addresses else []
        names = [x509.DNSName(n) for n in profile.dns_names] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        (directory / tls.NODE_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private(directory / tls.NODE_KEY, _pem(key))
        (directory / tls.CA_CERT).write_bytes(self.cert_path.read_bytes())
        return tls.tls_env(str(directory))
