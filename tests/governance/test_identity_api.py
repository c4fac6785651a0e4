"""The identity API: leakage reports (list, detail, release, reject), face-match records and
face thresholds, with their shapes and the one error shape. Who may call what is in
tests/governance/test_permissions_matrix.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.urls import reverse

from governance.audit_codes import AuditAction
from governance.hooks import leakage_review_handlers
from governance.models import AuditEvent, FaceThresholdPolicy, LeakageReport
from governance.services.identity import face_match_evaluate, leakage_report_create
from reenactment.engine import faces
from reenactment.engine.identity import LeakageMeasurement, LeakageSample, MatchScores, series_stats
from tests.factories import create_person

pytestmark = pytest.mark.django_db

BASE = "/api/governance/identity"
DLIB = faces.BackendInfo(
    name="dlib",
    metric="euclidean",
    thresholds=faces.DLIB_THRESHOLDS,
    embedding_dim=128,
    fingerprint=faces.fingerprint_of("dlib", faces.DLIB_MODEL_SHA256),
    files=faces.DLIB_MODEL_SHA256,
    licence=faces.DLIB_LICENCE,
).to_dict()


@pytest.fixture(autouse=True)
def _only_our_review_handlers() -> Iterator[None]:
    """The subjects here are not real render jobs: the jobs side's handlers stay out."""
    registered = leakage_review_handlers.handlers()
    for uid, _ in registered:
        leakage_review_handlers.unregister(uid)
    yield
    for uid, handler in registered:
        leakage_review_handlers.register(handler, uid=uid)


def make_report(
    performer_sim: float, subject_id: int = 5, subject_type: str = "reenactment.renderjob"
) -> LeakageReport:
    samples = tuple(LeakageSample(i * 10, i * 0.4, 0.9, performer_sim) for i in range(8))
    measurement: dict[str, Any] = LeakageMeasurement(
        samples=samples,
        total_frames=80,
        baseline_similarity=0.18,
        portrait=series_stats(s.portrait_similarity for s in samples),
        performer=series_stats(s.performer_similarity for s in samples),
        backend="dlib",
        fingerprint=DLIB["fingerprint"],
        sampling="8 evenly spaced of 80 frames",
    ).to_dict()
    return leakage_report_create(
        subject_type=subject_type,
        subject_id=subject_id,
        measurement=measurement,
        backend_info=DLIB,
        acting_user=None,
    )


def test_reports_list_and_detail(api, reviewer):
    flagged = make_report(0.25)
    passed = make_report(0.18, subject_id=6)
    api.force_authenticate(reviewer)

    listed = api.get(f"{BASE}/leakage-reports/").json()
    assert [item["id"] for item in listed["results"]] == [passed.pk, flagged.pk]
    waiting = api.get(f"{BASE}/leakage-reports/", {"awaiting_review": "true"}).json()
    assert [item["id"] for item in waiting["results"]] == [flagged.pk]
    by_subject = api.get(f"{BASE}/leakage-reports/", {"subject_id": "6"}).json()
    assert [item["id"] for item in by_subject["results"]] == [passed.pk]

    detail = api.get(f"{BASE}/leakage-reports/{flagged.pk}/").json()
    assert detail["verdict"] == "review" and detail["outcome"] == "awaiting_review"
    assert detail["reasons"][0]["code"] == "identity_leak_suspected"
    assert detail["portrait_stats"] == {
        "count": 8,
        "mean": 0.9,
        "min": 0.9,
        "p10": 0.9,
        "median": 0.9,
        "p90": 0.9,
        "max": 0.9,
    }
    assert detail["time_series"][2] == {
        "frame": 20,
        "t": 0.8,
        "portrait_sim": 0.9,
        "performer_sim": 0.25,
    }
    assert detail["baseline_similarity"] == 0.18
    assert detail["thresholds"]["match_threshold"] == 0.45
    assert detail["backend_fingerprint"] == DLIB["fingerprint"]
    assert detail["review_decision"] == "" and detail["reviewed_by"] is None


