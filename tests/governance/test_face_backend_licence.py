"""The face recogniser's licence as a use gate: insightface's non-commercial packs may not check
faces for a commercial job, a backend without registered terms serves non-commercial purposes
only, and a compliance officer links the licence that covers a backend's weights (audited).

The job side (refusal at submission before any face is processed, and again at the leakage
step) is exercised in tests/reenactment/test_face_backend_licence.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.models import AuditEvent, FaceThresholdPolicy, LicenseUse, Purpose, Territory
from governance.roles import Role
from governance.selectors.audit import audit_chain_verify
from governance.selectors.identity import FaceBackendUnusableError, face_backend_assert_usable
from governance.services.identity import (
    face_threshold_policy_for_backend,
    face_threshold_policy_licence_set,
)
from governance.services.licences import license_withdraw
from tests.governance.registry_helpers import make_licence

pytestmark = pytest.mark.django_db
BASE = "/api/governance/identity/face-thresholds"
COMMERCIAL = "entertainment"
NON_COMMERCIAL = "research"


def policy_licence(backend: str):  # noqa: ANN201 - a License or None
    return FaceThresholdPolicy.objects.select_related("licence").get(backend=backend).licence


def refusal(**kwargs: object) -> FaceBackendUnusableError:
    with pytest.raises(FaceBackendUnusableError) as caught:
        face_backend_assert_usable(**kwargs)  # type: ignore[arg-type]
    assert caught.value.status_code == 409
    return caught.value


def test_the_seeded_purposes_this_file_relies_on():
    assert Purpose.objects.get(pk=COMMERCIAL).is_commercial
    assert not Purpose.objects.get(pk=NON_COMMERCIAL).is_commercial


def test_dlib_cc0_models_may_check_faces_for_any_purpose():
    for purpose in (COMMERCIAL, NON_COMMERCIAL):
        clearance = face_backend_assert_usable(backend="dlib", purpose=purpose, territory="de")
        assert clearance.license_id == policy_licence("dlib").pk
    assert clearance.use == LicenseUse.RESEARCH_OUTPUT
    assert face_backend_assert_usable(backend="dlib", purpose=COMMERCIAL).use == (
        LicenseUse.COMMERCIAL_OUTPUT
    )


def test_insightface_packs_are_refused_for_a_commercial_purpose_and_allowed_for_research():
    error = refusal(backend="insightface", purpose=COMMERCIAL, territory="WW")
    licence = policy_licence("insightface")
    assert error.code == "face_backend_licence_forbids"
    assert error.extra["condition"] == "use"
    assert error.extra["license_id"] == licence.pk
    assert error.extra["use"] == LicenseUse.COMMERCIAL_OUTPUT
    assert "does not allow commercial output (purpose entertainment, commercial)" in str(error)
    assert "insightface" in str(error) and "FACE_BACKEND" in str(error)

    clearance = face_backend_assert_usable(backend="insightface", purpose=NON_COMMERCIAL)
    assert clearance.license_id == licence.pk


def test_a_backend_without_registered_terms_serves_non_commercial_purposes_only():
    # Never met before: no policy at all.
    error = refusal(backend="newface", purpose=COMMERCIAL)
    assert error.code == "face_backend_unlicensed"
    assert "/api/governance/identity/face-thresholds/newface/licence/" in str(error)
    assert face_backend_assert_usable(backend="newface", purpose=NON_COMMERCIAL).license_id is None
    # Met once: the policy is created from its declaration, still without a licence.
    face_threshold_policy_for_backend(
        backend_info={"name": "newface", "thresholds": {"match": 0.5, "review": 0.4}}
    )
    assert policy_licence("newface") is None
    assert refusal(backend="newface", purpose=COMMERCIAL).code == "face_backend_unlicensed"


def test_a_withdrawn_expired_or_territory_bound_licence_refuses_every_purpose(users):
    steward, officer = users[Role.DATA_STEWARD], users[Role.COMPLIANCE_OFFICER]
    territorial = make_licence(acting_user=steward, territories=["DE"])
    face_threshold_policy_licence_set(
        backend="dlib", license_id=territorial.pk, reason="German deal", acting_user=officer
    )
    assert face_backend_assert_usable(backend="dlib", purpose=COMMERCIAL, territory="de")
    germany = Territory.objects.get(pk="DE")
    assert face_backend_assert_usable(backend="dlib", purpose=COMMERCIAL, territory=germany)
    error = refusal(backend="dlib", purpose=NON_COMMERCIAL, territory="FR")
    assert error.extra["condition"] == "territory" and "territory FR" in str(error)

    expiring = make_licence(acting_user=steward, expires_at=timezone.now() + timedelta(days=1))
    face_threshold_policy_licence_set(
        backend="dlib", license_id=expiring.pk, reason="renewed", acting_user=officer
    )
    later = timezone.now() + timedelta(days=2)
    assert refusal(backend="dlib", purpose=NON_COMMERCIAL, at=later).extra["condition"] == (
        "expired"
    )

    license_withdraw(license=expiring, reason="ended by the licensor", acting_user=steward)
    error = refusal(backend="dlib", purpose=NON_COMMERCIAL)
    assert error.extra["condition"] == "withdrawn" and "ended by the licensor" in str(error)


def test_a_compliance_officer_links_a_commercial_licence_audited_with_old_and_new(users):
    steward, officer = users[Role.DATA_STEWARD], users[Role.COMPLIANCE_OFFICER]
    bought = make_licence(
        acting_user=steward,
        uses=[LicenseUse.RESEARCH_OUTPUT, LicenseUse.COMMERCIAL_OUTPUT],
        name="insightface commercial licence",
    )
    previous = policy_licence("insightface")
    policy = face_threshold_policy_licence_set(
        backend="insightface",
        license_id=bought.pk,
        reason="  commercial licence signed  ",
        acting_user=officer,
    )
    assert policy.licence == bought and policy.updated_by == officer
    assert face_backend_assert_usable(backend="insightface", purpose=COMMERCIAL).license_id == (
        bought.pk
    )
    event = AuditEvent.objects.filter(action=AuditAction.FACE_THRESHOLD_POLICY_LICENCE_SET).get()
    assert event.actor == officer and event.target_id == str(policy.pk)
    assert event.payload == {
        "backend": "insightface",
        "old": {"license_id": previous.pk, "name": previous.name},
        "new": {"license_id": bought.pk, "name": bought.name},
        "reason": "commercial licence signed",
    }
    # The same licence again changes nothing and records nothing.
    face_threshold_policy_licence_set(
        backend="insightface", license_id=bought.pk, reason="again", acting_user=officer
    )
    assert (
        AuditEvent.objects.filter(action=AuditAction.FACE_THRESHOLD_POLICY_LICENCE_SET).count() == 1
    )
    assert audit_chain_verify().ok


def test_linking_a_licence_is_refused_without_the_role_a_reason_or_a_licence_in_force(users):
    steward, officer = users[Role.DATA_STEWARD], users[Role.COMPLIANCE_OFFICER]
    licence = make_licence(acting_user=steward)
    before = policy_licence("insightface")
    with pytest.raises(ApplicationError) as denied:
        face_threshold_policy_licence_set(
            backend="insightface", license_id=licence.pk, reason="x", acting_user=steward
        )
    assert denied.value.status_code == 403
    with pytest.raises(ValidationError, match="reason"):
        face_threshold_policy_licence_set(
            backend="insightface", license_id=licence.pk, reason=" ", acting_user=officer
        )
    with pytest.raises(ValidationError, match="no licence"):
        face_threshold_policy_licence_set(
            backend="insightface", license_id=10**9, reason="x", acting_user=officer
        )
    license_withdraw(license=licence, reason="recorded in error", acting_user=steward)
    with pytest.raises(ValidationError, match="withdrawn"):
        face_threshold_policy_licence_set(
            backend="insightface", license_id=licence.pk, reason="x", acting_user=officer
        )
    with pytest.raises(ApplicationError) as missing:
        face_threshold_policy_licence_set(
            backend="nosuch", license_id=licence.pk, reason="x", acting_user=officer
        )
    assert missing.value.status_code == 404
    assert policy_licence("insightface") == before
    assert not AuditEvent.objects.filter(action=AuditAction.FACE_THRESHOLD_POLICY_LICENCE_SET)


def test_the_licence_api_links_and_lists_the_licence(api, users):
    steward, officer = users[Role.DATA_STEWARD], users[Role.COMPLIANCE_OFFICER]
    licence = make_licence(acting_user=steward, name="Recogniser terms")
    api.force_authenticate(officer)
    response = api.post(
        f"{BASE}/insightface/licence/", {"license_id": licence.pk, "reason": "bought"}, "json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["licence"] == "Recogniser terms"
    assert response.json()["licence_id"] == licence.pk
    listed = {row["backend"]: row for row in api.get(f"{BASE}/").json()}
    assert listed["insightface"]["licence_id"] == licence.pk
    assert listed["dlib"]["licence_id"] == policy_licence("dlib").pk

    missing_reason = api.post(f"{BASE}/insightface/licence/", {"license_id": licence.pk}, "json")
    assert missing_reason.status_code == 400
    assert (
        api.post(
            f"{BASE}/nosuch/licence/", {"license_id": licence.pk, "reason": "x"}, "json"
        ).status_code
        == 404
    )
    api.force_authenticate(steward)
    assert (
        api.post(
            f"{BASE}/insightface/licence/", {"license_id": licence.pk, "reason": "x"}, "json"
        ).status_code
        == 403
    )
