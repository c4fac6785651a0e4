"""The face recogniser's licence on the job path: a commercial job is refused at submission
while the platform runs on insightface's non-commercial packs, before any face is processed,
and a recogniser licence withdrawn after approval fails the leakage step on a real worker so
nothing is published. The rule itself is tested in tests/governance/test_face_backend_licence.py.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from governance.models import (
    AuditEvent,
    FaceMatchRecord,
    FaceThresholdPolicy,
    LeakageReport,
    ProvenanceRecord,
    Purpose,
)
from governance.roles import Role
from governance.selectors.identity import FaceBackendUnusableError
from governance.services.licences import license_withdraw
from reenactment.models import RenderJob, RenderJobStatus, VerificationStep
from reenactment.services.inputs import render_job_inputs_check
from reenactment.services.jobs import render_job_submit
from tests.factories import create_consent, create_policy
from tests.reenactment.test_job_flow import approve_all, submit, submit_response
from tests.reenactment.test_publication import generate_faithfully_and_verify

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
S = RenderJobStatus
COMMERCIAL = "entertainment"


def stored_inputs(media_root) -> list[str]:  # noqa: ANN001 - a Path
    folder = media_root / "jobs" / "inputs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def make_commercial(platform: Any) -> None:
    """Both people consent to a commercial purpose with commercial use; jobs ask for it."""
    officer = platform.user(Role.COMPLIANCE_OFFICER)
    create_policy(purpose=COMMERCIAL, acting_user=officer)
    roles = (platform.subject, "portrait_subject"), (platform.performer, "driving_performer")
    for person, role in roles:
        create_consent(
            person=person,
            role=role,
            purposes=[COMMERCIAL],
            channels=["internal"],
            territories=["WW"],
            commercial_use=True,
            acting_user=officer,
        )
    platform.purpose = Purpose.objects.get(pk=COMMERCIAL)
    assert platform.purpose.is_commercial


def test_a_commercial_job_is_refused_before_any_face_is_processed_on_insightface(
    platform, media_root, settings
):
    make_commercial(platform)

    # insightface's packs are non-commercial: no weights are even needed to be refused.
    settings.FACE_BACKEND = "insightface"
    response = submit_response(platform)
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "face_backend_licence_forbids"
    assert "commercial output" in error["message"] and "insightface" in error["message"]
    assert not RenderJob.objects.exists()
    assert not FaceMatchRecord.objects.exists()  # no face was compared
    assert stored_inputs(media_root) == []

    # The same request on dlib's CC0 models goes through: the refusal was the licence.
    settings.FACE_BACKEND = "dlib"
    job = submit(platform)
    assert job["status"] == S.AWAITING_APPROVAL
    assert FaceMatchRecord.objects.count() == 2


def test_a_recogniser_licence_withdrawn_after_approval_fails_the_leakage_step(
    platform, media_root, tmp_path
):
    worker = platform.worker(queues="default")
    job_id = submit(platform)["id"]
    approve_all(platform, job_id)
    licence = FaceThresholdPolicy.objects.get(backend="dlib").licence
    license_withdraw(
        license=licence,
        reason="the licensor ended it",
        acting_user=platform.user(Role.DATA_STEWARD),
    )
    job = generate_faithfully_and_verify(job_id, tmp_path, worker)
    assert job.status == S.FAILED
    assert "face recogniser 'dlib'" in job.status_reason
    assert "was withdrawn (the licensor ended it)" in job.status_reason
    steps = dict(VerificationStep.objects.filter(job=job).values_list("name", "status"))
    assert steps == {"leakage": "failed", "provenance": "pending"}
    assert not LeakageReport.objects.filter(subject_id=str(job_id)).exists()
    assert not ProvenanceRecord.objects.filter(subject_id=str(job_id)).exists()
    assert job.published_at is None


def test_the_submission_service_checks_the_recogniser_licence_again_at_commit(
    platform, media_root, settings
):
    """A caller of ``render_job_submit`` that skipped (or raced) the face checks is refused in
    the same transaction as the model's licence, and nothing is left behind."""
    make_commercial(platform)
    settings.FACE_BACKEND = "insightface"
    with (
        platform.driving.open("rb") as driving,
        render_job_inputs_check(portrait=io.BytesIO(platform.portrait_png), driving=driving) as c,
        pytest.raises(FaceBackendUnusableError) as refused,
    ):
        render_job_submit(
            requested_by=platform.user(Role.REQUESTER),
            portrait=c.portrait,
            driving=c.driving,
            portrait_subject=platform.subject,
            performer=platform.performer,
            purpose=platform.purpose,
            channels=["internal"],
            territory="WW",
            model_version=platform.model,
            parameters={},
            acting_user=platform.user(Role.REQUESTER),
        )
    assert refused.value.code == "face_backend_licence_forbids"
    assert not RenderJob.objects.exists()
    assert not AuditEvent.objects.filter(target_type="reenactment.renderjob").exists()
    assert stored_inputs(media_root) == []