def test_release_needs_a_reason_and_is_audited(api, compliance):
    flagged = make_report(0.25)
    api.force_authenticate(compliance)
    url = f"{BASE}/leakage-reports/{flagged.pk}/release/"

    missing = api.post(url, {}, format="json")
    assert missing.status_code == 400
    assert missing.json()["error"]["fields"] == {"reason": ["This field is required."]}

    response = api.post(url, {"reason": "Checked frame by frame."}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["review_decision"] == "release" and body["outcome"] == "cleared"
    assert (
        body["reviewed_by"] == compliance.pk and body["review_reason"] == "Checked frame by frame."
    )
    assert AuditEvent.objects.filter(action=AuditAction.LEAKAGE_REPORT_RELEASE).count() == 1

    again = api.post(f"{BASE}/leakage-reports/{flagged.pk}/reject/", {"reason": "No."}, "json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "leakage_already_reviewed"


def test_a_failed_report_cannot_be_released(api, compliance):
    failed = make_report(0.8)
    api.force_authenticate(compliance)
    response = api.post(
        f"{BASE}/leakage-reports/{failed.pk}/release/", {"reason": "Please."}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "leakage_not_reviewable"
    assert api.get(f"{BASE}/leakage-reports/{failed.pk}/").json()["outcome"] == "quarantined"


def test_reject(api, compliance):
    flagged = make_report(0.25)
    api.force_authenticate(compliance)
    response = api.post(
        f"{BASE}/leakage-reports/{flagged.pk}/reject/", {"reason": "Leak."}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "quarantined"


def test_unknown_report_is_404(api, compliance):
    api.force_authenticate(compliance)
    assert api.get(f"{BASE}/leakage-reports/999999/").status_code == 404


def test_face_matches_list(api, compliance, reviewer):
    person = create_person(acting_user=compliance)
    data = MatchScores(
        similarities=(0.4,),
        multiple_faces=0,
        stats=series_stats([0.4]),
        backend="dlib",
        fingerprint=DLIB["fingerprint"],
    ).to_dict()
    record = face_match_evaluate(
        subject_type="reenactment.renderjob",
        subject_id=3,
        person=person,
        check="portrait_vs_subject",
        scores=data,
        backend_info=DLIB,
        acting_user=None,
    )
    api.force_authenticate(reviewer)
    body = api.get(f"{BASE}/face-matches/", {"subject_id": "3", "verdict": "review"}).json()
    (item,) = body["results"]
    assert item["id"] == record.pk and item["check"] == "portrait_vs_subject"
    assert item["person"] == person.pk and item["scores"]["similarities"] == [0.4]
    assert item["reasons"][0]["code"] == "similarity_in_review_band"
    assert "embedding" not in str(item)


def test_thresholds_list_and_update(api, compliance):
    api.force_authenticate(compliance)
    listed = api.get(f"{BASE}/face-thresholds/").json()
    assert [item["backend"] for item in listed] == ["dlib", "insightface"]
    assert listed[1]["licence"] == "insightface pretrained packs (non-commercial research)"
    assert "non-commercial" in listed[1]["licence_text"]

    response = api.post(
        f"{BASE}/face-thresholds/dlib/update/",
        {"leakage_margin": 0.12, "reason": "Fewer false alarms on profile shots."},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["leakage_margin"] == 0.12
    assert response.json()["updated_by"] == compliance.pk
    assert FaceThresholdPolicy.objects.get(backend="dlib").leakage_margin == 0.12

    bad = api.post(
        f"{BASE}/face-thresholds/dlib/update/",
        {"review_threshold": 0.9, "reason": "x"},
        format="json",
    )
    assert bad.status_code == 400
    assert "review_threshold" in bad.json()["error"]["fields"]
    out_of_range = api.post(
        f"{BASE}/face-thresholds/dlib/update/", {"max_faceless_share": 2, "reason": "x"}, "json"
    )
    assert out_of_range.status_code == 400
    unknown = api.post(f"{BASE}/face-thresholds/facenet/update/", {"reason": "x"}, "json")
    assert unknown.status_code == 404


IDENTITY_OPERATIONS = {
    ("/api/governance/identity/leakage-reports/", "get"),
    ("/api/governance/identity/leakage-reports/{report_id}/", "get"),
    ("/api/governance/identity/leakage-reports/{report_id}/release/", "post"),
    ("/api/governance/identity/leakage-reports/{report_id}/reject/", "post"),
    ("/api/governance/identity/face-matches/", "get"),
    ("/api/governance/identity/face-thresholds/", "get"),
    ("/api/governance/identity/face-thresholds/{backend}/update/", "post"),
    ("/api/governance/identity/face-thresholds/{backend}/licence/", "post"),
}


def test_the_identity_endpoints_are_documented_with_their_shapes_and_errors(client):
    response = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    documented = {
        (path, method)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/governance/identity/")
        for method in operations
    }
    assert documented == IDENTITY_OPERATIONS
    for path, method in IDENTITY_OPERATIONS:
        operation = schema["paths"][path][method]
        assert operation["summary"] and operation["description"], (path, method)
        assert operation["tags"] == ["identity"]
        responses = operation["responses"]
        assert responses["200"]["content"], (path, method)
        error = responses["401"]["content"]["application/json"]["schema"]["$ref"]
        assert error == "#/components/schemas/Error"
        if method == "post":
            assert "requestBody" in operation and "400" in responses, path
        if "{" in path:
            assert "404" in responses, path
    release = schema["paths"]["/api/governance/identity/leakage-reports/{report_id}/release/"]
    assert {"400", "401", "403", "404", "409", "500"} <= set(release["post"]["responses"])


# --- for tests/governance/test_permissions_matrix.py ------------------------------------------


def identity_endpoint(
    users: Any, endpoint: str
) -> tuple[dict[str, object], Callable[[], tuple[dict[str, object], str]] | None]:
    """Path ids and a POST body for an ``identity/...`` endpoint of the permission matrix:
    a leakage report awaiting review (of a subject that is not a render job) and the dlib
    thresholds (relinked to their own licence). Other endpoints get nothing."""
    if not endpoint.partition(" ")[2].startswith("identity/"):
        return {}, None
    flagged = make_report(0.25, subject_id=424242, subject_type="tests.matrixsubject")
    dlib_licence = FaceThresholdPolicy.objects.get(backend="dlib").licence_id
    bodies: dict[str, tuple[dict[str, object], str]] = {
        "release": ({"reason": "Checked by eye."}, "json"),
        "reject": ({"reason": "Visible leak."}, "json"),
        "update": ({"leakage_margin": 0.11, "reason": "Calibrated."}, "json"),
        "licence": ({"license_id": dlib_licence, "reason": "Same terms."}, "json"),
    }
    body = bodies.get(endpoint.rstrip("/").rsplit("/", 1)[-1])
    return {"report": flagged.pk, "backend": "dlib"}, (lambda: body) if body else None
