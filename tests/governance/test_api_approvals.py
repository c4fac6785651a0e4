"""The approvals API: the caller's inbox, deciding, and the refusals in the one error shape."""

from __future__ import annotations

import pytest

from governance.models import ApprovalDecision, ApprovalStatus
from governance.roles import Role
from tests.factories import UserFactory, create_approval_request, create_policy

pytestmark = pytest.mark.django_db

BASE = "/api/governance"


@pytest.fixture
def approval_request(compliance, requester):
    create_policy(purpose="research", acting_user=compliance)
    return create_approval_request(requested_by=requester, subject_id=99, summary="Clip for HR")


def decide(api, step_id: int, **body: str):
    return api.post(f"{BASE}/approvals/steps/{step_id}/decide/", body, format="json")


def test_inbox_then_decide_then_the_next_decider(api, approval_request, reviewer, compliance):
    first, second = approval_request.steps.order_by("order")
    api.force_authenticate(reviewer)
    inbox = api.get(f"{BASE}/approvals/inbox/").json()
    assert inbox["count"] == 1
    item = inbox["results"][0]
    assert (item["step"], item["order"], item["role"]) == (first.pk, 1, "reviewer")
    assert item["request"]["subject_id"] == "99"
    assert item["request"]["summary"] == "Clip for HR"
    assert item["request"]["status"] == "pending"
    assert [s["role"] for s in item["request"]["steps"]] == ["reviewer", "compliance_officer"]

    response = decide(api, first.pk, verdict="approve")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "pending"
    assert body["expires_at"] is not None
    assert body["steps"][0]["decision"]["decided_by"] == reviewer.pk
    assert body["steps"][0]["decision"]["verdict"] == "approve"
    assert body["steps"][1]["decision"] is None
    assert api.get(f"{BASE}/approvals/inbox/").json()["count"] == 0

    api.force_authenticate(compliance)
    assert [i["step"] for i in api.get(f"{BASE}/approvals/inbox/").json()["results"]] == [second.pk]
    body = decide(api, second.pk, verdict="approve", reason="Within scope").json()
    assert body["status"] == "approved"
    assert body["approved_at"] is not None
    assert body["steps"][1]["decision"]["reason"] == "Within scope"


def test_the_requester_is_refused_with_a_clear_message(api, approval_request, requester):
    api.force_authenticate(requester)
    assert api.get(f"{BASE}/approvals/{approval_request.pk}/").status_code == 200
    response = decide(api, approval_request.steps.get(order=1).pk, verdict="approve")
    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "approval_requester_cannot_decide",
            "message": "You requested this approval; someone else must decide it.",
        }
    }
    assert not ApprovalDecision.objects.exists()


def test_deciding_a_decided_step_is_a_conflict_and_writes_nothing(api, approval_request, reviewer):
    step = approval_request.steps.get(order=1)
    api.force_authenticate(reviewer)
    assert decide(api, step.pk, verdict="approve").status_code == 200
    api.force_authenticate(UserFactory(roles=[Role.REVIEWER]))
    response = decide(api, step.pk, verdict="reject", reason="Too late")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "approval_step_already_decided",
        "message": f"Step 1 of request #{approval_request.pk} was already decided (approve).",
    }
    assert ApprovalDecision.objects.count() == 1


def test_reject_without_reason_is_400_and_with_reason_ends_the_request(
    api, approval_request, reviewer
):
    step = approval_request.steps.get(order=1)
    api.force_authenticate(reviewer)
    response = decide(api, step.pk, verdict="reject")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid",
        "message": "A reason is required to reject or to request changes.",
        "fields": {"reason": ["A reason is required to reject or to request changes."]},
    }
    response = decide(api, step.pk, verdict="maybe")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"verdict": ['"maybe" is not a valid choice.']}
    assert not ApprovalDecision.objects.exists()

    body = decide(api, step.pk, verdict="request_changes", reason="Crop the logo").json()
    assert body["status"] == ApprovalStatus.CHANGES_REQUESTED
    assert body["close_reason"] == "Crop the logo"


def test_a_request_the_caller_may_not_see_is_404_for_reading_and_deciding(api, approval_request):
    stranger = UserFactory(roles=[Role.REQUESTER])
    api.force_authenticate(stranger)
    assert api.get(f"{BASE}/approvals/{approval_request.pk}/").status_code == 404
    response = decide(api, approval_request.steps.get(order=1).pk, verdict="approve")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert api.get(f"{BASE}/approvals/999999/").status_code == 404
    assert decide(api, 999999, verdict="approve").status_code == 404
