"""Create one demo user per role and the default approval policies for the single-host run.
Safe to run again."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from governance.models import ApprovalPolicy, RiskLevel, User
from governance.roles import Role
from governance.services.approvals import approval_policy_create
from governance.services.roles import role_grant

DEMO_USERS: dict[Role, str] = {
    Role.REQUESTER: "demo-requester",
    Role.REVIEWER: "demo-reviewer",
    Role.COMPLIANCE_OFFICER: "demo-compliance",
    Role.DATA_STEWARD: "demo-steward",
    Role.OPERATOR: "demo-operator",
}

# Default approval policies per risk level: (name, deciding roles in order).
DEFAULT_POLICIES: dict[RiskLevel, tuple[str, list[Role]]] = {
    RiskLevel.LOW: ("Low risk: reviewer", [Role.REVIEWER]),
    RiskLevel.STANDARD: (
        "Standard risk: reviewer, then compliance officer",
        [Role.REVIEWER, Role.COMPLIANCE_OFFICER],
    ),
    RiskLevel.HIGH: (
        "High risk: reviewer, then compliance officer",
        [Role.REVIEWER, Role.COMPLIANCE_OFFICER],
    ),
}


class Command(BaseCommand):
    help = (
        "Create one demo user per role (staff, so each can log into the admin) and print the "
        "generated passwords once, and the default approval policies per risk level. Existing "
        "demo users and policies are left alone (passwords change only with --reset-passwords)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="Give existing demo users new passwords and print them.",
        )

    @transaction.atomic
    def handle(self, *args: Any, reset_passwords: bool = False, **options: Any) -> None:
        printed: list[tuple[str, str, str]] = []
        kept: list[str] = []
        for role, username in DEMO_USERS.items():
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True, "email": f"{username}@example.com"}
            )
            # Through the audited service (the system is the actor); a no-op when held.
            role_grant(user=user, role=role, acting_user=None)
            if created or reset_passwords:
                # Generated per machine and shown once: demo credentials are never committed.
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                user.is_staff = True
                user.save()
                printed.append((role.value, username, password))
            else:
                kept.append(username)
        created_policies = []
        for risk_level, (name, roles) in DEFAULT_POLICIES.items():
            if ApprovalPolicy.objects.filter(risk_level=risk_level, is_active=True).exists():
                continue
            if ApprovalPolicy.objects.filter(name=name).exists():
                continue
            approval_policy_create(
                name=name, risk_level=risk_level, step_roles=roles, acting_user=None
            )
            created_policies.append(name)
        if created_policies:
            self.stdout.write(f"Approval policies created: {'; '.join(created_policies)}.")
        if printed:
            self.stdout.write("Demo users (passwords are shown only now; keep them):")
            for role_name, username, password in printed:
                self.stdout.write(f"  {role_name:<20} {username:<18} {password}")
        if kept:
            self.stdout.write(
                f"Demo users already present: {', '.join(kept)} (passwords unchanged; "
                "`python manage.py demo_seed --reset-passwords` issues new ones)."
            )
