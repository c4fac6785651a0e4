"""Local development certificate authority for C2PA signing.

Generates a three-level PKI (root CA -> intermediate CA -> signing leaf) on EC P-256 keys
with exactly the certificate profile the C2PA library accepts (established by experiment
against c2pa-python 0.38 / c2pa-rs 0.91, see tests/governance/test_c2pa_signing.py):

* leaf: ``basicConstraints CA=false``, ``keyUsage digitalSignature`` (critical), an
  ``extendedKeyUsage`` that contains ``emailProtection`` (the default C2PA trust
  configuration refuses a ``documentSigning``-only EKU, so documentSigning is only ever added
  next to emailProtection), subject and authority key identifiers, a bounded validity window;
* the leaf is never self-signed (c2pa refuses self-signed signing credentials);
* ``chain.pem`` holds leaf first, then the intermediate. The root is deliberately NOT in the
  chain: it is the trust anchor, distributed out of band as ``root.pem``. A chain that carries
  its own root proves nothing (anyone can mint one), and verification against ``root.pem``
  works with the leaf + intermediate chain (tested).

Only the leaf private key is written (unencrypted PKCS#8 PEM, mode 0600), because that is
what the signer needs and what c2pa accepts. The CA private keys are discarded after issuing:
a development CA is re-generated, never re-used to issue, so keeping its keys on disk would
only add secrets to leak.

This module also creates deliberately BROKEN signer material for tests (a CA leaf, a wrong
EKU, an expired leaf, a self-signed leaf, ...), so the configuration-time validation in
:mod:`governance.integrations.c2pa_signing` can be tested against real certificates.

Plain Python (``cryptography`` only): no Django, no c2pa import.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CHAIN_FILENAME",
    "KEY_FILENAME",
    "ROOT_FILENAME",
    "BadCertKind",
    "DevCAError",
    "DevCAPaths",
    "generate_bad_signer",
    "generate_dev_ca",
]

CHAIN_FILENAME = "chain.pem"
KEY_FILENAME = "signer.key.pem"
ROOT_FILENAME = "root.pem"

DEFAULT_COMMON_NAME = "Governed Reenactment Dev Signer"
DEFAULT_ORGANISATION = "Governed Reenactment (development only)"

# Validity windows. Backdating not_before by an hour tolerates clock skew between the
# machine that generates and the one that verifies; the leaf outlives no CA above it.
_BACKDATE = dt.timedelta(hours=1)
_ROOT_LIFETIME = dt.timedelta(days=3650)
_INTERMEDIATE_LIFETIME = dt.timedelta(days=1825)
_LEAF_LIFETIME = dt.timedelta(days=365)


class DevCAError(RuntimeError):
    """Raised when development CA material cannot be written (e.g. it already exists)."""


@dataclass(frozen=True)
class DevCAPaths:
    """Where the generated material lives.

    ``chain`` and ``key`` feed ``SignerConfig(cert_chain_path=..., private_key_path=...)``;
    ``root`` feeds ``SignerConfig(trust_anchors_path=...)`` and verification.
    """

    out_dir: Path
    chain: Path
    key: Path
    root: Path


class BadCertKind(enum.Enum):
    """Deliberately broken signer material, for tests of configuration-time validation."""

    CA_LEAF = "ca_leaf"  # leaf carries basicConstraints CA=true
    WRONG_EKU = "wrong_eku"  # leaf EKU is documentSigning only (no emailProtection)
    NO_EKU = "no_eku"  # leaf has no extendedKeyUsage extension at all
    NO_DIGITAL_SIGNATURE = "no_digital_signature"  # keyUsage lacks digitalSignature
    EXPIRED = "expired"  # leaf not_after is in the past
    NOT_YET_VALID = "not_yet_valid"  # leaf not_before is in the future
    SELF_SIGNED = "self_signed"  # single self-issued, self-signed leaf
    KEY_MISMATCH = "key_mismatch"  # private key is not the leaf's key
    CHAIN_REVERSED = "chain_reversed"  # intermediate first, leaf second
    CHAIN_UNLINKED = "chain_unlinked"  # intermediate is not the leaf's issuer
    ENCRYPTED_KEY = "encrypted_key"  # key is password-protected PKCS#8
    TRADITIONAL_KEY = "traditional_key"  # key is SEC1 "BEGIN EC PRIVATE KEY", not PKCS#8


@dataclass
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 pairs with ES256, the most widely supported C2PA algorithm.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _issue(
    *,
    subject: x509.Name,
    subject_key: ec.EllipticCurvePrivateKey,
    issuer: _Issued | None,
    ca: bool,
    path_length: int | None = None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    digital_signature: bool = True,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    """Build and sign one certificate.

    ``issuer=None`` makes a self-signed certificate (the root, or a bad self-signed leaf).
    ``signing_key`` overrides the issuer key (used to build deliberately unlinked chains).
    """
    issuer_name = issuer.cert.subject if issuer is not None else subject
    key_for_signature = signing_key or (issuer.key if issuer is not None else subject_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
        )
    )
    # AKI links a certificate to its issuer's SKI; c2pa's chain building expects it on every
    # non-root certificate (and it is harmless on a self-signed one).
    authority_public_key = (
        issuer.key.public_key() if issuer is not None else subject_key.public_key()
    )
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_public_key), critical=False
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return builder.sign(key_for_signature, hashes.SHA256())


def _build_cas(organisation: str, now: dt.datetime) -> tuple[_Issued, _Issued]:
    root_key = _new_key()
    root_cert = _issue(
        subject=_name("Governed Reenactment Dev Root CA", organisation),
        subject_key=root_key,
        issuer=None,
        ca=True,
        path_length=1,
        not_before=now - _BACKDATE,
        not_after=now + _ROOT_LIFETIME,
        digital_signature=False,
    )
    root = _Issued(root_cert, root_key)
    inter_key = _new_key()
    inter_cert = _issue(
        subject=_name("Governed Reenactment Dev Intermediate CA", organisation),
        subject_key=inter_key,
        issuer=root,
        ca=True,
        path_length=0,
        not_before=now - _BACKDATE,
        not_after=now + _INTERMEDIATE_LIFETIME,
        digital_signature=False,
    )
    return root, _Issued(inter_cert, inter_key)


# emailProtection is what c2pa's default trust configuration requires; documentSigning is
# added alongside because it describes the purpose better and is accepted next to it.
_GOOD_LEAF_EKU: tuple[x509.ObjectIdentifier, ...] = (
    ExtendedKeyUsageOID.EMAIL_PROTECTION,
    x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36"),  # id-kp-documentSigning (RFC 9336)
)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _paths(out_dir: Path) -> DevCAPaths:
    return DevCAPaths(
        out_dir=out_dir,
        chain=out_dir / CHAIN_FILENAME,
        key=out_dir / KEY_FILENAME,
        root=out_dir / ROOT_FILENAME,
    )


def _write(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Write ``data`` with ``mode`` from the first byte on.

    The file is created with the final permissions (O_CREAT with ``mode``, then an explicit
    chmod against a permissive umask or a pre-existing file), so a private key is never
    readable by others, not even for an instant.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if not force:
        flags |= os.O_EXCL
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
    finally:
        if fd != -1:
            os.close(fd)


def _write_material(
    out_dir: Path, *, chain: bytes, key: bytes, root: bytes, force: bool
) -> DevCAPaths:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = _paths(out_dir)
    existing = [p for p in (paths.chain, paths.key, paths.root) if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise DevCAError(f"refusing to overwrite existing signing material: {names}")
    _write(paths.key, key, 0o600, force=force)
    _write(paths.chain, chain, 0o644, force=force)
    _write(paths.root, root, 0o644, force=force)
    return paths


def generate_dev_ca(
    out_dir: Path,
    *,
    common_name: str = DEFAULT_COMMON_NAME,
    organisation: str = DEFAULT_ORGANISATION,
    force: bool = False,
) -> DevCAPaths:
    """Generate a development root CA, intermediate CA and ES256 signing leaf.

    Writes ``chain.pem`` (leaf, intermediate), ``signer.key.pem`` (leaf key, PKCS#8, 0600)
    and ``root.pem`` (trust anchor) into ``out_dir``. Refuses to overwrite any of them unless
    ``force=True`` (raises :class:`DevCAError`), because silently rotating a signing key
    makes every previously issued trust decision about that directory wrong.
    """
    now = _now()
    root, intermediate = _build_cas(organisation, now)
    leaf_key = _new_key()
    leaf_cert = _issue(
        subject=_name(common_name, organisation),
        subject_key=leaf_key,
        issuer=intermediate,
        ca=False,
        not_before=now - _BACKDATE,
        not_after=now + _LEAF_LIFETIME,
        eku=_GOOD_LEAF_EKU,
    )
    return _write_material(
        Path(out_dir),
        chain=_pem(leaf_cert) + _pem(intermediate.cert),
        key=_pkcs8(leaf_key),
        root=_pem(root.cert),
        force=force,
    )


def generate_bad_signer(out_dir: Path, kind: BadCertKind, *, force: bool = False) -> DevCAPaths:
    """Generate signer material that is broken in exactly one way (``kind``), for tests.

    The layout is the same as :func:`generate_dev_ca`, so the paths plug straight into a
    ``SignerConfig``; everything except the named defect is a valid, c2pa-acceptable setup.
    """
    now = _now()
    root, intermediate = _build_cas(DEFAULT_ORGANISATION, now)
    leaf_key = _new_key()
    subject = _name(f"Bad signer ({kind.value})", DEFAULT_ORGANISATION)
    issuer: _Issued | None = intermediate
    ca = False
    eku: Sequence[x509.ObjectIdentifier] | None = _GOOD_LEAF_EKU
    digital_signature = True
    not_before = now - _BACKDATE
    not_after = now + _LEAF_LIFETIME
    signing_key: ec.EllipticCurvePrivateKey | None = None

    if kind is BadCertKind.CA_LEAF:
        ca = True
    elif kind is BadCertKind.WRONG_EKU:
        eku = (x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36"),)
    elif kind is BadCertKind.NO_EKU:
        eku = None
    elif kind is BadCertKind.NO_DIGITAL_SIGNATURE:
        digital_signature = False
    elif kind is BadCertKind.EXPIRED:
        not_before = now - dt.timedelta(days=30)
        not_after = now - dt.timedelta(days=1)
    elif kind is BadCertKind.NOT_YET_VALID:
        not_before = now + dt.timedelta(days=1)
        not_after = now + dt.timedelta(days=30)
    elif kind is BadCertKind.SELF_SIGNED:
        issuer = None
    elif kind is BadCertKind.CHAIN_UNLINKED:
        # Names match (issuer == intermediate subject) but the signature is by a stranger.
        signing_key = _new_key()

    leaf_cert = _issue(
        subject=subject,
        subject_key=leaf_key,
        issuer=issuer,
        ca=ca,
        path_length=None,
        not_before=not_before,
        not_after=not_after,
        digital_signature=digital_signature,
        eku=eku,
        signing_key=signing_key,
    )

    chain = _pem(leaf_cert) + _pem(intermediate.cert)
    if kind is BadCertKind.SELF_SIGNED:
        chain = _pem(leaf_cert)
    elif kind is BadCertKind.CHAIN_REVERSED:
        chain = _pem(intermediate.cert) + _pem(leaf_cert)

    key = _pkcs8(leaf_key)
    if kind is BadCertKind.KEY_MISMATCH:
        key = _pkcs8(_new_key())
    elif kind is BadCertKind.ENCRYPTED_KEY:
        key = leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"dev-only-password"),
        )
    elif kind is BadCertKind.TRADITIONAL_KEY:
        key = leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    return _write_material(Path(out_dir), chain=chain, key=key, root=_pem(root.cert), force=force)
