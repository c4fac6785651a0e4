"""Data stewards' admin pages: created through the services, read-only once frozen, the
model's lineage tree, withdrawal and blocking with a reason."""

from __future__ import annotations

import pytest

from governance.audit_codes import AuditAction
from governance.models import (
    AuditEvent,
    Dataset,
    DatasetSnapshot,
    License,
    LicenseStatus,
    ModelVersionStatus,
    SnapshotStatus,
)
from governance.roles import Role
from tests.factories import UserFactory
from tests.governance.registry_helpers import (
    XNEMO_LICENCE,
    add_uri_clip,
    make_dataset,
    make_licence,
    make_snapshot,
    register,
    seeded_licence,
    shared_tiny_model_dir,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return shared_tiny_model_dir(tmp_path_factory)


@pytest.fixture
def steward(client):
    user = UserFactory(roles=[Role.DATA_STEWARD], is_staff=True)
    client.force_login(user)
    return user


def test_a_steward_records_a_licence_and_withdraws_it_in_the_admin(client, steward):
    response = client.post(
        "/admin/governance/licensor/add/", {"name": "Studio Archive", "contact": "", "url": ""}
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    licensor = AuditEvent.objects.get(action=AuditAction.LICENSOR_CREATE)
    response = client.post(
        "/admin/governance/license/add/",
        {
            "licensor": licensor.target_id,
            "name": "Archive training licence",
            "allowed_uses": ["training", "evaluation"],
            "territory_codes": "DE, FR",
            "valid_from_0": "2026-01-01",
            "valid_from_1": "00:00:00",
            "terms_text": "Training and evaluation only.",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    licence = License.objects.get(name="Archive training licence")
    assert licence.allowed_uses() == ["training", "evaluation"]
    assert sorted(t.pk for t in licence.territories.all()) == ["DE", "FR"]
    assert AuditEvent.objects.get(action=AuditAction.LICENSE_CREATE).actor == steward

    page = client.get(f"/admin/governance/license/{licence.pk}/change/")
    assert b"Withdraw with reason" in page.content
    response = client.post(
        f"/admin/governance/license/{licence.pk}/change/", {"withdraw": "Archive closed"}
    )
    assert response.status_code == 302
    licence.refresh_from_db()
    assert licence.status == LicenseStatus.WITHDRAWN
    assert licence.withdraw_reason == "Archive closed"
    # A withdrawn licence is read-only.
    page = client.get(f"/admin/governance/license/{licence.pk}/change/")
    assert b"Withdraw with reason" not in page.content


def test_a_steward_freezes_a_snapshot_in_the_admin_and_it_is_read_only(client, steward):
    response = client.post("/admin/governance/dataset/add/", {"name": "Studio", "description": ""})
    assert response.status_code == 302
    dataset = Dataset.objects.get(name="Studio")
    refused = client.post(
        "/admin/governance/datasetsnapshot/add/",
        {"dataset": dataset.pk, "name": "empty", "territory": "WW"},
        follow=True,
    )
    assert b"Not frozen" in refused.content
    assert not DatasetSnapshot.objects.exists()

    clip = add_uri_clip(
        dataset=dataset, licence=make_licence(acting_user=steward), acting_user=steward
    )
    response = client.post(
        "/admin/governance/datasetsnapshot/add/",
        {"dataset": dataset.pk, "name": "v1", "territory": "WW"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    snapshot = DatasetSnapshot.objects.get(dataset=dataset, name="v1")
    assert snapshot.status == SnapshotStatus.FROZEN
    page = client.get(f"/admin/governance/datasetsnapshot/{snapshot.pk}/change/")
    assert page.status_code == 200
    assert clip.sha256.encode() in page.content
    assert b'name="name"' not in page.content  # no editable field
    for url in ("dataset", "clip", "license", "licensor", "modelversion"):
        assert client.get(f"/admin/governance/{url}/").status_code == 200


def test_a_model_page_shows_its_lineage_and_blocks_with_a_reason(
    client, steward, users, tiny_model_dir
):
    snapshot = make_snapshot(acting_user=steward, officer=users["compliance_officer"])
    parent = register(
        folder=tiny_model_dir, licence=seeded_licence(XNEMO_LICENCE), acting_user=steward
    )
    model = register(
        folder=tiny_model_dir,
        licence=make_licence(acting_user=steward, name="Studio weights"),
        snapshots=[snapshot],
        parent=parent,
        acting_user=steward,
    )
    page = client.get(f"/admin/governance/modelversion/{model.pk}/change/")
    content = page.content.decode()
    assert "Studio weights" in content
    assert f"trained on snapshot #{snapshot.pk}" in content
    assert "fine-tuned from" in content and XNEMO_LICENCE in content
    assert model.weights_sha256 in content

    response = client.post(
        f"/admin/governance/modelversion/{model.pk}/change/",
        {"change_status": "block", "reason": "Licence audit"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    model.refresh_from_db()
    assert model.status == ModelVersionStatus.BLOCKED
    event = AuditEvent.objects.get(action=AuditAction.MODEL_VERSION_BLOCK)
    assert (event.actor, event.payload["reason"]) == (steward, "Licence audit")


def test_compliance_officers_see_the_registry_but_change_nothing(client, users, tiny_model_dir):
    steward = users["data_steward"]
    licence = make_licence(acting_user=steward)
    model = register(folder=tiny_model_dir, licence=licence, acting_user=steward)
    make_dataset(acting_user=steward)
    officer = UserFactory(roles=[Role.COMPLIANCE_OFFICER], is_staff=True)
    client.force_login(officer)
    page = client.get(f"/admin/governance/modelversion/{model.pk}/change/")
    assert page.status_code == 200 and b"change_status" not in page.content
    page = client.get(f"/admin/governance/license/{licence.pk}/change/")
    assert page.status_code == 200 and b"Withdraw with reason" not in page.content
    assert client.get("/admin/governance/license/add/").status_code == 403
    assert (
        client.post(
            f"/admin/governance/modelversion/{model.pk}/change/",
            {"change_status": "block", "reason": "x"},
        ).status_code
        == 403
    )
