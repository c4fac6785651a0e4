import os
import subprocess
import sys
from pathlib import Path

import pytest

from governance.integrations.dev_ca import BadCertKind, generate_bad_signer, generate_dev_ca

REPO_ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "SECRET_KEY": "pL4x-9qZ!r7Vt2#wK8mN0bC5dF3gH6jA1sE-uY_oI9pQ2zX4cV7bN8mL0kJ3hG5fD",
    "ALLOWED_HOSTS": "reenact.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/reenactment",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
}


@pytest.fixture(scope="module")
def signer_env(tmp_path_factory):
    paths = generate_dev_ca(tmp_path_factory.mktemp("ca"))
    return {
        "C2PA_SIGNER_CHAIN": str(paths.chain),
        "C2PA_SIGNER_KEY": str(paths.key),
        "C2PA_TRUST_ANCHORS": str(paths.root),
    }


def _manage(*args, env):
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    clean.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args, "--settings=config.settings.production"],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_environment(signer_env):
    env = {**PRODUCTION_ENV, **signer_env}
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_a_weak_secret_key_and_missing_hosts():
    weak = _manage("check", env={**PRODUCTION_ENV, "SECRET_KEY": "short"})
    assert "SECRET_KEY must be a random value" in weak.stderr
    hostless = _manage("check", env={**PRODUCTION_ENV, "ALLOWED_HOSTS": ""})
    assert "ALLOWED_HOSTS must list" in hostless.stderr


def test_production_refuses_to_start_without_a_signer():
    result = _manage("check", env=PRODUCTION_ENV)
    assert result.returncode != 0
    assert "governance.E001" in result.stderr
    assert "No C2PA signer is configured" in result.stderr


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (BadCertKind.CA_LEAF, "CA"),
        (BadCertKind.WRONG_EKU, "emailProtection"),
        (BadCertKind.EXPIRED, "expired"),
        (BadCertKind.SELF_SIGNED, "self-signed"),
    ],
)
def test_a_certificate_c2pa_would_reject_fails_at_configuration_time(tmp_path, kind, message):
    paths = generate_bad_signer(tmp_path / kind.name, kind)
    env = {
        **PRODUCTION_ENV,
        "C2PA_SIGNER_CHAIN": str(paths.chain),
        "C2PA_SIGNER_KEY": str(paths.key),
        "C2PA_TRUST_ANCHORS": str(paths.root),
    }
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "governance.E003" in result.stderr
    assert message in result.stderr
