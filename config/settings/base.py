"""Settings shared by every environment. Environment-specific values come from ``config.env``."""

from __future__ import annotations

from pathlib import Path

from config.env import Env

env = Env.from_os()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Writable state of a single-host run (SQLite file, embedded broker, media, signer material).
VAR_DIR = env.path("PLATFORM_VAR_DIR", BASE_DIR / "var")
assert VAR_DIR is not None

PRODUCT_NAME = "Governed Reenactment"
PRODUCT_VERSION = "0.1.0"

SECRET_KEY = env.str("SECRET_KEY", "django-insecure-local-development-key-not-for-production")
DEBUG = env.bool("DEBUG", False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "guardian",
    "governance",
    "reenactment",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # X-Request-ID and client address for the audit trail (governance/middleware.py).
    "governance.middleware.RequestContextMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker share the file: WAL lets readers run beside one writer,
    # and IMMEDIATE transactions take the write lock up front instead of failing mid-way.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "governance.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# guardian's anonymous user is not used: anonymous requests never get object permissions.
ANONYMOUS_USER_NAME = None
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", VAR_DIR / "media")

# Files: local filesystem by default, any S3-compatible store by settings (django-storages).
STORAGE_BACKEND = env.str("STORAGE_BACKEND", "filesystem")
if STORAGE_BACKEND == "filesystem":
    _default_storage: dict[str, object] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
elif STORAGE_BACKEND == "s3":
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("STORAGE_S3_BUCKET", required=True),
            "endpoint_url": env.optional("STORAGE_S3_ENDPOINT_URL"),
            "region_name": env.optional("STORAGE_S3_REGION"),
            "access_key": env.optional("STORAGE_S3_ACCESS_KEY_ID"),
            "secret_key": env.optional("STORAGE_S3_SECRET_ACCESS_KEY"),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"STORAGE_BACKEND must be 'filesystem' or 's3', got {STORAGE_BACKEND!r}."
    )
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Evidence uploads (consent forms, statement videos, reference photos): size limits per kind,
# enforced while the upload is read, before anything is stored (governance/services/evidence.py).
GOVERNANCE_EVIDENCE_MAX_PHOTO_BYTES = env.int(
    "GOVERNANCE_EVIDENCE_MAX_PHOTO_BYTES", 15 * 1024 * 1024, minimum=1
)
GOVERNANCE_EVIDENCE_MAX_DOCUMENT_BYTES = env.int(
    "GOVERNANCE_EVIDENCE_MAX_DOCUMENT_BYTES", 20 * 1024 * 1024, minimum=1
)
GOVERNANCE_EVIDENCE_MAX_VIDEO_BYTES = env.int(
    "GOVERNANCE_EVIDENCE_MAX_VIDEO_BYTES", 500 * 1024 * 1024, minimum=1
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": f"{PRODUCT_NAME} API",
    "DESCRIPTION": "Consented portrait reenactment with approvals, identity checks and provenance.",
    "VERSION": PRODUCT_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # Several models have a "status" field with different choices: name each enum explicitly.
    "ENUM_NAME_OVERRIDES": {
        "ProvenanceStatusEnum": "governance.models.provenance.ProvenanceStatus",
        "ModelVersionStatusEnum": "governance.models.registry.ModelVersionStatus",
        "SnapshotStatusEnum": "governance.models.registry.SnapshotStatus",
    },
}

# Celery. Without CELERY_BROKER_URL the single-host run uses kombu's on-disk transport, so
# `make run` needs no external service; tests and production set Redis or RabbitMQ.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_WORKER_PING_TIMEOUT = env.float("CELERY_WORKER_PING_TIMEOUT", 2.0, minimum=0.1)
CELERY_TASK_ALWAYS_EAGER = False

# Folders the platform reads weights and face models from. Never fetched at run time.
MODELS_DIR = env.path("MODELS_DIR", VAR_DIR / "models")
WEIGHTS_DIR = env.path("WEIGHTS_DIR", VAR_DIR / "weights")
# Where job work copies inputs and writes outputs before storing them (reenactment.scratch):
# per deployment, so one deployment's sweep of folders left by killed processes never touches
# another's. Put it on a local disk with room for a few videos per worker process.
SCRATCH_DIR = env.path("SCRATCH_DIR", VAR_DIR / "scratch")
FACE_MODELS_DIR = env.path("FACE_MODELS_DIR", None)

