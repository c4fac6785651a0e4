from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
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
from governance.models import ApprovalRequest, ApprovalStep, ApprovalVerdict, User
from governance.selectors.approvals import (
    approval_inbox_list,
    approval_request_effective_status,
    approval_request_get,
    approval_request_is_visible_to,
)
from governance.services.approvals import approval_decide


@extend_schema_serializer(component_name="ApprovalDecision")
class _DecisionSerializer(serializers.Serializer):
    decided_by = serializers.IntegerField(source="decided_by_id")
    verdict = serializers.ChoiceField(choices=ApprovalVerdict.choices)
    reason = serializers.CharField()
    decided_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="ApprovalStep")
class _StepSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    order = serializers.IntegerField()
    role = serializers.CharField()
    decision = serializers.SerializerMethodField()

    @extend_schema_field(_DecisionSerializer(allow_null=True))
    def get_decision(self, step: ApprovalStep) -> dict[str, object] | None:
        decision = getattr(step, "decision", None)
        return dict(_DecisionSerializer(decision).data) if decision is not None else None


@extend_schema_serializer(component_name="ApprovalRequest")
class ApprovalRequestOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subject_type = serializers.CharField()
    subject_id = serializers.CharField()
    summary = serializers.CharField()
    purpose = serializers.CharField(source="purpose_id", allow_null=True)
    policy = serializers.CharField(source="policy.name")
    requested_by = serializers.IntegerField(source="requested_by_id")
    created_at = serializers.DateTimeField()
    status = serializers.SerializerMethodField(
        help_text="pending, approved, rejected, changes_requested, cancelled, or expired."
    )
    approved_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    closed_at = serializers.DateTimeField(allow_null=True)
    close_reason = serializers.CharField()
    steps = _StepSerializer(many=True)

    @extend_schema_field(str)
    def get_status(self, approval_request: ApprovalRequest) -> str:
        return approval_request_effective_status(approval_request)


def _visible(user: User, approval_request: ApprovalRequest) -> bool:
    return approval_request_is_visible_to(user=user, approval_request=approval_request)


class ApprovalInboxApi(GovernanceApi):
    """The steps waiting for the caller's decision: current steps of pending, unexpired
    requests, of a role the caller holds, with the object permission to decide them, on
    requests the caller neither made nor already decided a step of."""

    @extend_schema_serializer(component_name="ApprovalInboxItem")
    class OutputSerializer(serializers.Serializer):
        step = serializers.IntegerField(source="id")
        order = serializers.IntegerField()
        role = serializers.CharField()
        request = ApprovalRequestOutputSerializer()

    @extend_schema(
        operation_id="governance_approvals_inbox",
        responses={
            200: paginated_schema("ApprovalInboxPage", OutputSerializer),
            **error_responses(401),
        },
        summary="My approval inbox",
        tags=["approvals"],
    )
    def get(self, request: Request) -> Response:
        steps = approval_inbox_list(user=request_user(request)).prefetch_related(
            "request__policy", "request__steps__decision"
        )
        return paginated_response(
            queryset=steps, serializer_class=self.OutputSerializer, request=request, view=self
        )


class ApprovalRequestDetailApi(GovernanceObjectApi):
    """One approval request with its steps and decisions. Visible to its requester, to those
    who may decide one of its steps, and to compliance officers; 404 for anyone else."""

    read_permission = staticmethod(_visible)

    @extend_schema(
        operation_id="governance_approvals_detail",
        responses={200: ApprovalRequestOutputSerializer, **error_responses(401, 404)},
        summary="An approval request",
        tags=["approvals"],
    )
    def get(self, request: Request, request_id: int) -> Response:
        approval_request = approval_request_get(request_id=request_id)
        if approval_request is None:
            raise Http404
        self.check_object_permissions(request, approval_request)
        return Response(ApprovalRequestOutputSerializer(approval_request).data)


class ApprovalStepDecideApi(GovernanceObjectApi):
    """Decide one step: approve, reject or request changes (the last two need a reason).
    403 for the requester (separation of duties), for someone who already decided another
    step of the request, and for anyone who does not hold the step's role with the permission
    to decide it; 409 for a step already decided, a closed request, a step whose predecessor
    is still open, or expired approvals; 404 when the caller may not see the request. Audited;
    the last approval releases the subject (released-handlers run)."""

    read_permission = staticmethod(_visible)
    parser_classes = [JSONParser, FormParser]

    @extend_schema_serializer(component_name="ApprovalDecideInput")
    class InputSerializer(serializers.Serializer):
        verdict = serializers.ChoiceField(choices=ApprovalVerdict.choices)
        reason = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="governance_approvals_decide",
        request=InputSerializer,
        responses={
            200: ApprovalRequestOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, 500),
        },
        summary="Decide an approval step",
        tags=["approvals"],
    )
    def post(self, request: Request, step_id: int) -> Response:
        step = ApprovalStep.objects.select_related("request").filter(pk=step_id).first()
        if step is None:
            raise Http404
        self.check_object_permissions(request, step.request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        approval_decide(
            step=step,
            verdict=serializer.validated_data["verdict"],
            reason=serializer.validated_data["reason"],
            acting_user=request_user(request),
        )
        return Response(
            ApprovalRequestOutputSerializer(approval_request_get(request_id=step.request_id)).data
        )
