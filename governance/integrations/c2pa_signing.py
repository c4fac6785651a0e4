"""C2PA provenance adapter: the ONLY module in the project that imports ``c2pa``.

Everything C2PA-specific lives here so that a c2pa-python upgrade (its API moved a lot between
0.x releases) touches one file. Plain Python, no Django: the platform wraps these functions in
a management command, a ``ProvenanceRecord`` model and a system check.

Behaviour below was established by experiment against c2pa-python 0.38.1 (c2pa-rs 0.91.3);
``tests/governance/test_c2pa_signing.py`` pins it:

* Trust: with ``trust.trust_anchors`` set to our root PEM a good file reads back with
  ``validation_state == "Trusted"`` (success code ``signingCredential.trusted``). Without
  anchors, or with anchors the chain does not lead to, it is ``"Valid"`` with the failure
  ``signingCredential.untrusted``. Tampering gives ``"Invalid"``: flipped media bytes
  ``assertion.bmffHash.mismatch``, an edited assertion ``assertion.hashedURI.mismatch``, an
  edited claim ``claimSignature.mismatch``. Truncated or garbage files make ``Reader`` raise
  (``C2paError.Other`` "asset could not be parsed", ``C2paError.Decoding``, ``C2paError.Io``);
  a file without a manifest raises ``C2paError.ManifestNotFound``.
* Without a timestamp authority the signature time is not attested, so once the leaf
  certificate expires every file it signed verifies as ``Invalid``
  (``signingCredential.expired``). Production must configure a TSA (``tsa_url``), and a
  configured but unreachable TSA makes signing fail immediately (no silent downgrade).
* ``builder.thumbnail.enabled = false`` suppresses both the claim thumbnail and ingredient
  thumbnails (c2pa otherwise embeds a JPEG of the source: a privacy leak of the face).
* c2pa's own checks at signing time refuse a CA leaf, missing digitalSignature, a
  documentSigning-only EKU, an expired leaf, a mismatched key and a non-PKCS#8 key, mostly with
  an unhelpful "the certificate is invalid". It does NOT refuse a self-signed leaf or a chain
  whose intermediate did not issue the leaf (both sign and read back as ``Valid``/untrusted),
  which is why :func:`load_signer_material` validates everything itself, at configuration
  time, with precise messages.
* ES256 callback signers may return DER or raw ``r||s`` (both accepted); we normalise to raw
  (the COSE wire format) so KMS/HSM back-ends that return DER work unchanged.
* Any remux strips the manifest: sign the final container, and never re-mux afterwards.
* Ingredients defined from JSON carry no content hash of their own, so the SHA-256 of each
  input is recorded in the ingredient's ``metadata`` under :data:`INGREDIENT_SHA256_KEY`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import json
import mimetypes
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "DIGITAL_SOURCE_TYPE_TRAINED_ALGORITHMIC_MEDIA",
    "INGREDIENT_SHA256_KEY",
    "ORG_ASSERTION_LABEL",
    "SUPPORTED_ALGORITHMS",
    "C2paIntegrationError",
    "IngredientRef",
    "SignCallback",
    "SignResult",
    "SignerConfig",
    "SignerConfigurationError",
    "SignerMaterial",
    "SigningError",
    "ValidationIssue",
    "VerificationResult",
    "VerificationStatus",
    "build_manifest_definition",
    "c2pa_versions",
    "load_signer_material",
    "sign_file",
    "signer_material_from_callback",
    "verify_file",
]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

#: Label of the organisation assertion. Reverse-domain per the C2PA custom-label rule, so it
#: can never collide with a ``c2pa.*`` / ``cawg.*`` standard assertion.
ORG_ASSERTION_LABEL = "com.governed-reenactment.job"

#: Key inside an ingredient's ``metadata`` that carries the input's SHA-256 (lower-case hex).
INGREDIENT_SHA256_KEY = "com.governed-reenactment.sha256"

#: IPTC digital source type for fully synthetic output of a trained model.
DIGITAL_SOURCE_TYPE_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
)

#: Algorithms we can sign with locally, and the key type each needs.
SUPPORTED_ALGORITHMS: tuple[str, ...] = (
    "es256",
    "es384",
    "es512",
    "ps256",
    "ps384",
    "ps512",
    "ed25519",
)

_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "es256": ec.SECP256R1,
    "es384": ec.SECP384R1,
    "es512": ec.SECP521R1,
}
# Bytes per ECDSA integer (r or s) in the raw COSE signature: ceil(curve bits / 8).
_EC_INT_BYTES: dict[str, int] = {"es256": 32, "es384": 48, "es512": 66}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "es256": hashes.SHA256,
    "es384": hashes.SHA384,
    "es512": hashes.SHA512,
    "ps256": hashes.SHA256,
    "ps384": hashes.SHA384,
    "ps512": hashes.SHA512,
}

# Measured: c2pa's default trust configuration requires emailProtection on the signing leaf
# (a documentSigning-only EKU fails with "certificate missing required EKU").
_REQUIRED_LEAF_EKU = ExtendedKeyUsageOID.EMAIL_PROTECTION

# c2pa-reported failure code meaning "chain does not lead to a configured anchor". It is the
# only failure c2pa tolerates in a "Valid" state, so it is what separates VALID_UNTRUSTED.
_UNTRUSTED_CODE = "signingCredential.untrusted"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# Settings shared by signing and verification. Remote manifest / OCSP fetching is off: a
# verifier processing uploaded files must never be made to issue outbound requests (SSRF,
# and the production hosts have no egress anyway).
_COMMON_SETTINGS: dict[str, Any] = {
    "version": 1,
    "verify": {
        "verify_after_reading": True,
        "verify_trust": True,
        "remote_manifest_fetch": False,
        "ocsp_fetch": False,
    },
}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class C2paIntegrationError(Exception):
    """Base class of every error raised by this module."""


class SignerConfigurationError(C2paIntegrationError):
    """Signer material is unusable; the message says exactly what is wrong."""


class SigningError(C2paIntegrationError):
    """Signing a file failed. Nothing was written at the destination."""


# --------------------------------------------------------------------------------------------
# Signer configuration and validation
# --------------------------------------------------------------------------------------------

_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

#: A signing callback: receives the bytes to be signed (the COSE Sig_structure, a few KB),
#: returns the signature. For ES* either DER or raw ``r||s`` is accepted.
SignCallback = Callable[[bytes], bytes]


@dataclass(frozen=True)
class SignerConfig:
    """Where the signing credentials live (typically built from Django settings).

    ``cert_chain_path``: PEM, leaf first, then intermediates (the root is optional and better
    left out: it is the trust anchor). ``private_key_path``: unencrypted PKCS#8 PEM
    (``BEGIN PRIVATE KEY``) of the leaf. ``tsa_url``: RFC 3161 timestamp authority; strongly
    recommended in production because without it signatures stop verifying once the leaf
    expires. ``trust_anchors_path``: PEM root(s) the chain must lead to; used to check the
    chain at configuration time and to require a TRUSTED read-back after signing.
    """

    cert_chain_path: Path
    private_key_path: Path
    algorithm: str = "es256"
    tsa_url: str | None = None
    trust_anchors_path: Path | None = None


@dataclass(frozen=True)
class SignerMaterial:
    """Validated signing credentials, ready for :func:`sign_file`.

    Holds the certificate chain and a signing callable, never the raw key bytes: the local
    key lives only inside the callable's closure (and ``repr`` hides the callable), so the
    material can be logged or cached without leaking the key.
    """

    algorithm: str
    chain_pem: bytes
    leaf_sha256_fingerprint: str
    leaf_subject: str
    leaf_serial_number: int
    not_valid_after: dt.datetime
    sign: SignCallback = field(repr=False, compare=False)
    tsa_url: str | None = None
    trust_anchors_pem: bytes | None = field(default=None, repr=False)
    #: "local-pem" for :func:`load_signer_material`, "callback" for KMS/HSM hooks.
    backend: str = "local-pem"


def _fail(message: str) -> SignerConfigurationError:
    return SignerConfigurationError(message)


def _read_file(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise _fail(f"{what} file {path} is empty")
    return data


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def _parse_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise _fail(f"{what} contains no PEM certificate (expected '-----BEGIN CERTIFICATE-----')")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise _fail(f"{what} is not valid PEM certificate data: {exc}") from exc
    if not certs:
        raise _fail(f"{what} contains no certificate")
    return certs


def _normalise_algorithm(algorithm: str) -> str:
    alg = (algorithm or "").strip().lower()
    if alg not in SUPPORTED_ALGORITHMS:
        raise _fail(
            f"unsupported signing algorithm {algorithm!r}; "
            f"expected one of {', '.join(SUPPORTED_ALGORITHMS)}"
        )
    return alg


def _check_algorithm_matches_key(alg: str, public_key: Any, what: str) -> None:
    """Refuse e.g. es384 with a P-256 key: c2pa would fail later with an opaque OID error."""
    if alg in _EC_CURVES:
        want = _EC_CURVES[alg]
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise _fail(
                f"algorithm {alg} needs an EC {want.name} key but the {what} is "
                f"{_key_kind(public_key)}"
            )
        if not isinstance(public_key.curve, want):
            raise _fail(
                f"algorithm {alg} needs an EC {want.name} key but the {what} is "
                f"{_key_kind(public_key)}"
            )
    elif alg.startswith("ps"):
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise _fail(
                f"algorithm {alg} needs an RSA key but the {what} is {_key_kind(public_key)}"
            )
        if public_key.key_size < 2048:
            raise _fail(f"algorithm {alg} needs an RSA key of at least 2048 bits")
    elif alg == "ed25519":
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise _fail(
                f"algorithm ed25519 needs an Ed25519 key but the {what} is {_key_kind(public_key)}"
            )


def _key_kind(public_key: Any) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"an EC {public_key.curve.name} key"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"an RSA-{public_key.key_size} key"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    return f"a {type(public_key).__name__}"


def _load_private_key(data: bytes, path: Path) -> _SigningKey:
    # c2pa only reads "BEGIN PRIVATE KEY" (unencrypted PKCS#8); say which format we found
    # instead of letting c2pa fail at the first signing with a PEM label error.
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data:
        raise _fail(
            f"private key {path} is encrypted; c2pa needs an unencrypted PKCS#8 PEM key "
            "('BEGIN PRIVATE KEY') - protect it with file permissions or use a KMS callback"
        )
    labels = re.findall(rb"-----BEGIN ([A-Z0-9 ]+)-----", data)
    if not labels:
        raise _fail(f"private key {path} is not PEM (no '-----BEGIN PRIVATE KEY-----' block)")
    if labels[0] != b"PRIVATE KEY":
        raise _fail(
            f"private key {path} is not PKCS#8: found 'BEGIN {labels[0].decode()}', "
            "c2pa needs 'BEGIN PRIVATE KEY' (convert with: openssl pkcs8 -topk8 -nocrypt)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # password-protected despite the label
        raise _fail(f"private key {path} is encrypted; c2pa needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _fail(f"private key {path} cannot be parsed as PKCS#8 PEM: {exc}") from exc
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise _fail(f"private key {path} is {_key_kind(key.public_key())}; use EC, RSA or Ed25519")
    return key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name matches and its key verifies ``child``'s signature."""
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_validity(cert: x509.Certificate, role: str, now: dt.datetime) -> None:
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now < not_before:
        raise _fail(
            f"{role} certificate is not yet valid: validity starts {not_before.isoformat()} "
            f"(now {now.isoformat()})"
        )
    if now > not_after:
        raise _fail(
            f"{role} certificate has expired: validity ended {not_after.isoformat()} "
            f"(now {now.isoformat()})"
        )


