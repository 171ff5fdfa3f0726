"""TLS material for SIP over TLS / secure WebSocket: a test CA, certificates, contexts.

:func:`generate_test_pki` makes a self-signed CA and a server certificate for
``localhost``, ``127.0.0.1`` and ``::1`` with :mod:`cryptography` (EC P-256 keys, so it
takes milliseconds) and writes them as PEM files. :func:`server_ssl_context` and
:func:`client_ssl_context` build :class:`ssl.SSLContext` objects from those files or
from real certificate/key files (for ``voicelab agent serve --transport tls`` with a
certificate a softphone already trusts).

Certificate validity starts from the real current time (``now`` defaults to the wall
clock): TLS peers check certificates against the real clock, so this tool module is the
one place outside tests that reads it.

Certificates carry what strict verifiers (Python 3.13's ``VERIFY_X509_STRICT``,
browsers) ask for: basic constraints, key usage, subject and authority key
identifiers, subjectAltName, serverAuth extended key usage.

This is an I/O helper (it writes files and reads the wall clock for the certificate
validity window), not protocol code.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import ParameterError

__all__ = ["CertificateFiles", "generate_test_pki", "server_ssl_context", "client_ssl_context"]


@dataclass(frozen=True)
class CertificateFiles:
    """Paths of the PEM files written by :func:`generate_test_pki`.

    Attributes
    ----------
    ca_cert : Path
        The CA certificate; give it to clients as ``ca_file``.
    ca_key : Path
        The CA private key (mode 0600), to issue more certificates later.
    cert : Path
        The server certificate (leaf only).
    key : Path
        The server private key (mode 0600, unencrypted PKCS#8).
    """

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_test_pki(
    directory: str | os.PathLike[str],
    *,
    hostnames: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1", "::1"),
    valid_days: int = 30,
    now: _dt.datetime | None = None,
    common_name: str = "voicelab test CA",
) -> CertificateFiles:
    """Create a CA and a server certificate signed by it; write four PEM files.

    Parameters
    ----------
    directory : path
        Where to write ``ca.pem``, ``ca.key``, ``server.pem`` and ``server.key``
        (created if missing; existing files are overwritten).
    hostnames : iterable of str, optional
        DNS names in the server certificate's subjectAltName.
    ip_addresses : iterable of str, optional
        IP addresses in its subjectAltName.
    valid_days : int, optional
        Validity from one hour before ``now`` (days, >= 1).
    now : datetime, optional
        Start of validity (timezone-aware); default the current UTC time, which is
        what peers verify against.
    common_name : str, optional
        The CA's subject CN.

    Returns
    -------
    CertificateFiles

    Raises
    ------
    ParameterError
        Bad ``valid_days``, an address that is not an IP, no names at all, or a
        directory that cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not isinstance(valid_days, int) or isinstance(valid_days, bool) or valid_days < 1:
        raise ParameterError(f"valid_days must be an int >= 1, got {valid_days!r}")
    names = [str(h) for h in hostnames]
    try:
        ips = [ipaddress.ip_address(a) for a in ip_addresses]
    except ValueError as exc:
        raise ParameterError(f"ip_addresses must be IP literals: {exc}") from None
    if not names and not ips:
        raise ParameterError("give at least one hostname or IP address for the server certificate")
    if now is None:
        now = _dt.datetime.now(_dt.timezone.utc)
    elif now.tzinfo is None:
        raise ParameterError("now must be timezone-aware (e.g. datetime.now(timezone.utc))")
    start = now - _dt.timedelta(hours=1)
    end = now + _dt.timedelta(days=valid_days)
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create certificate directory {out}: {exc.strerror}") from None

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(a) for a in ips]
    cn = names[0] if names else str(ips[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    nocrypt = serialization.NoEncryption()
    files = CertificateFiles(out / "ca.pem", out / "ca.key", out / "server.pem", out / "server.key")
    try:
        files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
        _write_private(files.ca_key, ca_key.private_bytes(pem, pkcs8, nocrypt))
        files.cert.write_bytes(cert.public_bytes(pem))
        _write_private(files.key, key.private_bytes(pem, pkcs8, nocrypt))
    except OSError as exc:
        raise ParameterError(f"cannot write certificate files in {out}: {exc.strerror}") from None
    return files


def _existing(path: str | os.PathLike[str], what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"{what} {p} does not exist or is not a file")
    return str(p)


def server_ssl_context(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    *,
    client_ca_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) from PEM files.

    Parameters
    ----------
    cert_file : path
        Certificate chain (leaf first), e.g. :attr:`CertificateFiles.cert` or a real one.
    key_file : path
        Its private key (unencrypted PEM).
    client_ca_file : path, optional
        When given, clients must present a certificate signed by this CA (mutual TLS).

    Returns
    -------
    ssl.SSLContext

    Raises
    ------
    ParameterError
        A file is missing, or the certificate and key cannot be loaded or do not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert = _existing(cert_file, "certificate file")
    key = _existing(key_file, "key file")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ParameterError(f"cannot load certificate {cert} with key {key}: {exc.reason or exc}") from None
    if client_ca_file is not None:
        ca = _existing(client_ca_file, "client CA file")
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ParameterError(f"cannot load client CA {ca}: {exc.reason or exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(
    *,
    ca_file: str | os.PathLike[str] | None = None,
    check_hostname: bool = True,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A client-side TLS context that verifies the server (TLS 1.2 or later).

    Parameters
    ----------
    ca_file : path, optional
        Trust anchors (e.g. :attr:`CertificateFiles.ca_cert`). Default: the system's
        trust store, which does not know the lab's test CA, so verification of a test
        server then fails (on purpose).
    check_hostname : bool, optional
        Check the certificate's names against the host connected to (default True).
    cert_file, key_file : path, optional
        Client certificate and key, for servers that ask for one.

    Returns
    -------
    ssl.SSLContext

    Raises
    ------
    ParameterError
        A file is missing or cannot be loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = bool(check_hostname)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        ca = _existing(ca_file, "CA file")
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ParameterError(f"cannot load CA file {ca}: {exc.reason or exc}") from None
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if (cert_file is None) != (key_file is None):
        raise ParameterError("give both cert_file and key_file for a client certificate, or neither")
    if cert_file is not None and key_file is not None:
        cert = _existing(cert_file, "certificate file")
        key = _existing(key_file, "key file")
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ParameterError(f"cannot load client certificate {cert}: {exc.reason or exc}") from None
    return ctx
