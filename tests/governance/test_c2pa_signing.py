"""Real C2PA signing and verification of a small H.264 MP4 (no mocks, no Django).

Everything runs offline: a development CA is generated in a temporary directory, the video
is synthesised with PyAV, and c2pa-python signs and validates it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from governance.integrations import c2pa_signing as cs
from governance.integrations import dev_ca
from governance.integrations.c2pa_signing import (
    INGREDIENT_SHA256_KEY,
    ORG_ASSERTION_LABEL,
    SignerConfig,
    SignerConfigurationError,
    SigningError,
    VerificationStatus,
)

JOB_ID = "job-7f3c9a12-e4b8-4d2e-9c1a-5b6d7e8f9a0b"
PORTRAIT_SHA = hashlib.sha256(b"portrait bytes").hexdigest()
DRIVING_SHA = hashlib.sha256(b"driving video bytes").hexdigest()
ORG_PAYLOAD: dict[str, Any] = {
    "job_id": JOB_ID,
    "approval_ids": ["appr-1", "appr-2"],
    "consent_ids_sha256": [hashlib.sha256(b"consent-42").hexdigest()],
    "model": {"name": "x-nemo", "version": "1.0.3", "weights_sha256": "ab" * 32},
    "leakage": {"verdict": "pass", "scores": {"identity_cos": 0.1875, "lpips": 0.25}},
    "seed": 1234,
    "params_sha256": "cd" * 32,
}


# ------------------------------------------------------------------------------- fixtures


def _make_mp4(path: Path, frames: int = 16, size: int = 64) -> None:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        assert isinstance(stream, av.VideoStream)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        y, x = np.mgrid[0:size, 0:size]
        for i in range(frames):  # moving gradient, so every frame differs
            rgb = np.stack([(x * 4 + i * 8) % 256, (y * 4) % 256, ((x + y) * 2 + i * 4) % 256], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _manifest() -> dict[str, Any]:
    return cs.build_manifest_definition(
        title="reenactment.mp4",
        format="video/mp4",
        software_agent="governed-reenactment/x-nemo",
        software_agent_version="1.0.3",
        ingredients=[
            ("portrait", "image/png", PORTRAIT_SHA),
            cs.IngredientRef("driving video", "video/mp4", DRIVING_SHA),
        ],
        org_assertion=ORG_PAYLOAD,
        claim_generator_version="0.1.0",
    )


@dataclass(frozen=True)
class Signed:
    ca: dev_ca.DevCAPaths
    material: cs.SignerMaterial
    unsigned: Path
    path: Path
    result: cs.SignResult
    root_pem: bytes


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    base = tmp_path_factory.mktemp("c2pa")
    ca = dev_ca.generate_dev_ca(base / "ca")
    material = cs.load_signer_material(
        SignerConfig(cert_chain_path=ca.chain, private_key_path=ca.key, trust_anchors_path=ca.root)
    )
    unsigned = base / "unsigned.mp4"
    _make_mp4(unsigned)
    dest = base / "signed.mp4"
    result = cs.sign_file(
        source=unsigned, dest=dest, manifest=_manifest(), signer_material=material
    )
    return Signed(ca, material, unsigned, dest, result, ca.root.read_bytes())


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> dev_ca.DevCAPaths:
    return dev_ca.generate_dev_ca(tmp_path_factory.mktemp("other") / "ca")


def _boxes(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Top-level ISO-BMFF boxes as (type, offset, size)."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        yield kind, offset, size
        offset += size


def _verify_bytes(tmp_path: Path, data: bytes, name: str, anchors: bytes | None):
    path = tmp_path / name
    path.write_bytes(data)
    return cs.verify_file(path, trust_anchors_pem=anchors)


# ------------------------------------------------------------------------------- dev CA


def test_dev_ca_material_is_what_c2pa_accepts(tmp_path: Path) -> None:
    paths = dev_ca.generate_dev_ca(tmp_path / "ca", common_name="Unit Test Signer")
    assert (paths.key.stat().st_mode & 0o777) == 0o600
    assert paths.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    chain = x509.load_pem_x509_certificates(paths.chain.read_bytes())
    root = x509.load_pem_x509_certificate(paths.root.read_bytes())
    assert len(chain) == 2  # leaf, intermediate; the root is the anchor, not in the chain
    leaf, intermediate = chain
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == (
        "Unit Test Signer"
    )
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_dev_ca_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = dev_ca.generate_dev_ca(tmp_path)
    key_before = first.key.read_bytes()
    with pytest.raises(dev_ca.DevCAError, match="refusing to overwrite"):
        dev_ca.generate_dev_ca(tmp_path)
    assert first.key.read_bytes() == key_before
    second = dev_ca.generate_dev_ca(tmp_path, force=True)
    assert second.key.read_bytes() != key_before
    assert (second.key.stat().st_mode & 0o777) == 0o600


# ------------------------------------------------------------------------------- sign + verify


def test_sign_result(signed: Signed) -> None:
    result = signed.result
    assert result.status is VerificationStatus.TRUSTED
    assert result.validation_state == "Trusted"
    assert result.dest == signed.path and signed.path.is_file()
    leaf = x509.load_pem_x509_certificates(signed.ca.chain.read_bytes())[0]
    assert result.signer_cert_sha256 == leaf.fingerprint(hashes.SHA256()).hex()
    assert result.signed_file_sha256 == hashlib.sha256(signed.path.read_bytes()).hexdigest()
    assert result.active_manifest_label and result.active_manifest_label.startswith("urn:c2pa:")
    assert ORG_ASSERTION_LABEL in result.manifest_store_json
    assert result.manifest_size > 0
    # Only the signed file remains next to it: no temporary left-overs.
    assert not [p for p in signed.path.parent.iterdir() if p.name.endswith(".c2pa-tmp")]


def test_verify_trusted_with_root_anchor(signed: Signed) -> None:
    res = cs.verify_file(signed.path, trust_anchors_pem=signed.root_pem)
    assert res.status is VerificationStatus.TRUSTED
    assert res.ok and res.validation_errors == ()
    assert res.active_manifest_label == signed.result.active_manifest_label
    leaf = x509.load_pem_x509_certificates(signed.ca.chain.read_bytes())[0]
    assert res.signer_serial_number == leaf.serial_number
    assert res.signer_common_name == dev_ca.DEFAULT_COMMON_NAME


def test_verify_without_anchor_is_valid_untrusted(signed: Signed) -> None:
    res = cs.verify_file(signed.path, trust_anchors_pem=None)
    assert res.status is VerificationStatus.VALID_UNTRUSTED
    assert res.error_codes == ("signingCredential.untrusted",)
    assert res.org_assertion == ORG_PAYLOAD


def test_verify_with_foreign_anchor_is_valid_untrusted(
    signed: Signed, other_ca: dev_ca.DevCAPaths
) -> None:
    res = cs.verify_file(signed.path, trust_anchors_pem=other_ca.root.read_bytes())
    assert res.status is VerificationStatus.VALID_UNTRUSTED


def test_org_assertion_action_and_ingredients_round_trip(signed: Signed) -> None:
    res = cs.verify_file(signed.path, trust_anchors_pem=signed.root_pem)
    assert res.org_assertion == ORG_PAYLOAD
    hashes_by_title = {i["title"]: i["metadata"][INGREDIENT_SHA256_KEY] for i in res.ingredients}
    assert hashes_by_title == {"portrait": PORTRAIT_SHA, "driving video": DRIVING_SHA}
    assert {i["relationship"] for i in res.ingredients} == {"inputTo"}
    store = json.loads(res.manifest_store_json or "{}")
    active = store["manifests"][store["active_manifest"]]
    actions = next(a for a in active["assertions"] if a["label"].startswith("c2pa.actions"))
    created = actions["data"]["actions"][0]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == cs.DIGITAL_SOURCE_TYPE_TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"]["name"] == "governed-reenactment/x-nemo"


def test_no_thumbnail_anywhere(signed: Signed) -> None:
    res = cs.verify_file(signed.path, trust_anchors_pem=signed.root_pem)
    store = json.loads(res.manifest_store_json or "{}")
    active = store["manifests"][store["active_manifest"]]
    assert "thumbnail" not in active
    assert all("thumbnail" not in i for i in active.get("ingredients", []))
    assert not any("thumbnail" in a["label"] for a in active["assertions"])
    assert b"c2pa.thumbnail" not in signed.path.read_bytes()


# ------------------------------------------------------------------------------- tampering


def test_flipped_media_byte_is_invalid(signed: Signed, tmp_path: Path) -> None:
    data = bytearray(signed.path.read_bytes())
    _, offset, size = next(b for b in _boxes(bytes(data)) if b[0] == b"mdat")
    data[offset + size // 2] ^= 0xFF
    res = _verify_bytes(tmp_path, bytes(data), "flipped.mp4", signed.root_pem)
    assert res.status is VerificationStatus.INVALID
    assert "assertion.bmffHash.mismatch" in res.error_codes


def test_edited_assertion_is_invalid(signed: Signed, tmp_path: Path) -> None:
    data = signed.path.read_bytes()
    needle = JOB_ID.encode()
    assert data.count(needle) == 1  # the job id lives in the org assertion's CBOR
    forged = data.replace(needle, needle[:-1] + b"c")
    res = _verify_bytes(tmp_path, forged, "forged.mp4", signed.root_pem)
    assert res.status is VerificationStatus.INVALID
    assert "assertion.hashedURI.mismatch" in res.error_codes


@pytest.mark.parametrize("keep", [0.5, 0.9, -10, 100, 7])
def test_truncated_file_is_invalid(signed: Signed, tmp_path: Path, keep: float) -> None:
    data = signed.path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    res = _verify_bytes(tmp_path, data[:cut], "truncated.mp4", signed.root_pem)
    assert res.status is VerificationStatus.INVALID
    assert res.validation_errors


def test_unsigned_mp4_has_no_manifest(signed: Signed) -> None:
    res = cs.verify_file(signed.unsigned, trust_anchors_pem=signed.root_pem)
    assert res.status is VerificationStatus.NO_MANIFEST
    assert res.org_assertion is None


@pytest.mark.parametrize("name", ["noise.mp4", "noise.bin", "noise"])
@pytest.mark.parametrize("size", [0, 13, 4096])
def test_random_bytes_never_raise(signed: Signed, tmp_path: Path, name: str, size: int) -> None:
    res = _verify_bytes(tmp_path, os.urandom(size), name, signed.root_pem)
    assert res.status in (VerificationStatus.INVALID, VerificationStatus.NO_MANIFEST)


def test_verify_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cs.verify_file(tmp_path / "absent.mp4", trust_anchors_pem=None)


# ------------------------------------------------------------------------------- bad credentials

BAD_CASES = [
    (dev_ca.BadCertKind.CA_LEAF, r"is a CA \(basicConstraints CA=true\)"),
    (dev_ca.BadCertKind.WRONG_EKU, r"extendedKeyUsage lacks emailProtection"),
    (dev_ca.BadCertKind.NO_EKU, r"no extendedKeyUsage extension"),
    (dev_ca.BadCertKind.NO_DIGITAL_SIGNATURE, r"keyUsage lacks digitalSignature"),
    (dev_ca.BadCertKind.EXPIRED, r"leaf .* has expired"),
    (dev_ca.BadCertKind.NOT_YET_VALID, r"leaf .* is not yet valid"),
    (dev_ca.BadCertKind.SELF_SIGNED, r"is self-signed"),
    (dev_ca.BadCertKind.KEY_MISMATCH, r"does not match the leaf certificate's public key"),
    (dev_ca.BadCertKind.CHAIN_REVERSED, r"not leaf first"),
    (dev_ca.BadCertKind.CHAIN_UNLINKED, r"not leaf first / not linked"),
    (dev_ca.BadCertKind.ENCRYPTED_KEY, r"is encrypted"),
    (dev_ca.BadCertKind.TRADITIONAL_KEY, r"is not PKCS#8: found 'BEGIN EC PRIVATE KEY'"),
]


@pytest.mark.parametrize(("kind", "message"), BAD_CASES, ids=[k.value for k, _ in BAD_CASES])
def test_bad_credentials_rejected_at_configuration(
    tmp_path: Path, kind: dev_ca.BadCertKind, message: str
) -> None:
    paths = dev_ca.generate_bad_signer(tmp_path, kind)
    config = SignerConfig(
        cert_chain_path=paths.chain, private_key_path=paths.key, trust_anchors_path=paths.root
    )
    with pytest.raises(SignerConfigurationError, match=message):
        cs.load_signer_material(config)


def test_unreadable_files_rejected(tmp_path: Path, signed: Signed) -> None:
    with pytest.raises(SignerConfigurationError, match="cannot read certificate chain file"):
        cs.load_signer_material(SignerConfig(tmp_path / "nope.pem", signed.ca.key))
    with pytest.raises(SignerConfigurationError, match="cannot read private key file"):
        cs.load_signer_material(SignerConfig(signed.ca.chain, tmp_path / "nope.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(SignerConfigurationError, match="contains no PEM certificate"):
        cs.load_signer_material(SignerConfig(junk, signed.ca.key))


def test_algorithm_must_match_key(signed: Signed) -> None:
    with pytest.raises(SignerConfigurationError, match="es384 needs an EC secp384r1 key"):
        cs.load_signer_material(SignerConfig(signed.ca.chain, signed.ca.key, algorithm="es384"))
    with pytest.raises(SignerConfigurationError, match="ps256 needs an RSA key"):
        cs.load_signer_material(SignerConfig(signed.ca.chain, signed.ca.key, algorithm="ps256"))
    with pytest.raises(SignerConfigurationError, match="unsupported signing algorithm"):
        cs.load_signer_material(SignerConfig(signed.ca.chain, signed.ca.key, algorithm="hs256"))


def test_chain_must_lead_to_configured_anchor(signed: Signed, other_ca: dev_ca.DevCAPaths) -> None:
    config = SignerConfig(signed.ca.chain, signed.ca.key, trust_anchors_path=other_ca.root)
    with pytest.raises(SignerConfigurationError, match="does not lead to any configured trust"):
        cs.load_signer_material(config)


# ------------------------------------------------------------------------------- KMS/HSM hook


def _pem_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_callback_signer_returning_der_signs_trusted(signed: Signed, tmp_path: Path) -> None:
    key = _pem_key(signed.ca.key)
    calls: list[int] = []

    def kms_sign(data: bytes) -> bytes:  # what a KMS typically returns: DER ECDSA
        calls.append(len(data))
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    material = cs.signer_material_from_callback(
        sign=kms_sign,
        cert_chain_pem=signed.ca.chain.read_bytes(),
        trust_anchors_pem=signed.root_pem,
    )
    assert material.backend == "callback" and len(calls) == 1  # the configuration probe
    dest = tmp_path / "kms.mp4"
    result = cs.sign_file(
        source=signed.unsigned, dest=dest, manifest=_manifest(), signer_material=material
    )
    assert result.status is VerificationStatus.TRUSTED and len(calls) == 2
    assert result.signer_cert_sha256 == signed.material.leaf_sha256_fingerprint


def test_callback_probe_detects_wrong_key(signed: Signed) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SignerConfigurationError, match="probe signature does not verify"):
        cs.signer_material_from_callback(
            sign=lambda data: stranger.sign(data, ec.ECDSA(hashes.SHA256())),
            cert_chain_pem=signed.ca.chain.read_bytes(),
        )


# ------------------------------------------------------------------------------- failures


def _assert_nothing_left(directory: Path, dest: Path) -> None:
    assert not dest.exists()
    assert not [p for p in directory.iterdir() if p.name.endswith(".c2pa-tmp")]


def test_sign_failure_in_callback_leaves_nothing(signed: Signed, tmp_path: Path) -> None:
    def offline_hsm(data: bytes) -> bytes:
        raise RuntimeError("HSM offline")

    material = cs.signer_material_from_callback(
        sign=offline_hsm, cert_chain_pem=signed.ca.chain.read_bytes(), probe=False
    )
    dest = tmp_path / "out.mp4"
    with pytest.raises(SigningError) as info:
        cs.sign_file(
            source=signed.unsigned, dest=dest, manifest=_manifest(), signer_material=material
        )
    assert isinstance(info.value.__cause__, RuntimeError)
    _assert_nothing_left(tmp_path, dest)


def test_unreachable_tsa_fails_fast_and_leaves_nothing(signed: Signed, tmp_path: Path) -> None:
    material = cs.load_signer_material(
        SignerConfig(signed.ca.chain, signed.ca.key, tsa_url="http://127.0.0.1:9/tsa")
    )
    dest = tmp_path / "out.mp4"
    with pytest.raises(SigningError, match="c2pa signing failed"):
        cs.sign_file(
            source=signed.unsigned, dest=dest, manifest=_manifest(), signer_material=material
        )
    _assert_nothing_left(tmp_path, dest)


def test_sign_refuses_existing_dest_and_bad_source(signed: Signed, tmp_path: Path) -> None:
    dest = tmp_path / "exists.mp4"
    dest.write_bytes(b"keep me")
    with pytest.raises(SigningError, match="already exists"):
        cs.sign_file(
            source=signed.unsigned, dest=dest, manifest=_manifest(), signer_material=signed.material
        )
    assert dest.read_bytes() == b"keep me"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(2048))
    dest2 = tmp_path / "out.mp4"
    with pytest.raises(SigningError):
        cs.sign_file(
            source=garbage, dest=dest2, manifest=_manifest(), signer_material=signed.material
        )
    _assert_nothing_left(tmp_path, dest2)


def test_manifest_definition_validates_inputs() -> None:
    with pytest.raises(ValueError, match="sha256 must be 64 hex"):
        cs.build_manifest_definition(
            title="t",
            format="video/mp4",
            software_agent="a",
            ingredients=[("portrait", "image/png", "abc")],
            org_assertion={},
        )
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        cs.build_manifest_definition(
            title="t",
            format="video/mp4",
            software_agent="a",
            ingredients=[],
            org_assertion={"score": float("nan")},
        )
