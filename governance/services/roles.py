"""Role memberships and per-object grants, each change audited.

Roles are Django groups (``governance.roles.Role``); per-object rights are django-guardian
grants. Guardian keeps only the current grants, so every grant and revocation goes through
these services, which append an audit event in the same transaction. They are composable
(plain ``@transaction.atomic``): the admin and ``approval_request_create`` call them inside
their own transactions.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Model
from guardian.shortcuts import assign_perm, get_group_perms, get_user_perms, remove_perm

from governance.audit_codes import AuditAction
from governance.models import User
from governance.roles import ROLE_PERMISSIONS, Role
from governance.services.audit import audit_event_record, audit_target


def role_group(role: Role) -> Group:
    return Group.objects.get(name=Role(role).value)


@transaction.atomic
def role_grant(*, user: User, role: Role, acting_user: User | None) -> bool:
    """Make ``user`` a holder of ``role``. Returns False (and records nothing) if they were."""
    role = Role(role)
    group = role_group(role)
    if user.groups.filter(pk=group.pk).exists():
        return False
    user.groups.add(group)
    audit_event_record(
        actor=acting_user,
        action=AuditAction.ROLE_GRANT,
        target_type="governance.user",
        target_id=user.pk,
        payload={"role": role.value},
    )
    return True


@transaction.atomic
def role_revoke(*, user: User, role: Role, acting_user: User | None) -> bool:
    """Remove ``role`` from ``user``. Returns False (and records nothing) if they lacked it."""
    role = Role(role)
    group = role_group(role)
    if not user.groups.filter(pk=group.pk).exists():
        return False
    user.groups.remove(group)
    audit_event_record(
        actor=acting_user,
        action=AuditAction.ROLE_REVOKE,
        target_type="governance.user",
        target_id=user.pk,
        payload={"role": role.value},
    )
    return True


def _grantee(grantee: User | Group) -> dict[str, object]:
    if isinstance(grantee, Group):
        return {"grantee_type": "group", "grantee_id": grantee.pk, "grantee": grantee.name}
    return {"grantee_type": "user", "grantee_id": grantee.pk}


def _holds(grantee: User | Group, codename: str, obj: Model) -> bool:
    if isinstance(grantee, Group):
        perms = get_group_perms(grantee, obj)
    else:
        perms = get_user_perms(grantee, obj)
    return perms.filter(codename=codename).exists()


def _codename(perm: str, obj: Model) -> str:
    app_label, _, codename = perm.rpartition(".")
    if app_label and app_label != obj._meta.app_label:
        raise ValueError(f"{perm!r} does not belong to {obj._meta.label}.")
    if not Permission.objects.filter(
        content_type__app_label=obj._meta.app_label,
        content_type__model=obj._meta.model_name,
        codename=codename,
    ).exists():
        raise ValueError(f"{perm!r} is not a permission of {obj._meta.label}.")
    return codename


@transaction.atomic
def object_permission_grant(
    *, perm: str, obj: Model, grantee: User | Group, acting_user: User | None
) -> bool:
    """Grant ``perm`` ("app_label.codename") on one object to a user or a group."""
    codename = _codename(perm, obj)
    if _holds(grantee, codename, obj):
        return False
    assign_perm(codename, grantee, obj)
    target_type, target_id = audit_target(obj)
    audit_event_record(
        actor=acting_user,
        action=AuditAction.PERMISSION_GRANT,
        target_type=target_type,
        target_id=target_id,
        payload={"permission": f"{obj._meta.app_label}.{codename}", **_grantee(grantee)},
    )
    return True


@transaction.atomic
def object_permission_revoke(
    *, perm: str, obj: Model, grantee: User | Group, acting_user: User | None
) -> bool:
    """Withdraw an object grant made by ``object_permission_grant``."""
    codename = _codename(perm, obj)
    if not _holds(grantee, codename, obj):
        return False
    remove_perm(codename, grantee, obj)
    target_type, target_id = audit_target(obj)
    audit_event_record(
        actor=acting_user,
        action=AuditAction.PERMISSION_REVOKE,
        target_type=target_type,
        target_id=target_id,
        payload={"permission": f"{obj._meta.app_label}.{codename}", **_grantee(grantee)},
    )
    return True


def role_permissions_sync(*, using: str = "default") -> None:
    """Make sure every role's group exists and holds the model permissions of
    ``ROLE_PERMISSIONS`` (post_migrate: also after a test flush, which empties the groups).

    Not audited: this applies the role definitions shipped in code, it grants nothing to a
    person. Permissions whose model is not migrated yet are picked up on a later run.
    """
    names = {perm for perms in ROLE_PERMISSIONS.values() for perm in perms}
    available = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.using(using)
        .filter(codename__in={name.split(".", 1)[1] for name in names})
        .values_list("pk", "content_type__app_label", "codename")
    }
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role.value)
        wanted = [available[perm] for perm in perms if perm in available]
        if wanted:
            group.permissions.add(*wanted)
