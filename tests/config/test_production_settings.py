import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "SECRET_KEY": "pL4x-9qZ!r7Vt2#wK8mN0bC5dF3gH6jA1sE-uY_oI9pQ2zX4cV7bN8mL0kJ3hG5fD",
    "ALLOWED_HOSTS": "reenact.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/reenactment",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
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


def test_check_deploy_is_clean_with_production_environment():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
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
