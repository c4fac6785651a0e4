"""Fixtures for the governance tests: one user per role and an API client."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from governance.models import User
from governance.roles import Role
from tests.factories import UserFactory


@pytest.fixture
def users(db: None) -> dict[str, User]:
    """One user per role (keyed by the role's value), roles granted through the service."""
    return {role.value: UserFactory(username=f"the-{role.value}", roles=[role]) for role in Role}


@pytest.fixture
def compliance(users: dict[str, User]) -> User:
    return users[Role.COMPLIANCE_OFFICER]


@pytest.fixture
def reviewer(users: dict[str, User]) -> User:
    return users[Role.REVIEWER]


@pytest.fixture
def requester(users: dict[str, User]) -> User:
    return users[Role.REQUESTER]


@pytest.fixture
def api() -> APIClient:
    return APIClient()
