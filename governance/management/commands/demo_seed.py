"""Create one demo user per role for the single-host run. Safe to run again."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from governance.models import User
from governance.roles import Role

DEMO_USERS: dict[Role, str] = {
    Role.REQUESTER: "demo-requester",
    Role.REVIEWER: "demo-reviewer",
    Role.COMPLIANCE_OFFICER: "demo-compliance",
    Role.DATA_STEWARD: "demo-steward",
    Role.OPERATOR: "demo-operator",
}


class Command(BaseCommand):
    help = (
        "Create one demo user per role (staff, so each can log into the admin) and print the "
        "generated passwords once. Existing demo users are left alone unless --reset-passwords."
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
            user.groups.add(Group.objects.get(name=role.value))
            if created or reset_passwords:
                # Generated per machine and shown once: demo credentials are never committed.
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                user.is_staff = True
                user.save()
                printed.append((role.value, username, password))
            else:
                kept.append(username)
        if printed:
            self.stdout.write("Demo users (passwords are shown only now; keep them):")
            for role, username, password in printed:
                self.stdout.write(f"  {role:<20} {username:<18} {password}")
        if kept:
            self.stdout.write(
                f"Demo users already present: {', '.join(kept)} (passwords unchanged; "
                "`python manage.py demo_seed --reset-passwords` issues new ones)."
            )
