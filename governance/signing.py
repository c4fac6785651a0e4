"""The platform's C2PA signer, configured from Django settings.

The adapter (governance.integrations.c2pa_signing) is plain Python; this module is the one place
that turns settings into a validated ``SignerMaterial`` and caches it per process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.conf import settings

from governance.integrations.c2pa_signing import (
    SignerConfig,
    SignerMaterial,
    load_signer_material,
)


class SignerNotConfiguredError(RuntimeError):
    """No signer material is configured; outputs cannot be published."""


def signer_config_from_settings() -> SignerConfig | None:
    chain: Path | None = settings.C2PA_SIGNER_CHAIN
    key: Path | None = settings.C2PA_SIGNER_KEY
    if chain is None and key is None:
        return None
    if chain is None or key is None:
        missing = "C2PA_SIGNER_CHAIN" if chain is None else "C2PA_SIGNER_KEY"
        raise SignerNotConfiguredError(
            f"{missing} is not set; the signer needs both a certificate chain and its key."
        )
    return SignerConfig(
        cert_chain_path=chain,
        private_key_path=key,
        tsa_url=settings.C2PA_TSA_URL,
        trust_anchors_path=settings.C2PA_TRUST_ANCHORS,
    )


def trust_anchors_pem() -> bytes | None:
    path: Path | None = settings.C2PA_TRUST_ANCHORS
    return path.read_bytes() if path is not None and path.exists() else None


@lru_cache(maxsize=4)
def _material(config: SignerConfig) -> SignerMaterial:
    return load_signer_material(config)


def signer_material_get() -> SignerMaterial:
    """The validated signer for this process; raises when none is configured."""
    config = signer_config_from_settings()
    if config is None:
        raise SignerNotConfiguredError(
            "No C2PA signer is configured: set C2PA_SIGNER_CHAIN and C2PA_SIGNER_KEY "
            "(`python manage.py provenance_dev_ca` makes development material)."
        )
    return _material(config)
