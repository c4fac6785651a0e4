"""DRF permission classes backed by Django model permissions (held by role groups) and
django-guardian object permissions.

* Collection endpoints (list, create, export) need a *global* permission, held through a role:
  without it the answer is 403.
* Object endpoints answer **404** when the caller may not read the object (global read
  permission, or a guardian grant on that object), so the API never confirms that an object
  exists to someone who may not see it; 403 when they may read it but not do what they asked.
  This is DRF's ``DjangoObjectPermissions`` behaviour, made explicit for ``APIView``s that
  fetch their object through a selector and call ``self.check_object_permissions``.

Business rules that are not plain permissions (separation of duties on approvals) live in the
services, so every caller gets them, not only the API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from django.contrib.auth.models import AnonymousUser
from django.db.models import Model
from django.http import Http404
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from governance.models import User


def user_has_perm(user: User | AnonymousUser, perm: str, obj: Model | None = None) -> bool:
    """A global permission (ModelBackend: the user's roles) or, for ``obj``, a guardian grant
    to the user or one of their groups."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.has_perm(perm):
        return True
    return obj is not None and user.has_perm(perm, obj)


class HasGlobalPermission(BasePermission):
    """The view's ``global_permissions[method]`` must all be held globally (through a role)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        required: Mapping[str, Sequence[str]] = getattr(view, "global_permissions", {})
        return all(user_has_perm(user, perm) for perm in required.get(request.method or "", ()))


class ObjectPermission(BasePermission):
    """404 unless the caller may read the object; then the view's
    ``object_permissions[method]`` must be held (globally or on the object), else 403.

    ``view.read_permission`` is a permission name, or a callable ``(user, obj) -> bool`` for
    objects whose visibility is a rule (approval requests)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request: Request, view: APIView, obj: Model) -> bool:
        user = request.user
        read: str | Callable[[User | AnonymousUser, Model], bool] = view.read_permission  # type: ignore[attr-defined]  # set by each object API
        readable = read(user, obj) if callable(read) else user_has_perm(user, read, obj)
        if not readable:
            raise Http404
        required: Mapping[str, Sequence[str]] = getattr(view, "object_permissions", {})
        return all(
            user_has_perm(user, perm, obj) for perm in required.get(request.method or "", ())
        )
