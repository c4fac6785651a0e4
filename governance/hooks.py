"""Extension points through which governance tells other apps what happened, without importing
them (``governance`` never imports ``reenactment``; ARCHITECTURE.md §2).

Five registries:

* ``register_consent_revocation_handler(fn)``: ``fn(ConsentRevocation)`` when a consent stops
  being valid: revoked, or superseded by a newer record (``superseded_by_id`` is then set and
  the handler should re-check its uses against the replacement with ``consent_assert_valid``).
  The jobs side blocks pending requests, cancels running jobs and withdraws published outputs.
* ``register_approval_released_handler(fn)``: ``fn(ApprovalReleased)`` when the last step of a
  request is approved. The jobs side dispatches the job.
* ``register_approval_closed_handler(fn)``: ``fn(ApprovalClosed)`` when a request ends without
  release (rejected, changes requested, cancelled).
* ``register_model_blocked_handler(fn)``: ``fn(ModelBlocked)`` when a model version is blocked
  (by hand, or because its licence or a snapshot in its lineage was withdrawn). The jobs side
  stops queued and running jobs on it and reports them to compliance; it returns nothing, and
  the block's audit event names the model, the reason and the handlers told.
* ``register_leakage_review_handler(fn)``: ``fn(LeakageReviewed)`` when a compliance officer
  releases or rejects an output whose identity-leakage report asked for review
  (``decision`` is ``"release"`` or ``"reject"``). The jobs side publishes the quarantined
  output, or rejects the job.

When handlers run, and what a failure does: **inside the governance transaction**, after the
state change and its audit event, in registration order. A handler therefore writes its own
state changes (and audit events) atomically with the governance change, and must defer
anything outside the database (Celery dispatch, storage deletion, notifications) with
``transaction.on_commit`` / ``task.delay_on_commit``. If a handler raises, the whole
transaction rolls back — the revocation or decision itself included — and the caller gets a
``HookFailedError`` (HTTP 500 in the one error shape; an ``ApplicationError`` raised on purpose
by a handler is passed on unchanged): a revocation is never recorded while its cascade silently
failed, and nothing is left half-written.

Register from ``AppConfig.ready()``. A handler is keyed by ``uid`` (default: its dotted
path), so registering the same one twice keeps one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from rest_framework import status

from config.api import ApplicationError

logger = logging.getLogger(__name__)

E = TypeVar("E")


@dataclass(frozen=True)
class ConsentRevocation:
    consent_id: int
    person_id: int
    acting_user_id: int | None
    reason: str
    revoked_at: datetime
    superseded_by_id: int | None = None


@dataclass(frozen=True)
class ApprovalReleased:
    request_id: int
    subject_type: str
    subject_id: str
    acting_user_id: int | None
    approved_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ApprovalClosed:
    request_id: int
    subject_type: str
    subject_id: str
    status: str
    acting_user_id: int | None
    reason: str
    closed_at: datetime


@dataclass(frozen=True)
class ModelBlocked:
    model_version_id: int
    name: str
    version: str
    reason: str
    acting_user_id: int | None
    blocked_at: datetime
    # What caused the block: ``{"license_id": ...}``, ``{"snapshot_id": ...}``,
    # ``{"parent_model_version_id": ...}`` or ``{}`` for a block by hand.
    cause: dict[str, int]


@dataclass(frozen=True)
class LeakageReviewed:
    report_id: int
    subject_type: str
    subject_id: str
    decision: str
    reason: str
    acting_user_id: int | None
    reviewed_at: datetime


class HookFailedError(ApplicationError):
    """A registered handler raised (500); the transaction that called it rolls back."""


class HandlerRegistry(Generic[E]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: dict[str, Callable[[E], None]] = {}

    def register(self, handler: Callable[[E], None], *, uid: str | None = None) -> str:
        key = uid or f"{handler.__module__}.{handler.__qualname__}"
        self._handlers[key] = handler
        return key

    def unregister(self, uid: str) -> None:
        self._handlers.pop(uid, None)

    def handlers(self) -> list[tuple[str, Callable[[E], None]]]:
        return list(self._handlers.items())

    def dispatch(self, event: E) -> None:
        for uid, handler in self.handlers():
            try:
                handler(event)
            except ApplicationError:
                # A deliberate refusal with its own code and message: passed on as it is.
                raise
            except Exception as exc:
                logger.exception("%s handler %s failed on %r", self.name, uid, event)
                raise HookFailedError(
                    f"The {self.name} handler {uid} failed ({type(exc).__name__}); "
                    "nothing was changed.",
                    code="hook_failed",
                    extra={"handler": uid},
                    status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
                ) from exc


consent_revocation_handlers: HandlerRegistry[ConsentRevocation] = HandlerRegistry(
    "consent revocation"
)
approval_released_handlers: HandlerRegistry[ApprovalReleased] = HandlerRegistry("approval released")
approval_closed_handlers: HandlerRegistry[ApprovalClosed] = HandlerRegistry("approval closed")
model_blocked_handlers: HandlerRegistry[ModelBlocked] = HandlerRegistry("model blocked")
leakage_review_handlers: HandlerRegistry[LeakageReviewed] = HandlerRegistry("leakage review")


def register_consent_revocation_handler(
    handler: Callable[[ConsentRevocation], None], *, uid: str | None = None
) -> str:
    return consent_revocation_handlers.register(handler, uid=uid)


def unregister_consent_revocation_handler(uid: str) -> None:
    consent_revocation_handlers.unregister(uid)


def register_approval_released_handler(
    handler: Callable[[ApprovalReleased], None], *, uid: str | None = None
) -> str:
    return approval_released_handlers.register(handler, uid=uid)


def unregister_approval_released_handler(uid: str) -> None:
    approval_released_handlers.unregister(uid)


def register_approval_closed_handler(
    handler: Callable[[ApprovalClosed], None], *, uid: str | None = None
) -> str:
    return approval_closed_handlers.register(handler, uid=uid)


def unregister_approval_closed_handler(uid: str) -> None:
    approval_closed_handlers.unregister(uid)


def register_model_blocked_handler(
    handler: Callable[[ModelBlocked], None], *, uid: str | None = None
) -> str:
    return model_blocked_handlers.register(handler, uid=uid)


def unregister_model_blocked_handler(uid: str) -> None:
    model_blocked_handlers.unregister(uid)


def register_leakage_review_handler(
    handler: Callable[[LeakageReviewed], None], *, uid: str | None = None
) -> str:
    return leakage_review_handlers.register(handler, uid=uid)


def unregister_leakage_review_handler(uid: str) -> None:
    leakage_review_handlers.unregister(uid)
