"""Who is asking, from where: the request context that audit events carry.

``RequestContextMiddleware`` sets it for each HTTP request; Celery tasks and management
commands may set their own with ``request_context(...)`` (e.g. the task id as request id).
A ``ContextVar`` keeps it per thread and per asyncio task.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    client_address: str | None


_current: ContextVar[RequestContext | None] = ContextVar("governance_request_context", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(value: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, otherwise a fresh one."""
    if value and _REQUEST_ID.match(value):
        return value
    return new_request_id()


def clean_client_address(value: str | None) -> str | None:
    """A normalised IP address, or ``None`` for anything that is not one."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def current_request_context() -> RequestContext | None:
    return _current.get()


@contextmanager
def request_context(
    *, request_id: str | None = None, client_address: str | None = None
) -> Iterator[RequestContext]:
    """Run a block with the given request id and client address attached to audit events."""
    context = RequestContext(
        request_id=clean_request_id(request_id), client_address=clean_client_address(client_address)
    )
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
