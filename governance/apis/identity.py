"""Identity checks over the API: leakage reports (read by reviewers and compliance officers,
released or rejected by compliance officers), face-match records of submissions, and the
thresholds per face backend (compliance officers)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import (
    GovernanceApi,
    GovernanceObjectApi,
    error_responses,
    paginated_response,
    paginated_schema,
    request_user,
)
from governance.models import (
    FaceMatchVerdict,
    FaceThresholdPolicy,
    LeakageReport,
    LeakageReviewDecision,
    LeakageVerdict,
)
from governance.selectors.identity import (
    face_match_record_list,
    face_threshold_policy_get,
    face_threshold_policy_list,
    leakage_report_get,
    leakage_report_list,
    leakage_report_outcome,
)
from governance.services.identity import (
    face_threshold_policy_licence_set,
    face_threshold_policy_update,
    leakage_report_reject,
    leakage_report_release,
)


@extend_schema_serializer(component_name="IdentityReason")
class _ReasonSerializer(serializers.Serializer):
    code = serializers.CharField()
    verdict = serializers.CharField()
    message = serializers.CharField()


@extend_schema_serializer(component_name="SimilarityStats")
class _StatsSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    mean = serializers.FloatField()
    min = serializers.FloatField()
    p10 = serializers.FloatField()
    median = serializers.FloatField()
    p90 = serializers.FloatField()
    max = serializers.FloatField()


@extend_schema_serializer(component_name="LeakageSample")
class _SampleSerializer(serializers.Serializer):
    frame = serializers.IntegerField()
    t = serializers.FloatField(allow_null=True, help_text="Seconds from the start.")
    portrait_sim = serializers.FloatField(allow_null=True, help_text="Null: no face.")
    performer_sim = serializers.FloatField(allow_null=True, help_text="Null: no face.")


@extend_schema_serializer(component_name="LeakageReport")
class LeakageReportOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subject_type = serializers.CharField()
    subject_id = serializers.CharField()
    verdict = serializers.CharField(help_text="pass, review or fail.")
    outcome = serializers.SerializerMethodField(
        help_text="cleared (pass, or released), awaiting_review, or quarantined."
    )
    reasons = _ReasonSerializer(many=True)
    portrait_stats = _StatsSerializer(allow_null=True)
    performer_stats = _StatsSerializer(allow_null=True)
    baseline_similarity = serializers.FloatField()
    time_series = _SampleSerializer(many=True)
    total_frames = serializers.IntegerField()
    sampled_frames = serializers.IntegerField()
    faceless_frames = serializers.IntegerField()
    faceless_share = serializers.FloatField()
    sampling = serializers.CharField()
    thresholds = serializers.DictField()
    backend = serializers.CharField()
    backend_fingerprint = serializers.CharField()
    backend_licence = serializers.CharField()
    created_at = serializers.DateTimeField()
    review_decision = serializers.CharField()
    review_reason = serializers.CharField()
    reviewed_by = serializers.IntegerField(source="reviewed_by_id", allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)

    def get_outcome(self, report: LeakageReport) -> str:
        return leakage_report_outcome(report)


class LeakageReportListApi(GovernanceApi):
    """Identity-leakage reports, newest first. Reviewers and compliance officers."""

    global_permissions = {"GET": ["governance.view_leakagereport"]}

    class FilterSerializer(serializers.Serializer):
        subject_type = serializers.CharField(required=False)
        subject_id = serializers.CharField(required=False)
        verdict = serializers.ChoiceField(choices=LeakageVerdict.choices, required=False)
        awaiting_review = serializers.BooleanField(
            required=False, allow_null=True, default=None, help_text="Undecided review verdicts."
        )

    @extend_schema(
        operation_id="governance_leakage_reports_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("LeakageReportPage", LeakageReportOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List identity-leakage reports",
        tags=["identity"],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=leakage_report_list(**filters.validated_data),
            serializer_class=LeakageReportOutputSerializer,
            request=request,
            view=self,
        )


def _get_report(view: GovernanceObjectApi, request: Request, report_id: int) -> LeakageReport:
    report = leakage_report_get(report_id=report_id)
    if report is None:
        raise Http404
    view.check_object_permissions(request, report)
    return report


class LeakageReportDetailApi(GovernanceObjectApi):
    """One leakage report with its statistics and time series. 404 for callers who may not
    read reports."""

    read_permission = "governance.view_leakagereport"

    @extend_schema(
        operation_id="governance_leakage_reports_detail",
        responses={200: LeakageReportOutputSerializer, **error_responses(401, 404)},
        summary="An identity-leakage report",
        tags=["identity"],
    )
    def get(self, request: Request, report_id: int) -> Response:
        return Response(LeakageReportOutputSerializer(_get_report(self, request, report_id)).data)


class _LeakageReviewApi(GovernanceObjectApi):
    read_permission = "governance.view_leakagereport"
    object_permissions = {"POST": ["governance.review_leakagereport"]}
    parser_classes = [JSONParser, FormParser]
    decision: str

    @extend_schema_serializer(component_name="LeakageReviewInput")
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField(help_text="Why (mandatory; audited).")

    def post(self, request: Request, report_id: int) -> Response:
        report = _get_report(self, request, report_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        service = (
            leakage_report_release
            if self.decision == LeakageReviewDecision.RELEASE
            else leakage_report_reject
        )
        decided = service(
            report=report,
            reason=serializer.validated_data["reason"],
            acting_user=request_user(request),
        )
        return Response(LeakageReportOutputSerializer(decided).data)


_REVIEW_RESPONSES = {
    200: LeakageReportOutputSerializer,
    **error_responses(400, 401, 403, 404, 409, 500),
}


class LeakageReportReleaseApi(_LeakageReviewApi):
    """Release an output whose report asks for review (compliance officers; not the one who
    requested the output). 409 unless the verdict is review and undecided. Audited; the
    jobs side publishes in the same transaction."""

    decision = LeakageReviewDecision.RELEASE

    @extend_schema(
        operation_id="governance_leakage_reports_release",
        request=_LeakageReviewApi.InputSerializer,
        responses=_REVIEW_RESPONSES,
        summary="Release a flagged output",
        tags=["identity"],
    )
    def post(self, request: Request, report_id: int) -> Response:
        return super().post(request, report_id)


class LeakageReportRejectApi(_LeakageReviewApi):
    """Reject an output whose report asks for review (same rules as release). Audited; the
    jobs side rejects the job in the same transaction."""

    decision = LeakageReviewDecision.REJECT

    @extend_schema(
        operation_id="governance_leakage_reports_reject",
        request=_LeakageReviewApi.InputSerializer,
        responses=_REVIEW_RESPONSES,
        summary="Reject a flagged output",
        tags=["identity"],
    )
    def post(self, request: Request, report_id: int) -> Response:
        return super().post(request, report_id)


class FaceMatchRecordListApi(GovernanceApi):
    """Consent-binding face checks of submissions (scores and verdicts; never embeddings),
    newest first. Reviewers and compliance officers: approvers look here for ``review``
    verdicts."""

    global_permissions = {"GET": ["governance.view_facematchrecord"]}

    class FilterSerializer(serializers.Serializer):
        subject_type = serializers.CharField(required=False)
        subject_id = serializers.CharField(required=False)
        person = serializers.IntegerField(required=False, source="person_id")
        verdict = serializers.ChoiceField(choices=FaceMatchVerdict.choices, required=False)

    @extend_schema_serializer(component_name="FaceMatchRecord")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        subject_type = serializers.CharField()
        subject_id = serializers.CharField()
        check = serializers.CharField(
            source="check_type", help_text="portrait_vs_subject or driving_vs_performer."
        )
        person = serializers.IntegerField(source="person_id")
        verdict = serializers.CharField(help_text="match, review or no_match.")
        reasons = _ReasonSerializer(many=True)
        scores = serializers.DictField()
        thresholds = serializers.DictField()
        reference_sha256 = serializers.CharField()
        candidate_sha256 = serializers.CharField()
        backend = serializers.CharField()
        backend_fingerprint = serializers.CharField()
        backend_licence = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="governance_face_matches_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("FaceMatchRecordPage", OutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List face-match records",
        tags=["identity"],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=face_match_record_list(**filters.validated_data),
            serializer_class=self.OutputSerializer,
            request=request,
            view=self,
        )


@extend_schema_serializer(component_name="FaceThresholdPolicy")
class FaceThresholdPolicyOutputSerializer(serializers.Serializer):
    backend = serializers.CharField()
    match_threshold = serializers.FloatField()
    review_threshold = serializers.FloatField()
    leakage_margin = serializers.FloatField()
    leakage_review_margin = serializers.FloatField()
    max_faceless_share = serializers.FloatField()
    min_sampled_frames = serializers.IntegerField()
    licence = serializers.CharField(source="licence.name", allow_null=True, default=None)
    licence_id = serializers.IntegerField(allow_null=True)
    licence_text = serializers.CharField()
    updated_at = serializers.DateTimeField()
    updated_by = serializers.IntegerField(source="updated_by_id", allow_null=True)


class FaceThresholdPolicyListApi(GovernanceApi):
    """The thresholds of every face backend, with the licence of its weights. Compliance
    officers."""

    global_permissions = {"GET": ["governance.view_facethresholdpolicy"]}

    @extend_schema(
        operation_id="governance_face_thresholds_list",
        responses={
            200: FaceThresholdPolicyOutputSerializer(many=True),
            **error_responses(401, 403),
        },
        summary="List face thresholds",
        tags=["identity"],
    )
    def get(self, request: Request) -> Response:
        return Response(
            FaceThresholdPolicyOutputSerializer(face_threshold_policy_list(), many=True).data
        )


class _FaceThresholdPolicyChangeApi(GovernanceApi):
    """A compliance officer's audited change to one backend's policy (404 for an unknown one);
    the subclass names the service and its input."""

    global_permissions = {
        "POST": ["governance.view_facethresholdpolicy", "governance.change_facethresholdpolicy"]
    }
    parser_classes = [JSONParser, FormParser]
    InputSerializer: type[serializers.Serializer]

    def change(
        self, request: Request, backend: str, service: Callable[..., FaceThresholdPolicy]
    ) -> Response:
        if face_threshold_policy_get(backend=backend) is None:
            raise Http404
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = service(
            backend=backend, **serializer.validated_data, acting_user=request_user(request)
        )
        return Response(FaceThresholdPolicyOutputSerializer(policy).data)


class FaceThresholdPolicyUpdateApi(_FaceThresholdPolicyChangeApi):
    """Change a backend's thresholds (fields left out stay as they are; the reason is
    mandatory). Compliance officers. Audited with old and new values; earlier verdicts keep
    the thresholds they were decided with."""

    @extend_schema_serializer(component_name="FaceThresholdPolicyUpdateInput")
    class InputSerializer(serializers.Serializer):
        match_threshold = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)
        review_threshold = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)
        leakage_margin = serializers.FloatField(required=False, min_value=0.0, max_value=2.0)
        leakage_review_margin = serializers.FloatField(required=False, min_value=0.0, max_value=2.0)
        max_faceless_share = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
        min_sampled_frames = serializers.IntegerField(required=False, min_value=1, max_value=10_000)
        reason = serializers.CharField(help_text="Why the thresholds change (audited).")

    @extend_schema(
        operation_id="governance_face_thresholds_update",
        request=InputSerializer,
        responses={
            200: FaceThresholdPolicyOutputSerializer,
            **error_responses(400, 401, 403, 404),
        },
        summary="Change a backend's face thresholds",
        tags=["identity"],
    )
    def post(self, request: Request, backend: str) -> Response:
        return self.change(request, backend, face_threshold_policy_update)


class FaceThresholdPolicyLicenceSetApi(_FaceThresholdPolicyChangeApi):
    """Link the licence that covers a backend's pretrained weights (registered by a data
    steward), e.g. a commercial insightface licence. Compliance officers; the reason is
    mandatory; audited with the old and new licence. Jobs are refused for purposes the linked
    licence does not allow (insightface's own packs: non-commercial only)."""

    @extend_schema_serializer(component_name="FaceThresholdPolicyLicenceSetInput")
    class InputSerializer(serializers.Serializer):
        license_id = serializers.IntegerField(min_value=1)
        reason = serializers.CharField(help_text="Why the licence changes (audited).")

    @extend_schema(
        operation_id="governance_face_thresholds_licence_set",
        request=InputSerializer,
        responses={
            200: FaceThresholdPolicyOutputSerializer,
            **error_responses(400, 401, 403, 404),
        },
        summary="Link the licence of a backend's weights",
        tags=["identity"],
    )
    def post(self, request: Request, backend: str) -> Response:
        return self.change(request, backend, face_threshold_policy_licence_set)