def _check_leaf_profile(leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
    # Self-signed first: c2pa 0.38 signs with a self-signed leaf and produces a manifest that
    # can never be TRUSTED; refusing it here avoids shipping unverifiable provenance.
    if leaf.issuer == leaf.subject and _issued_by(leaf, leaf):
        raise _fail(
            f"leaf certificate ({_describe(leaf)}) is self-signed; the signing certificate "
            "must be issued by a CA (use dev_ca.generate_dev_ca for development)"
        )
    if _is_ca(leaf):
        if any(not _is_ca(c) for c in chain[1:]):
            raise _fail(
                "certificate chain is not leaf first: the first certificate "
                f"({_describe(leaf)}) is a CA and a non-CA certificate follows it; "
                "order the chain leaf, intermediate(s)"
            )
        raise _fail(
            f"leaf certificate ({_describe(leaf)}) is a CA (basicConstraints CA=true); "
            "the signing certificate must have CA=false"
        )
    try:
        key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise _fail(
            "leaf certificate has no keyUsage extension; it must include digitalSignature"
        ) from exc
    if not key_usage.digital_signature:
        raise _fail("leaf certificate keyUsage lacks digitalSignature")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise _fail(
            "leaf certificate has no extendedKeyUsage extension; it must include "
            "emailProtection (1.3.6.1.5.5.7.3.4)"
        ) from exc
    if _REQUIRED_LEAF_EKU not in eku:
        found = ", ".join(getattr(o, "_name", o.dotted_string) for o in eku) or "none"
        raise _fail(
            "leaf certificate extendedKeyUsage lacks emailProtection (1.3.6.1.5.5.7.3.4), "
            f"which c2pa's default trust configuration requires; found: {found}"
        )


def _check_chain_links(chain: Sequence[x509.Certificate], now: dt.datetime) -> None:
    for index in range(len(chain) - 1):
        child, parent = chain[index], chain[index + 1]
        if not _issued_by(child, parent):
            raise _fail(
                "certificate chain is not leaf first / not linked: certificate "
                f"#{index + 1} ({_describe(child)}) is not issued and signed by "
                f"certificate #{index + 2} ({_describe(parent)})"
            )
        if not _is_ca(parent):
            raise _fail(
                f"certificate chain is broken: certificate #{index + 2} ({_describe(parent)}) "
                "issues another certificate but is not a CA"
            )
        _check_validity(parent, f"chain certificate #{index + 2} ({_describe(parent)})", now)


def _check_anchors(chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]) -> None:
    top = chain[-1]
    for anchor in anchors:
        if top == anchor or _issued_by(top, anchor):
            return
    raise _fail(
        f"certificate chain does not lead to any configured trust anchor: the last chain "
        f"certificate ({_describe(top)}) is not issued by any of "
        f"{', '.join(_describe(a) for a in anchors)}"
    )


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _to_raw_ecdsa(signature: bytes, curve_bytes: int) -> bytes:
    """Normalise an ECDSA signature to raw ``r||s`` (the COSE format). DER is converted."""
    if len(signature) == 2 * curve_bytes:
        return signature
    r, s = decode_dss_signature(signature)
    return r.to_bytes(curve_bytes, "big") + s.to_bytes(curve_bytes, "big")


