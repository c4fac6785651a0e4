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
from governance.apis.identity import (
    FaceMatchRecordListApi,
    FaceThresholdPolicyLicenceSetApi,
    FaceThresholdPolicyListApi,
    FaceThresholdPolicyUpdateApi,
    LeakageReportDetailApi,
    LeakageReportListApi,
    LeakageReportRejectApi,
    LeakageReportReleaseApi,
)
from governance.apis.persons import (
    PersonCreateApi,
    PersonDetailApi,
    PersonListApi,
    PersonReferencePhotoDownloadApi,
)
from governance.apis.registry import (
    ClipCreateApi,
    ClipDetailApi,
    ClipListApi,
    DatasetCreateApi,
    DatasetDetailApi,
    DatasetListApi,
    LicenseCreateApi,
    LicenseDetailApi,
    LicenseListApi,
    LicenseWithdrawApi,
    LicensorCreateApi,
    LicensorListApi,
    ModelVersionBlockApi,
    ModelVersionDeprecateApi,
    ModelVersionDetailApi,
    ModelVersionListApi,
    SnapshotCreateApi,
    SnapshotDetailApi,
    SnapshotExportApi,
    SnapshotListApi,
    SnapshotStatusApi,
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
    path("identity/leakage-reports/", LeakageReportListApi.as_view(), name="leakage-report-list"),
    path(
        "identity/leakage-reports/<int:report_id>/",
        LeakageReportDetailApi.as_view(),
        name="leakage-report-detail",
    ),
    path(
        "identity/leakage-reports/<int:report_id>/release/",
        LeakageReportReleaseApi.as_view(),
        name="leakage-report-release",
    ),
    path(
        "identity/leakage-reports/<int:report_id>/reject/",
        LeakageReportRejectApi.as_view(),
        name="leakage-report-reject",
    ),
    path("identity/face-matches/", FaceMatchRecordListApi.as_view(), name="face-match-list"),
    path(
        "identity/face-thresholds/",
        FaceThresholdPolicyListApi.as_view(),
        name="face-threshold-list",
    ),
    path(
        "identity/face-thresholds/<str:backend>/update/",
        FaceThresholdPolicyUpdateApi.as_view(),
        name="face-threshold-update",
    ),
    path(
        "identity/face-thresholds/<str:backend>/licence/",
        FaceThresholdPolicyLicenceSetApi.as_view(),
        name="face-threshold-licence",
    ),
]

# Licensed training data and the model registry (governance/apis/registry.py).
urlpatterns += [
    path("licensors/", LicensorListApi.as_view(), name="licensor-list"),
    path("licensors/create/", LicensorCreateApi.as_view(), name="licensor-create"),
    path("licences/", LicenseListApi.as_view(), name="licence-list"),
    path("licences/create/", LicenseCreateApi.as_view(), name="licence-create"),
    path("licences/<int:license_id>/", LicenseDetailApi.as_view(), name="licence-detail"),
    path(
        "licences/<int:license_id>/withdraw/",
        LicenseWithdrawApi.as_view(),
        name="licence-withdraw",
    ),
    path("datasets/", DatasetListApi.as_view(), name="dataset-list"),
    path("datasets/create/", DatasetCreateApi.as_view(), name="dataset-create"),
    path("datasets/<int:dataset_id>/", DatasetDetailApi.as_view(), name="dataset-detail"),
    path("clips/", ClipListApi.as_view(), name="clip-list"),
    path("clips/create/", ClipCreateApi.as_view(), name="clip-create"),
    path("clips/<int:clip_id>/", ClipDetailApi.as_view(), name="clip-detail"),
    path("snapshots/", SnapshotListApi.as_view(), name="snapshot-list"),
    path("snapshots/create/", SnapshotCreateApi.as_view(), name="snapshot-create"),
    path("snapshots/<int:snapshot_id>/", SnapshotDetailApi.as_view(), name="snapshot-detail"),
    path(
        "snapshots/<int:snapshot_id>/export/",
        SnapshotExportApi.as_view(),
        name="snapshot-export",
    ),
    path(
        "snapshots/<int:snapshot_id>/status/",
        SnapshotStatusApi.as_view(),
        name="snapshot-status",
    ),
    path("models/", ModelVersionListApi.as_view(), name="model-version-list"),
    path(
        "models/<int:model_version_id>/",
        ModelVersionDetailApi.as_view(),
        name="model-version-detail",
    ),
    path(
        "models/<int:model_version_id>/block/",
        ModelVersionBlockApi.as_view(),
        name="model-version-block",
    ),
    path(
        "models/<int:model_version_id>/deprecate/",
        ModelVersionDeprecateApi.as_view(),
        name="model-version-deprecate",
    ),
]
