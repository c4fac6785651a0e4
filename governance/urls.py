from django.urls import path

from governance.apis.approvals import (
    ApprovalInboxApi,
    ApprovalRequestDetailApi,
    ApprovalStepDecideApi,
)
from governance.apis.audit import AuditChainVerifyApi, AuditEventExportApi, AuditEventListApi
from governance.apis.consents import (
    ConsentCreateApi,
    ConsentDetailApi,
    ConsentEvidenceDownloadApi,
    ConsentListApi,
    ConsentRevokeApi,
    ConsentSupersedeApi,
)
from governance.apis.persons import (
    PersonCreateApi,
    PersonDetailApi,
    PersonListApi,
    PersonReferencePhotoDownloadApi,
)
from governance.apis.users import UserMeApi
from governance.apis.vocabulary import VocabularyListApi

app_name = "governance"

urlpatterns = [
    path("me/", UserMeApi.as_view(), name="user-me"),
    path("vocabulary/", VocabularyListApi.as_view(), name="vocabulary"),
    path("persons/", PersonListApi.as_view(), name="person-list"),
    path("persons/create/", PersonCreateApi.as_view(), name="person-create"),
    path("persons/<int:person_id>/", PersonDetailApi.as_view(), name="person-detail"),
    path(
        "persons/<int:person_id>/reference-photo/",
        PersonReferencePhotoDownloadApi.as_view(),
        name="person-reference-photo",
    ),
    path("consents/", ConsentListApi.as_view(), name="consent-list"),
    path("consents/create/", ConsentCreateApi.as_view(), name="consent-create"),
    path("consents/<int:consent_id>/", ConsentDetailApi.as_view(), name="consent-detail"),
    path(
        "consents/<int:consent_id>/supersede/",
        ConsentSupersedeApi.as_view(),
        name="consent-supersede",
    ),
    path("consents/<int:consent_id>/revoke/", ConsentRevokeApi.as_view(), name="consent-revoke"),
    path(
        "consents/<int:consent_id>/evidence/<str:kind>/",
        ConsentEvidenceDownloadApi.as_view(),
        name="consent-evidence",
    ),
    path("approvals/inbox/", ApprovalInboxApi.as_view(), name="approval-inbox"),
    path(
        "approvals/<int:request_id>/",
        ApprovalRequestDetailApi.as_view(),
        name="approval-request-detail",
    ),
    path(
        "approvals/steps/<int:step_id>/decide/",
        ApprovalStepDecideApi.as_view(),
        name="approval-step-decide",
    ),
    path("audit/events/", AuditEventListApi.as_view(), name="audit-event-list"),
    path("audit/export/", AuditEventExportApi.as_view(), name="audit-export"),
    path("audit/verify/", AuditChainVerifyApi.as_view(), name="audit-verify"),
]