def _curve_bytes(alg: str) -> int:
    return _EC_INT_BYTES[alg]


def _local_sign_callback(private_key: _SigningKey, alg: str) -> SignCallback:
    """Signing callable for a locally held key (same mechanism a KMS hook uses).

    The algorithm/key-type match was checked before, the isinstance branches only narrow.
    """
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        ec_key, size, ec_hash = private_key, _curve_bytes(alg), _HASHES[alg]

        def sign_ec(data: bytes) -> bytes:
            return _to_raw_ecdsa(ec_key.sign(data, ec.ECDSA(ec_hash())), size)

        return sign_ec
    if isinstance(private_key, rsa.RSAPrivateKey):
        rsa_key, rsa_hash = private_key, _HASHES[alg]

        def sign_pss(data: bytes) -> bytes:
            return rsa_key.sign(data, _pss(rsa_hash), rsa_hash())

        return sign_pss
    ed_key = private_key

    def sign_ed25519(data: bytes) -> bytes:
        return ed_key.sign(data)

    return sign_ed25519


def _pss(hash_cls: type[hashes.HashAlgorithm]) -> padding.PSS:
    # COSE PS* mandates MGF1 with the same hash and a salt as long as the digest.
    return padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=padding.PSS.DIGEST_LENGTH)


