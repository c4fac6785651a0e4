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
