"""Single-host development run (`make run`): SQLite under var/, embedded broker, debug on."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DEBUG", True)

# The single-host run keeps its state under var/; create it so a first `migrate` just works.
VAR_DIR.mkdir(parents=True, exist_ok=True)  # noqa: F405

# `make run` generates development signer material here (manage.py provenance_dev_ca); it is
# used once it exists, unless the environment names other material.
_DEV_CA = VAR_DIR / "c2pa"  # noqa: F405
if (_DEV_CA / "chain.pem").exists():
    C2PA_SIGNER_CHAIN = env.path("C2PA_SIGNER_CHAIN", _DEV_CA / "chain.pem")
    C2PA_SIGNER_KEY = env.path("C2PA_SIGNER_KEY", _DEV_CA / "signer.key.pem")
    C2PA_TRUST_ANCHORS = env.path("C2PA_TRUST_ANCHORS", _DEV_CA / "root.pem")

# Local receivers (a developer's own test endpoint) are plain http.
WEBHOOKS_ALLOW_HTTP = env.bool("WEBHOOKS_ALLOW_HTTP", True)
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", True)
