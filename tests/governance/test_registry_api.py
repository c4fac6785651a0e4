"""The registry API end to end: a data steward records a licence, a dataset, clips and a
snapshot, reads a model's lineage, exports the manifest and withdraws the licence."""

from __future__ import annotations

import json

import pytest

from governance.models import DatasetSnapshot, ModelVersionStatus
from tests.governance.registry_helpers import (
    SYNTHFACE_LICENCE,
    XNEMO_LICENCE,
    consenting_person,
    random_sha256,
    register,
    seeded_licence,
    shared_tiny_model_dir,
)

pytestmark = pytest.mark.django_db
BASE = "/api/governance"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return shared_tiny_model_dir(tmp_path_factory)


def test_a_steward_builds_a_snapshot_and_withdraws_its_licence_over_the_api(
    api, users, tiny_model_dir
):
    steward, officer = users["data_steward"], users["compliance_officer"]
    person, consent = consenting_person(acting_user=steward, officer=officer)
    api.force_authenticate(steward)

    licensor = api.post(f"{BASE}/licensors/create/", {"name": "Studio"}, format="json").json()
    response = api.post(
        f"{BASE}/licences/create/",
        {
            "licensor": licensor["id"],
            "name": "Studio clips",
            "allowed_uses": ["training", "evaluation", "research_output"],
            "territories": ["WW"],
            "terms_text": "Training allowed.",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    licence = response.json()
    assert licence["allowed_uses"] == ["training", "evaluation", "research_output"]
    dataset = api.post(f"{BASE}/datasets/create/", {"name": "Studio"}, format="json").json()
    clip_body = {
        "dataset": dataset["id"],
        "licence": licence["id"],
        "uri": "https://data.example.org/a.mp4",
        "sha256": random_sha256(),
        "duration_seconds": 2.0,
        "fps": 25,
        "frame_count": 50,
        "width": 512,
        "height": 512,
        "persons": [{"person": person.pk, "consent": consent.pk}],
    }
    response = api.post(f"{BASE}/clips/create/", clip_body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["persons"] == [{"person": person.pk, "consent": consent.pk}]
    response = api.post(
        f"{BASE}/clips/create/",
        {**clip_body, "persons": [{"person": person.pk, "consent": 10**6}]},
        format="json",
    )
    assert response.status_code == 400
    assert "is not a consent of person" in response.json()["error"]["message"]

    response = api.post(
        f"{BASE}/snapshots/create/", {"dataset": dataset["id"], "name": "v1"}, format="json"
    )
    assert response.status_code == 201, response.json()
    snapshot = response.json()
    assert snapshot["clip_count"] == 1 and snapshot["export_id"] == f"snapshot-{snapshot['id']}"
    detail = api.get(f"{BASE}/snapshots/{snapshot['id']}/").json()
    assert detail["items"][0]["persons"] == [person.pk]

    export = api.get(f"{BASE}/snapshots/{snapshot['id']}/export/")
    assert export.status_code == 200
    lines = [json.loads(line) for line in b"".join(export.streaming_content).splitlines()]
    assert lines[0]["snapshot_id"] == snapshot["export_id"]
    assert lines[1]["uri"] == clip_body["uri"] and lines[1]["frames"] == 50
    assert lines[1]["licence_ids"] == [f"licence:{licence['id']}"]

    parent = register(
        folder=tiny_model_dir, licence=seeded_licence(XNEMO_LICENCE), acting_user=steward
    )
    model = register(
        folder=tiny_model_dir,
        licence=seeded_licence(SYNTHFACE_LICENCE),
        snapshots=[DatasetSnapshot.objects.get(pk=snapshot["id"])],
        parent=parent,
        acting_user=steward,
    )
    lineage = api.get(f"{BASE}/models/{model.pk}/").json()["lineage"]
    assert lineage["snapshots"][0]["licences"][0]["name"] == "Studio clips"
    assert lineage["parent"]["licence"]["name"] == XNEMO_LICENCE

    response = api.post(
        f"{BASE}/licences/{licence['id']}/withdraw/", {"reason": "Studio closed"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["snapshots_flagged"] == [snapshot["id"]]
    assert response.json()["models_blocked"] == [model.pk]
    status = api.get(f"{BASE}/snapshots/{snapshot['id']}/status/").json()
    assert status["status"] == "withdrawn" and status["reason"].startswith("Licence Studio clips")
    refused = api.get(f"{BASE}/snapshots/{snapshot['id']}/export/")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "snapshot_withdrawn"
    listed = api.get(f"{BASE}/models/", {"status": ModelVersionStatus.BLOCKED}).json()
    assert [m["id"] for m in listed["results"]] == [model.pk]

    response = api.post(f"{BASE}/models/{parent.pk}/deprecate/", {"reason": "Old"}, format="json")
    assert response.json()["status"] == "deprecated"
    response = api.post(f"{BASE}/models/{parent.pk}/deprecate/", {"reason": "Old"}, format="json")
    assert response.status_code == 409
