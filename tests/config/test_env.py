import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import Env, parse_database_url


def test_postgres_url_is_split_into_django_fields():
    db = parse_database_url("postgres://app:s%40cret@db.internal:6543/platform?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "app",
        "s@cret",
        "db.internal",
        "6543",
        "platform",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_sqlite_url_keeps_the_absolute_path():
    assert parse_database_url("sqlite:////srv/app/db.sqlite3")["NAME"] == "/srv/app/db.sqlite3"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported scheme 'mysql'"),
        ("postgres://u@h:5432/", "names no database"),
        ("postgres://u@h:notaport/db", "invalid port"),
        ("sqlite://", "names no SQLite file"),
    ],
)
def test_bad_database_urls_are_named(url, message):
    with pytest.raises(ImproperlyConfigured, match=message) as info:
        parse_database_url(url, variable="DATABASE_URL")
    assert "DATABASE_URL" in str(info.value)


def test_booleans_integers_and_lists():
    env = Env({"A": "yes", "B": "0", "N": "12", "L": "a.example, b.example,,"})
    assert env.bool("A", False) is True
    assert env.bool("B", True) is False
    assert env.bool("MISSING", True) is True
    assert env.int("N", 1, minimum=1) == 12
    assert env.list("L", []) == ["a.example", "b.example"]


@pytest.mark.parametrize(
    ("values", "call", "message"),
    [
        ({"A": "maybe"}, lambda e: e.bool("A", False), "A must be a boolean"),
        ({"N": "ten"}, lambda e: e.int("N", 1), "N must be an integer"),
        ({"N": "0"}, lambda e: e.int("N", 1, minimum=1), "N must be at least 1"),
        ({"P": "relative/dir"}, lambda e: e.path("P", None), "P must be an absolute path"),
        ({}, lambda e: e.str("SECRET_KEY", required=True), "SECRET_KEY must be set"),
    ],
)
def test_invalid_values_fail_with_the_variable_name(values, call, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        call(Env(values))
