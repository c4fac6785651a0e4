import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command

from governance.roles import Role

pytestmark = pytest.mark.django_db


def test_every_role_is_a_group_after_migrate():
    assert set(Group.objects.values_list("name", flat=True)) >= {role.value for role in Role}


def test_custom_user_model_and_guardian_backend(settings):
    assert get_user_model()._meta.label == "governance.User"
    assert "guardian.backends.ObjectPermissionBackend" in settings.AUTHENTICATION_BACKENDS


def test_demo_seed_creates_one_staff_user_per_role_and_is_idempotent(capsys, client):
    call_command("demo_seed")
    first = capsys.readouterr().out
    User = get_user_model()
    for role in Role:
        users = User.objects.filter(groups__name=role.value, username__startswith="demo-")
        assert users.count() == 1
        assert users.get().is_staff
    # The printed password logs the user into the admin.
    line = next(line for line in first.splitlines() if "demo-reviewer" in line)
    password = line.split()[-1]
    assert client.login(username="demo-reviewer", password=password)
    assert client.get("/admin/").status_code == 200

    call_command("demo_seed")
    second = capsys.readouterr().out
    assert "already present" in second
    assert password not in second
    assert User.objects.filter(username__startswith="demo-").count() == len(Role)
    assert client.login(username="demo-reviewer", password=password)


def test_me_endpoint_lists_the_callers_roles(client):
    user = get_user_model().objects.create_user("rita", password="x")
    user.groups.add(Group.objects.get(name=Role.REVIEWER))
    assert client.get("/api/governance/me/").status_code in (401, 403)
    client.force_login(user)
    body = client.get("/api/governance/me/").json()
    assert body == {"id": user.pk, "username": "rita", "roles": ["reviewer"]}