def _verify_with_leaf(leaf: x509.Certificate, alg: str, data: bytes, signature: bytes) -> bool:
    public_key = leaf.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and alg in _EC_CURVES:
            size = _curve_bytes(alg)
            raw = _to_raw_ecdsa(signature, size)
            der = encode_dss_signature(
                int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
            )
            public_key.verify(der, data, ec.ECDSA(_HASHES[alg]()))
        elif isinstance(public_key, rsa.RSAPublicKey) and alg in _HASHES:
            public_key.verify(signature, data, _pss(_HASHES[alg]), _HASHES[alg]())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _build_material(
    *,
    chain: list[x509.Certificate],
    alg: str,
    sign: SignCallback,
    tsa_url: str | None,
    anchors_pem: bytes | None,
    backend: str,
    now: dt.datetime | None,
) -> SignerMaterial:
    """Checks common to the local and the callback path, then assemble the material."""
    moment = now or dt.datetime.now(dt.UTC)
    leaf = chain[0]
    _check_algorithm_matches_key(alg, leaf.public_key(), "leaf certificate key")
    _check_leaf_profile(leaf, chain)
    _check_validity(leaf, f"leaf ({_describe(leaf)})", moment)
    _check_chain_links(chain, moment)
    if anchors_pem is not None:
        anchors = _parse_certificates(anchors_pem, "trust anchors")
        _check_anchors(chain, anchors)
    if tsa_url is not None and not re.match(r"^https?://\S+$", tsa_url):
        raise _fail(f"tsa_url must be an http(s) URL, got {tsa_url!r}")
    # Re-serialise the parsed chain: drops comments/whitespace and any trailing junk so that
    # exactly the validated certificates reach c2pa.
    clean_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return SignerMaterial(
        algorithm=alg,
        chain_pem=clean_chain,
        leaf_sha256_fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        leaf_subject=leaf.subject.rfc4514_string(),
        leaf_serial_number=leaf.serial_number,
        not_valid_after=leaf.not_valid_after_utc,
        sign=sign,
        tsa_url=tsa_url,
        trust_anchors_pem=anchors_pem,
        backend=backend,
    )


