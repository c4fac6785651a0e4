"""System checks: misconfiguration fails `manage.py check` (and start-up) with a clear message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register

from governance.integrations.c2pa_signing import SignerConfigurationError
from governance.signing import SignerNotConfiguredError, _material, signer_config_from_settings


@register(Tags.security)
def check_c2pa_signer(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Every published output is signed, so a deployment without a usable signer cannot run."""
    try:
        config = signer_config_from_settings()
    except SignerNotConfiguredError as exc:
        return [Error(str(exc), id="governance.E002")]
    if config is None:
        if settings.C2PA_SIGNER_REQUIRED:
            return [
                Error(
                    "No C2PA signer is configured, so no output could be published.",
                    hint="Set C2PA_SIGNER_CHAIN and C2PA_SIGNER_KEY to a PEM chain (leaf "
                    "first) and its unencrypted PKCS#8 key.",
                    id="governance.E001",
                )
            ]
        return []
    try:
        _material(config)
    except SignerConfigurationError as exc:
        return [Error(f"The C2PA signer is unusable: {exc}", id="governance.E003")]
    except OSError as exc:
        return [Error(f"The C2PA signer material cannot be read: {exc}", id="governance.E003")]
    return []
