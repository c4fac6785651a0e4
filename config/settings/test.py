"""Test settings: real PostgreSQL and real Redis on the local machine unless overridden."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DATABASES = {
    "default": env.database("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/reenactment")
}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
# Hashing cost is irrelevant to what the tests check and dominates user creation otherwise.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# No collected static files in tests: WhiteNoise would only warn about the missing folder.
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("whitenoise")]  # noqa: F405

# Tests use loopback receivers over plain http, fast heartbeats and short webhook back-off.
WEBHOOKS_ALLOW_HTTP = True
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = True  # receivers run on 127.0.0.1
WORKER_HEARTBEAT_INTERVAL = env.float("WORKER_HEARTBEAT_INTERVAL", 1.0, minimum=0.1)
WORKER_HEARTBEAT_TIMEOUT = env.float("WORKER_HEARTBEAT_TIMEOUT", 5.0, minimum=1.0)
WEBHOOK_RETRY_BACKOFF = 1
WEBHOOK_MAX_RETRIES = 3
RENDER_LEASE_INTERVAL = env.float("RENDER_LEASE_INTERVAL", 0.5, minimum=0.1)
RENDER_LEASE_TIMEOUT = env.float("RENDER_LEASE_TIMEOUT", 3.0, minimum=0.5)