def load_signer_material(config: SignerConfig, *, now: dt.datetime | None = None) -> SignerMaterial:
    """Read and validate local PEM credentials; raise :class:`SignerConfigurationError`.

    Design choice: the local key signs through the same callback mechanism as a KMS/HSM
    (:func:`signer_material_from_callback`), using ``cryptography``. One code path is
    exercised by the tests for both deployments, and the key bytes never cross into c2pa.

    Checks, each with its own message: unreadable/empty files, non-PEM chain, encrypted or
    non-PKCS#8 key, unsupported algorithm or algorithm/key-type mismatch, self-signed leaf,
    CA leaf or CA-first (reversed) chain, missing digitalSignature, EKU without
    emailProtection, leaf or intermediate expired / not yet valid, chain not linked (issuer
    name and signature), key not matching the leaf, chain not leading to the trust anchors.
    """
    alg = _normalise_algorithm(config.algorithm)
    chain_pem = _read_file(config.cert_chain_path, "certificate chain")
    key_pem = _read_file(config.private_key_path, "private key")
    anchors_pem = (
        _read_file(config.trust_anchors_path, "trust anchors")
        if config.trust_anchors_path is not None
        else None
    )
    chain = _parse_certificates(chain_pem, f"certificate chain {config.cert_chain_path}")
    private_key = _load_private_key(key_pem, config.private_key_path)
    _check_algorithm_matches_key(alg, private_key.public_key(), "private key")
    material = _build_material(
        chain=chain,
        alg=alg,
        sign=_local_sign_callback(private_key, alg),
        tsa_url=config.tsa_url,
        anchors_pem=anchors_pem,
        backend="local-pem",
        now=now,
    )
    # Compared after the certificate checks so that a wrong chain is reported as such rather
    # than as a key mismatch.
    if _spki(private_key.public_key()) != _spki(chain[0].public_key()):
        raise _fail(
            f"private key {config.private_key_path} does not match the leaf certificate's "
            f"public key ({_describe(chain[0])})"
        )
    return material


def signer_material_from_callback(
    *,
    sign: SignCallback,
    cert_chain_pem: bytes,
    algorithm: str = "es256",
    tsa_url: str | None = None,
    trust_anchors_pem: bytes | None = None,
    probe: bool = True,
    now: dt.datetime | None = None,
) -> SignerMaterial:
    """Signer material for a key held elsewhere (KMS, HSM, remote signing service).

    ``sign(data) -> signature`` is called once per signed file with the COSE to-be-signed
    bytes. The certificate checks are the same as for local keys. With ``probe=True`` (the
    default) the callable signs a fixed probe at configuration time and the signature is
    verified against the leaf's public key: that is the only way to catch "KMS key does not
    match the certificate" before the first job fails.
    """
    alg = _normalise_algorithm(algorithm)
    chain = _parse_certificates(cert_chain_pem, "certificate chain")
    material = _build_material(
        chain=chain,
        alg=alg,
        sign=sign,
        tsa_url=tsa_url,
        anchors_pem=trust_anchors_pem,
        backend="callback",
        now=now,
    )
    if probe:
        data = b"governed-reenactment c2pa signer probe"
        try:
            signature = sign(data)
        except Exception as exc:  # noqa: BLE001 - any back-end failure is a config error here
            raise _fail(f"signing callback failed on the configuration probe: {exc!r}") from exc
        if not signature or not _verify_with_leaf(chain[0], alg, data, signature):
            raise _fail(
                "signing callback's key does not match the leaf certificate's public key "
                f"({_describe(chain[0])}): probe signature does not verify"
            )
    return material


# --------------------------------------------------------------------------------------------
# Manifest definition
# --------------------------------------------------------------------------------------------


class IngredientRef(NamedTuple):
    """An input of the generation. A plain ``(title, format, sha256)`` tuple works too.

    ``title`` ends up in the public manifest: use a role ("portrait", "driving video"), never
    a file name or anything that identifies the person.
    """

    title: str
    format: str
    sha256: str


def _json_clone(value: Any, what: str) -> Any:
    # Round-trip through strict JSON: rejects NaN/inf and non-serialisable values now (not
    # deep inside c2pa) and turns tuples into lists so read-back compares equal.
    try:
        return json.loads(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc


def build_manifest_definition(
    *,
    title: str,
    format: str,  # noqa: A002 - mirrors the C2PA manifest field name
    software_agent: str,
    ingredients: Sequence[IngredientRef | tuple[str, str, str]],
    org_assertion: Mapping[str, Any],
    software_agent_version: str | None = None,
    claim_generator_name: str = "governed-reenactment",
    claim_generator_version: str | None = None,
    org_assertion_label: str = ORG_ASSERTION_LABEL,
) -> dict[str, Any]:
    """Return the c2pa manifest definition (a JSON-able dict) for one generated video.

    Contains a ``c2pa.actions`` assertion with one ``c2pa.created`` action (digital source
    type trainedAlgorithmicMedia, ``softwareAgent``), one ``inputTo`` ingredient per input with
    its SHA-256 in ``metadata[INGREDIENT_SHA256_KEY]`` (c2pa stores no hash for JSON-only
    ingredients), and the organisation assertion under ``org_assertion_label`` with the
    caller's payload verbatim (job id, approval ids, hashed consent ids, model version and
    weights hash, leakage verdict and scores, seed, params hash). No thumbnail is declared;
    :func:`sign_file` additionally disables c2pa's automatic thumbnails.
    """
    if not title or not format or not software_agent:
        raise ValueError("title, format and software_agent are required")
    agent: dict[str, str] = {"name": software_agent}
    if software_agent_version:
        agent["version"] = software_agent_version
    generator: dict[str, str] = {"name": claim_generator_name}
    if claim_generator_version:
        generator["version"] = claim_generator_version

    ingredient_defs: list[dict[str, Any]] = []
    for raw in ingredients:
        ref = IngredientRef(*raw)
        digest = ref.sha256.lower()
        if not _SHA256_HEX.match(digest):
            raise ValueError(f"ingredient {ref.title!r}: sha256 must be 64 hex characters")
        ingredient_defs.append(
            {
                "title": ref.title,
                "format": ref.format,
                "relationship": "inputTo",
                "metadata": {INGREDIENT_SHA256_KEY: digest},
            }
        )

    return {
        "claim_generator_info": [generator],
        "title": title,
        "format": format,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": DIGITAL_SOURCE_TYPE_TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": agent,
                        }
                    ]
                },
            },
            {
                "label": org_assertion_label,
                "data": _json_clone(dict(org_assertion), "org_assertion"),
            },
        ],
        "ingredients": ingredient_defs,
    }


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


