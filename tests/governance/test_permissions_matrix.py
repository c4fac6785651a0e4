"""Every governance endpoint × every role and anonymous, with the exact status code.

Collection endpoints answer 403 to roles without the permission; object endpoints answer 404
to callers who may not read the object (so its existence is not confirmed) and 403 to those
who may read it but not do what they ask. Anonymous callers get 401 with a challenge.

The requester in the table is the one who made the approval request, so they may read it but
never decide it (separation of duties).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from governance.models import ApprovalRequest, ConsentRecord, Person, User
from governance.roles import Role
from governance.services.roles import object_permission_grant
from tests.factories import (
    UserFactory,
    create_approval_request,
    create_consent,
    create_person,
    create_policy,
    form_upload,
    photo_upload,
)
from tests.governance.registry_helpers import registry_endpoint
from tests.governance.test_identity_api import identity_endpoint

pytestmark = pytest.mark.django_db

BASE = "/api/governance"
COLUMNS = ["anonymous", "requester", "reviewer", "compliance_officer", "data_steward", "operator"]

# fmt: off
MATRIX: dict[str, tuple[int, int, int, int, int, int]] = {
    #                                                  anon  req  rev   co   ds   op
    "GET me":                                         (401, 200, 200, 200, 200, 200),
    "GET vocabulary":                                 (401, 200, 200, 200, 200, 200),
    "GET persons":                                    (401, 200, 200, 200, 403, 403),
    "POST persons/create":                            (401, 403, 403, 201, 403, 403),
    "GET persons/{person}":                           (401, 200, 200, 200, 404, 404),
    "GET persons/{person}/reference-photo":           (401, 403, 200, 200, 404, 404),
    "GET consents":                                   (401, 200, 200, 200, 403, 403),
    "POST consents/create":                           (401, 403, 403, 201, 403, 403),
    "GET consents/{consent}":                         (401, 200, 200, 200, 404, 404),
    "POST consents/{consent}/supersede":              (401, 403, 403, 201, 404, 404),
    "POST consents/{consent}/revoke":                 (401, 403, 403, 200, 404, 404),
    "GET consents/{consent}/evidence/signed-form":    (401, 403, 200, 200, 404, 404),
    "GET approvals/inbox":                            (401, 200, 200, 200, 200, 200),
    "GET approvals/{request}":                        (401, 200, 200, 200, 404, 404),
    "POST approvals/steps/{step}/decide":             (401, 403, 200, 403, 404, 404),
    "GET audit/events":                               (401, 403, 403, 200, 403, 403),
    "GET audit/export":                               (401, 403, 403, 200, 403, 403),
    "GET audit/verify":                               (401, 403, 403, 200, 403, 403),
    # Licensed data and the model registry: data stewards write, compliance officers read.
    "GET licensors":                                  (401, 403, 403, 200, 200, 403),
    "POST licensors/create":                          (401, 403, 403, 403, 201, 403),
    "GET licences":                                   (401, 403, 403, 200, 200, 403),
    "POST licences/create":                           (401, 403, 403, 403, 201, 403),
    "GET licences/{licence}":                         (401, 404, 404, 200, 200, 404),
    "POST licences/{licence}/withdraw":               (401, 404, 404, 403, 200, 404),
    "GET datasets":                                   (401, 403, 403, 200, 200, 403),
    "POST datasets/create":                           (401, 403, 403, 403, 201, 403),
    "GET datasets/{dataset}":                         (401, 404, 404, 200, 200, 404),
    "GET clips":                                      (401, 403, 403, 200, 200, 403),
    "POST clips/create":                              (401, 403, 403, 403, 201, 403),
    "GET clips/{clip}":                               (401, 404, 404, 200, 200, 404),
    "GET snapshots":                                  (401, 403, 403, 200, 200, 403),
    "POST snapshots/create":                          (401, 403, 403, 403, 201, 403),
    "GET snapshots/{snapshot}":                       (401, 404, 404, 200, 200, 404),
    "GET snapshots/{snapshot}/export":                (401, 404, 404, 403, 200, 404),
    "GET snapshots/{snapshot}/status":                (401, 404, 404, 200, 200, 404),
    # Requesters also read model versions: they pick the one a job runs on.
    "GET models":                                     (401, 200, 403, 200, 200, 403),
    "GET models/{model}":                             (401, 200, 404, 200, 200, 404),
    "POST models/{model}/block":                      (401, 403, 404, 403, 200, 404),
    "POST models/{model}/deprecate":                  (401, 403, 404, 403, 200, 404),
    # Identity checks: reviewers read, compliance officers also release/reject and set thresholds.
    "GET identity/leakage-reports":                   (401, 403, 200, 200, 403, 403),
    "GET identity/leakage-reports/{report}":          (401, 404, 200, 200, 404, 404),
    "POST identity/leakage-reports/{report}/release": (401, 404, 403, 200, 404, 404),
    "POST identity/leakage-reports/{report}/reject":  (401, 404, 403, 200, 404, 404),
    "GET identity/face-matches":                      (401, 403, 200, 200, 403, 403),
    "GET identity/face-thresholds":                   (401, 403, 403, 200, 403, 403),
    "POST identity/face-thresholds/{backend}/update": (401, 403, 403, 200, 403, 403),
    "POST identity/face-thresholds/{backend}/licence": (401, 403, 403, 200, 403, 403),
}
# fmt: on


@dataclass
class World:
    users: dict[str, User]
    person: Person
    consent: ConsentRecord
    approval_request: ApprovalRequest


@pytest.fixture
def world(users: dict[str, User]) -> World:
    officer = users[Role.COMPLIANCE_OFFICER]
    person = create_person(acting_user=officer)
    consent = create_consent(person=person, acting_user=officer)
    create_policy(purpose="research", acting_user=officer)
    approval_request = create_approval_request(requested_by=users[Role.REQUESTER])
    return World(users, person, consent, approval_request)


def _scope(person: Person | None = None) -> dict[str, object]:
    now = timezone.now()
    data: dict[str, object] = {
        "role": "portrait_subject",
        "purposes": ["research"],
        "channels": ["web"],
        "territories": ["DE"],
        "valid_from": (now - timedelta(hours=1)).isoformat(),
        "signed_form": form_upload(),
    }
    if person is not None:
        data["person"] = person.pk
    return data


def _call(api: APIClient, world: World, endpoint: str):
    method, _, template = endpoint.partition(" ")
    registry_ids, registry_body = registry_endpoint(world.users, endpoint)
    identity_ids, identity_body = identity_endpoint(world.users, endpoint)
    path = template.format(
        **registry_ids,
        **identity_ids,
        person=world.person.pk,
        consent=world.consent.pk,
        request=world.approval_request.pk,
        step=world.approval_request.steps.get(order=1).pk,
    )
    url = f"{BASE}/{path}/"
    bodies: dict[str, Callable[[], tuple[dict[str, object], str]]] = {
        "POST persons/create": lambda: (
            {
                "full_name": "New Person",
                "identity_verification_note": "Passport",
                "reference_photo": photo_upload(),
            },
            "multipart",
        ),
        "POST consents/create": lambda: (_scope(world.person), "multipart"),
        "POST consents/{consent}/supersede": lambda: (
            {**_scope(), "reason": "Renewed"},
            "multipart",
        ),
        "POST consents/{consent}/revoke": lambda: ({"reason": "Withdrawn"}, "json"),
        "POST approvals/steps/{step}/decide": lambda: ({"verdict": "approve"}, "json"),
    }
    if method == "GET":
        return api.get(url)
    body = registry_body or identity_body
    data, fmt = body() if body else bodies[endpoint]()
    return api.post(url, data, format=fmt)


@pytest.mark.parametrize("column", range(len(COLUMNS)), ids=COLUMNS)
@pytest.mark.parametrize("endpoint", list(MATRIX))
def test_permission_matrix(api: APIClient, world: World, endpoint: str, column: int) -> None:
    who = COLUMNS[column]
    if who != "anonymous":
        api.force_authenticate(world.users[who])
    response = _call(api, world, endpoint)
    expected = MATRIX[endpoint][column]
    assert response.status_code == expected, (who, endpoint, getattr(response, "data", None))
    if expected < 400:
        return
    assert response.json() == {
        "error": {
            "code": _error_code(endpoint, who, expected),
            "message": response.json()["error"]["message"],
        }
    }
    if expected == 401:
        assert response["WWW-Authenticate"] == 'Basic realm="api"'


def _error_code(endpoint: str, who: str, status: int) -> str:
    if status == 401:
        return "not_authenticated"
    if status == 404:
        return "not_found"
    if endpoint.endswith("decide"):
        # Refused by the service's separation of duties, not by a permission class.
        return {
            "requester": "approval_requester_cannot_decide",
            "compliance_officer": "approval_not_a_decider",
        }[who]
    return "permission_denied"


def test_the_matrix_covers_every_governance_endpoint():
    from governance.urls import urlpatterns

    assert len(urlpatterns) == len(MATRIX)


def test_an_object_grant_lets_one_user_read_one_consent(api, world):
    steward = world.users[Role.DATA_STEWARD]
    officer = world.users[Role.COMPLIANCE_OFFICER]
    other = create_consent(person=world.person, acting_user=officer, purposes=["research"])
    object_permission_grant(
        perm="governance.view_consentrecord",
        obj=world.consent,
        grantee=steward,
        acting_user=officer,
    )
    api.force_authenticate(steward)
    assert api.get(f"{BASE}/consents/{world.consent.pk}/").status_code == 200
    assert api.get(f"{BASE}/consents/{other.pk}/").status_code == 404
    # Reading is not downloading, and the collection still needs the role's permission.
    assert api.get(f"{BASE}/consents/{world.consent.pk}/evidence/signed-form/").status_code == 403
    assert api.get(f"{BASE}/consents/").status_code == 403
    # Someone else with the same role gains nothing.
    api.force_authenticate(UserFactory(roles=[Role.DATA_STEWARD]))
    assert api.get(f"{BASE}/consents/{world.consent.pk}/").status_code == 404
