"""Every environment variable the platform reads is parsed and validated here, in one place.

Settings modules call these helpers; nothing else in the code base reads ``os.environ`` for
configuration. Errors are ``ImproperlyConfigured`` with the variable's name and what was wrong,
so a misconfigured deployment fails at start-up with a message an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Env:
    """A read-only view of the environment (a mapping so tests can pass their own)."""

    values: Mapping[str, str]

    @classmethod
    def from_os(cls) -> Env:
        return cls(dict(os.environ))

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise ImproperlyConfigured(f"{name} must be set.")
            if default is None:
                raise ImproperlyConfigured(f"{name} must be set (no default).")
            return default
        return value

    def optional(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value else None

    def bool(self, name: str, default: bool) -> bool:
        raw = self.values.get(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfigured(
            f"{name} must be a boolean (true/false, 1/0, yes/no), got {raw!r}."
        )

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        raw = self.values.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.") from None
        if minimum is not None and value < minimum:
            raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}.")
        return value

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        raw = self.values.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.") from None
        if minimum is not None and value < minimum:
            raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}.")
        return value

    def list(self, name: str, default: list[str]) -> list[str]:
        raw = self.values.get(name)
        if raw is None:
            return list(default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def path(self, name: str, default: Path | None) -> Path | None:
        raw = self.values.get(name)
        if raw is None or raw == "":
            return default
        path = Path(raw).expanduser()
        if not path.is_absolute():
            raise ImproperlyConfigured(f"{name} must be an absolute path, got {raw!r}.")
        return path

    def database(self, name: str, default: str | None = None) -> dict[str, object]:
        return parse_database_url(self.str(name, default), variable=name)


_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "pgsql": "django.db.backends.postgresql",
    "sqlite": "django.db.backends.sqlite3",
}


def parse_database_url(url: str, *, variable: str = "DATABASE_URL") -> dict[str, object]:
    """Turn ``postgres://user:pass@host:port/name?opt=v`` or ``sqlite:////abs/path`` into a
    ``DATABASES`` entry."""
    parts = urlsplit(url)
    engine = _ENGINES.get(parts.scheme)
    if engine is None:
        supported = ", ".join(sorted(_ENGINES))
        raise ImproperlyConfigured(
            f"{variable} has unsupported scheme {parts.scheme!r}; use one of: {supported}."
        )
    if engine.endswith("sqlite3"):
        # sqlite:////abs/path -> /abs/path; sqlite:///:memory: -> :memory:
        path = unquote(parts.path)
        if path in ("", "/"):
            raise ImproperlyConfigured(f"{variable} names no SQLite file: {url!r}.")
        # The URL's path keeps one leading slash of the three or four: drop it.
        name = path[1:]
        return {"ENGINE": engine, "NAME": name}
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(f"{variable} names no database: {url!r}.")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{variable} has an invalid port: {url!r}.") from None
    options = dict(parse_qsl(parts.query))
    conn_max_age = int(options.pop("conn_max_age", "0"))
    return {
        "ENGINE": engine,
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port) if port else "",
        "CONN_MAX_AGE": conn_max_age,
        "OPTIONS": options,
    }