class VerificationStatus(enum.StrEnum):
    TRUSTED = "TRUSTED"  # intact, signed by a chain leading to a supplied trust anchor
    VALID_UNTRUSTED = "VALID_UNTRUSTED"  # intact and well signed, signer not anchored
    INVALID = "INVALID"  # tampered, corrupted, unparsable, or credentials invalid/expired
    NO_MANIFEST = "NO_MANIFEST"  # the file carries no C2PA manifest at all


@dataclass(frozen=True)
class ValidationIssue:
    code: str  # c2pa validation code, or "reader.error" when c2pa could not read the file
    explanation: str = ""
    url: str = ""


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of :func:`verify_file`.

    The payload fields are filled even for INVALID files when c2pa could decode them, for
    forensics only: trust them only when ``status`` is TRUSTED.
    """

    status: VerificationStatus
    validation_state: str | None = None  # c2pa's raw "Trusted" / "Valid" / "Invalid"
    active_manifest_label: str | None = None
    org_assertion: dict[str, Any] | None = None
    ingredients: tuple[dict[str, Any], ...] = ()
    validation_errors: tuple[ValidationIssue, ...] = ()
    signer_common_name: str | None = None
    signer_issuer: str | None = None
    signer_serial_number: int | None = None
    manifest_store_json: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status is VerificationStatus.TRUSTED

    @property
    def error_codes(self) -> tuple[str, ...]:
        return tuple(issue.code for issue in self.validation_errors)


def _c2pa() -> Any:
    """Import c2pa lazily: Django start-up, system checks and unrelated commands stay fast
    and keep working on hosts where the native library is missing."""
    import c2pa  # noqa: PLC0415

    return c2pa


def c2pa_versions() -> dict[str, str]:
    """Versions of the binding and the native SDK (for ProvenanceRecord / system checks)."""
    lib = _c2pa()
    return {"c2pa-python": str(lib.__version__), "c2pa-rs": str(lib.sdk_version())}


def _settings(*, sign: bool, trust_anchors_pem: bytes | None) -> dict[str, Any]:
    settings = json.loads(json.dumps(_COMMON_SETTINGS))
    if sign:
        settings["verify"]["verify_after_sign"] = True
        # Claim and ingredient thumbnails would embed a picture of the face in the manifest.
        settings["builder"] = {"thumbnail": {"enabled": False}}
    if trust_anchors_pem is not None:
        # trust_anchors (not user_anchors) REPLACES the anchor list: TRUSTED must mean
        # "chains to our root", never "chains to any root some future c2pa build ships with".
        settings["trust"] = {"trust_anchors": trust_anchors_pem.decode("ascii")}
    return settings


@contextlib.contextmanager
def _context(settings: Mapping[str, Any]) -> Iterator[Any]:
    ctx = _c2pa().Context.from_dict(dict(settings))
    try:
        yield ctx
    finally:
        ctx.close()


def _guess_format(path: Path) -> str | None:
    mime, _ = mimetypes.guess_type(path.name)
    if path.suffix.lower() == ".m4v":
        mime = "video/x-m4v"
    return mime


def _issues(entries: Any) -> list[ValidationIssue]:
    out: list[ValidationIssue] = []
    for entry in entries or []:
        if isinstance(entry, Mapping) and entry.get("code"):
            out.append(
                ValidationIssue(
                    code=str(entry["code"]),
                    explanation=str(entry.get("explanation") or ""),
                    url=str(entry.get("url") or ""),
                )
            )
    return out


def _failures(store: Mapping[str, Any]) -> tuple[ValidationIssue, ...]:
    """All failure entries: active manifest, ingredient deltas and the legacy status list."""
    found: list[ValidationIssue] = []
    results = store.get("validation_results") or {}
    if isinstance(results, Mapping):
        active = results.get("activeManifest") or {}
        if isinstance(active, Mapping):
            found += _issues(active.get("failure"))
        for delta in results.get("ingredientDeltas") or []:
            if isinstance(delta, Mapping):
                deltas = delta.get("validationDeltas") or {}
                if isinstance(deltas, Mapping):
                    found += _issues(deltas.get("failure"))
    found += _issues(store.get("validation_status"))
    unique: dict[tuple[str, str], ValidationIssue] = {}
    for issue in found:
        unique.setdefault((issue.code, issue.url), issue)
    return tuple(unique.values())


def _status_from(state: str | None, failures: Sequence[ValidationIssue]) -> VerificationStatus:
    codes = {issue.code for issue in failures}
    # Fail closed: any failure other than "untrusted" is INVALID whatever the state says.
    if codes - {_UNTRUSTED_CODE}:
        return VerificationStatus.INVALID
    if state == "Trusted" and not codes:
        return VerificationStatus.TRUSTED
    if state in ("Valid", "Trusted"):
        return VerificationStatus.VALID_UNTRUSTED
    return VerificationStatus.INVALID


def _result_from_store(store_json: str) -> VerificationResult:
    store = json.loads(store_json)
    if not isinstance(store, Mapping):
        raise ValueError("manifest store is not a JSON object")
    label = store.get("active_manifest")
    manifests = store.get("manifests") or {}
    active = manifests.get(label) if isinstance(manifests, Mapping) and label else None
    failures = _failures(store)
    state = store.get("validation_state")
    status = _status_from(state, failures)
    org: dict[str, Any] | None = None
    ingredients: tuple[dict[str, Any], ...] = ()
    cn = issuer = None
    serial: int | None = None
    if isinstance(active, Mapping):
        for assertion in active.get("assertions") or []:
            if isinstance(assertion, Mapping) and assertion.get("label") == ORG_ASSERTION_LABEL:
                data = assertion.get("data")
                org = dict(data) if isinstance(data, Mapping) else None
        ingredients = tuple(
            dict(i) for i in active.get("ingredients") or [] if isinstance(i, Mapping)
        )
        info = active.get("signature_info") or {}
        if isinstance(info, Mapping):
            cn = info.get("common_name")
            issuer = info.get("issuer")
            with contextlib.suppress(TypeError, ValueError):
                serial = int(info["cert_serial_number"]) if info.get("cert_serial_number") else None
    elif status is not VerificationStatus.INVALID:
        # A store without its active manifest cannot vouch for anything.
        status = VerificationStatus.INVALID
    return VerificationResult(
        status=status,
        validation_state=state if isinstance(state, str) else None,
        active_manifest_label=label if isinstance(label, str) else None,
        org_assertion=org,
        ingredients=ingredients,
        validation_errors=failures,
        signer_common_name=cn,
        signer_issuer=issuer,
        signer_serial_number=serial,
        manifest_store_json=store_json,
    )


def _invalid(message: str) -> VerificationResult:
    return VerificationResult(
        status=VerificationStatus.INVALID,
        validation_errors=(ValidationIssue(code="reader.error", explanation=message),),
    )


def verify_file(
    path: Path,
    *,
    trust_anchors_pem: bytes | None,
    format: str | None = None,  # noqa: A002
) -> VerificationResult:
    """Read and validate the C2PA manifest embedded in ``path``.

    TRUSTED needs ``trust_anchors_pem``; without it the best outcome is VALID_UNTRUSTED.
    Never raises for file *content* (corrupt, truncated, random, unsupported: INVALID, or
    NO_MANIFEST when c2pa finds no manifest at all). Raises ``FileNotFoundError`` /
    ``OSError`` only when the path itself cannot be opened, which is a caller bug rather than
    a verdict about the file.
    """
    path = Path(path)
    fmt = format or _guess_format(path)
    with open(path, "rb") as handle:
        try:
            lib = _c2pa()
            with _context(_settings(sign=False, trust_anchors_pem=trust_anchors_pem)) as ctx:
                try:
                    reader = lib.Reader(fmt, handle, context=ctx)
                except lib.C2paError.ManifestNotFound:
                    return VerificationResult(status=VerificationStatus.NO_MANIFEST)
                with reader:
                    store_json = reader.json()
            return _result_from_store(store_json)
        except Exception as exc:  # noqa: BLE001 - a hostile file must never crash the caller
            return _invalid(f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignResult:
    dest: Path
    manifest_store_json: str = field(repr=False)
    validation_state: str | None
    status: VerificationStatus
    active_manifest_label: str | None
    signer_cert_sha256: str  # SHA-256 fingerprint of the leaf certificate (hex)
    signed_file_sha256: str  # SHA-256 of the signed output, for the provenance record
    manifest_size: int  # bytes of the embedded manifest store
    elapsed_s: float


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; best effort on filesystems that refuse O_DIRECTORY.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sign_file(
    *,
    source: Path,
    dest: Path,
    manifest: Mapping[str, Any],
    signer_material: SignerMaterial,
    overwrite: bool = False,
) -> SignResult:
    """Embed and sign ``manifest`` into a copy of ``source`` written atomically at ``dest``.

    The signed copy is written to a temporary file in ``dest``'s directory, read back and
    verified (TRUSTED required when the material has trust anchors, otherwise at least
    VALID_UNTRUSTED, and the organisation assertion must read back unchanged), then moved
    into place with ``os.replace``. On any failure the temporary file is removed and ``dest``
    is untouched: absent if it was absent. ``dest`` must not exist unless ``overwrite``.
    Raises :class:`SigningError` (with the c2pa or callback error as ``__cause__``).
    """
    started = time.perf_counter()
    source, dest = Path(source), Path(dest)
    fmt = manifest.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise SigningError("manifest definition has no 'format' (MIME type of the asset)")
    if not source.is_file():
        raise SigningError(f"source file {source} does not exist")
    if dest.exists() and not overwrite:
        raise SigningError(f"destination {dest} already exists (pass overwrite=True)")
    if not dest.parent.is_dir():
        raise SigningError(f"destination directory {dest.parent} does not exist")

    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".c2pa-tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    callback_errors: list[BaseException] = []
    material = signer_material

    def callback(data: bytes) -> bytes:
        # c2pa-python swallows callback exceptions (logs, returns -1); keep them so the
        # SigningError can carry the real KMS/HSM error as its cause.
        try:
            signature = material.sign(data)
            if material.algorithm in _EC_CURVES:
                signature = _to_raw_ecdsa(signature, _curve_bytes(material.algorithm))
            return signature
        except BaseException as exc:
            callback_errors.append(exc)
            raise

    try:
        lib = _c2pa()
        try:
            with os.fdopen(fd, "w+b") as out, open(source, "rb") as src:
                fd = -1
                with (
                    _context(_settings(sign=True, trust_anchors_pem=None)) as ctx,
                    lib.Signer.from_callback(
                        callback,
                        getattr(lib.C2paSigningAlg, material.algorithm.upper()),
                        material.chain_pem.decode("ascii"),
                        material.tsa_url,
                    ) as signer,
                    lib.Builder(dict(manifest), context=ctx) as builder,
                ):
                    manifest_bytes = builder.sign(signer, fmt, src, out)
                out.flush()
                os.fsync(out.fileno())
        except lib.C2paError as exc:
            cause = callback_errors[0] if callback_errors else exc
            raise SigningError(f"c2pa signing failed: {exc}") from cause

        check = verify_file(tmp, trust_anchors_pem=material.trust_anchors_pem, format=fmt)
        wanted = (
            {VerificationStatus.TRUSTED}
            if material.trust_anchors_pem is not None
            else {VerificationStatus.TRUSTED, VerificationStatus.VALID_UNTRUSTED}
        )
        if check.status not in wanted:
            raise SigningError(
                f"signed output failed read-back verification: {check.status} "
                f"{', '.join(check.error_codes) or check.validation_state}"
            )
        expected_org = _expected_org_assertion(manifest)
        if expected_org is not None and check.org_assertion != expected_org:
            raise SigningError("organisation assertion did not read back unchanged")

        signed_sha256 = _sha256_file(tmp)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except SigningError:
        _cleanup(tmp, fd)
        raise
    except Exception as exc:
        _cleanup(tmp, fd)
        raise SigningError(f"signing {source} failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:  # KeyboardInterrupt etc.: still never leave a temp file behind
        _cleanup(tmp, fd)
        raise

    return SignResult(
        dest=dest,
        manifest_store_json=check.manifest_store_json or "",
        validation_state=check.validation_state,
        status=check.status,
        active_manifest_label=check.active_manifest_label,
        signer_cert_sha256=material.leaf_sha256_fingerprint,
        signed_file_sha256=signed_sha256,
        manifest_size=len(manifest_bytes),
        elapsed_s=time.perf_counter() - started,
    )


def _expected_org_assertion(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    for assertion in manifest.get("assertions") or []:
        if isinstance(assertion, Mapping) and assertion.get("label") == ORG_ASSERTION_LABEL:
            return _json_clone(assertion.get("data"), "org_assertion")
    return None


def _cleanup(tmp: Path, fd: int) -> None:
    if fd != -1:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