# C2PA signer material (PEM chain leaf-first, unencrypted PKCS#8 key) and trust anchors.
C2PA_SIGNER_CHAIN = env.path("C2PA_SIGNER_CHAIN", None)
C2PA_SIGNER_KEY = env.path("C2PA_SIGNER_KEY", None)
C2PA_TRUST_ANCHORS = env.path("C2PA_TRUST_ANCHORS", None)
C2PA_TSA_URL = env.optional("C2PA_TSA_URL")
PROVENANCE_VERIFY_MAX_BYTES = env.int("PROVENANCE_VERIFY_MAX_BYTES", 1 << 30, minimum=1)
# Production refuses to start without a signer (system check governance.E001).
C2PA_SIGNER_REQUIRED = False

# Render jobs (reenactment). Limits apply to uploads, checked by content before anything is stored.
RENDER_DEVICE = env.str("RENDER_DEVICE", "auto")  # auto | cpu | cuda
RENDER_DTYPE = env.str("RENDER_DTYPE", "auto")  # auto | float32 | float16 | bfloat16
RENDER_MAX_PORTRAIT_BYTES = env.int("RENDER_MAX_PORTRAIT_BYTES", 20 << 20, minimum=1)
RENDER_MAX_PORTRAIT_SIDE = env.int("RENDER_MAX_PORTRAIT_SIDE", 4096, minimum=256)
RENDER_MAX_DRIVING_BYTES = env.int("RENDER_MAX_DRIVING_BYTES", 500 << 20, minimum=1)
RENDER_MAX_DRIVING_SECONDS = env.int("RENDER_MAX_DRIVING_SECONDS", 600, minimum=1)
RENDER_DRIVING_FACE_SAMPLES = env.int("RENDER_DRIVING_FACE_SAMPLES", 5, minimum=1)
RENDER_SOFT_TIME_LIMIT = env.int("RENDER_SOFT_TIME_LIMIT", 3 * 3600, minimum=10)
RENDER_TIME_LIMIT = env.int("RENDER_TIME_LIMIT", 3 * 3600 + 300, minimum=20)
RENDER_LEASE_INTERVAL = env.float("RENDER_LEASE_INTERVAL", 10.0, minimum=0.1)
RENDER_LEASE_TIMEOUT = env.float("RENDER_LEASE_TIMEOUT", 60.0, minimum=0.5)
FACE_BACKEND = env.str("FACE_BACKEND", "dlib")
LEAKAGE_MAX_SAMPLES = env.int("LEAKAGE_MAX_SAMPLES", 16, minimum=1)
LEAKAGE_MAX_SIDE = env.int("LEAKAGE_MAX_SIDE", 512, minimum=64)
LEAKAGE_PERFORMER_SAMPLES = env.int("LEAKAGE_PERFORMER_SAMPLES", 5, minimum=1)
WORKER_HEARTBEAT_INTERVAL = env.float("WORKER_HEARTBEAT_INTERVAL", 10.0, minimum=0.1)
WORKER_HEARTBEAT_TIMEOUT = env.float("WORKER_HEARTBEAT_TIMEOUT", 45.0, minimum=1.0)
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
WEBHOOK_MAX_RETRIES = env.int("WEBHOOK_MAX_RETRIES", 8, minimum=0)
WEBHOOK_RETRY_BACKOFF = env.int("WEBHOOK_RETRY_BACKOFF", 5, minimum=1)
WEBHOOKS_ALLOW_HTTP = env.bool("WEBHOOKS_ALLOW_HTTP", False)
# Loopback/private/link-local receivers (server-side request forgery guard, see webhooks.py).
WEBHOOKS_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", False)
DOWNLOAD_LINK_SECONDS = env.int("DOWNLOAD_LINK_SECONDS", 300, minimum=10)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")},
}
