from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import (
    FileContentNegotiation,
    GovernanceApi,
    error_responses,
    paginated_response,
    paginated_schema,
    request_user,
)
from governance.audit_codes import AuditAction
from governance.selectors.audit import (
    audit_chain_verify,
    audit_event_list,
    audit_export_csv,
    audit_export_jsonl,
)
from governance.services.audit import audit_export_record

AUDIT_READ = {"GET": ["governance.view_auditevent"]}
AUDIT_EXPORT = {"GET": ["governance.view_auditevent", "governance.export_auditevent"]}


class _AuditFilterSerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False, help_text="From this time (inclusive).")
    until = serializers.DateTimeField(required=False, help_text="Until this time (exclusive).")
    actor = serializers.IntegerField(required=False, source="actor_id", help_text="User id.")
    target_type = serializers.CharField(required=False, help_text="e.g. governance.consentrecord")
    target_id = serializers.CharField(required=False)
    action = serializers.CharField(
        required=False, help_text="Action name (consent.revoke) or numeric code (1203)."
    )

    def validate_action(self, value: str) -> AuditAction:
        try:
            return AuditAction.from_lookup(value)
        except ValueError:
            raise serializers.ValidationError(f"Unknown audit action {value!r}.") from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and until <= since:
            raise serializers.ValidationError({"until": "The range ends before it starts."})
        return attrs


@extend_schema_serializer(component_name="AuditEvent")
class AuditEventOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sequence = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    actor = serializers.IntegerField(source="actor_id", allow_null=True)
    actor_username = serializers.CharField(source="actor.username", allow_null=True, default=None)
    action = serializers.IntegerField()
    action_name = serializers.CharField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    payload = serializers.JSONField()
    request_id = serializers.CharField()
    client_address = serializers.CharField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class AuditEventListApi(GovernanceApi):
    """Audit events in chain order, filtered by time range, actor, target and action.
    Compliance officers only."""

    global_permissions = AUDIT_READ

    class FilterSerializer(_AuditFilterSerializer):
        pass

    @extend_schema(
        operation_id="governance_audit_events",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("AuditEventPage", AuditEventOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List audit events",
        tags=["audit"],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=audit_event_list(**filters.validated_data),
            serializer_class=AuditEventOutputSerializer,
            request=request,
            view=self,
        )


class AuditEventExportApi(GovernanceApi):
    """Stream the audit events matching the filters as JSON Lines (default; each line carries
    the event's canonical body, so its hash can be re-computed offline) or CSV. Compliance
    officers only; the export itself is audited."""

    global_permissions = AUDIT_EXPORT
    content_negotiation_class = FileContentNegotiation

    class FilterSerializer(_AuditFilterSerializer):
        file_format = serializers.ChoiceField(choices=["jsonl", "csv"], default="jsonl")

    @extend_schema(
        operation_id="governance_audit_export",
        parameters=[FilterSerializer],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="One JSON object per line."
            ),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV with header."),
            **error_responses(400, 401, 403),
        },
        summary="Export the audit trail",
        tags=["audit"],
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = dict(filters.validated_data)
        file_format = params.pop("file_format")
        audit_export_record(
            file_format=file_format,
            filters={key: request.query_params[key] for key in request.query_params},
            acting_user=request_user(request),
            request=request,
        )
        queryset = audit_event_list(**params)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        if file_format == "csv":
            response = StreamingHttpResponse(
                audit_export_csv(queryset), content_type="text/csv; charset=utf-8"
            )
        else:
            response = StreamingHttpResponse(
                audit_export_jsonl(queryset), content_type="application/x-ndjson; charset=utf-8"
            )
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{file_format}"'
        response["Cache-Control"] = "no-store"
        return response


class AuditChainVerifyApi(GovernanceApi):
    """Walk the whole hash chain and report the first broken link (event id and sequence).
    Compliance officers only."""

    global_permissions = AUDIT_EXPORT

    @extend_schema_serializer(component_name="AuditChainReport")
    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        events_checked = serializers.IntegerField()
        head_sequence = serializers.IntegerField(allow_null=True)
        head_hash = serializers.CharField(allow_null=True)
        first_break = serializers.DictField(
            allow_null=True, help_text="{event_id, sequence, problem} of the first broken link."
        )

    @extend_schema(
        operation_id="governance_audit_verify",
        responses={200: OutputSerializer, **error_responses(401, 403)},
        summary="Verify the audit chain",
        tags=["audit"],
    )
    def get(self, request: Request) -> Response:
        report = audit_chain_verify()
        first_break = report.first_break
        return Response(
            self.OutputSerializer(
                {
                    "ok": report.ok,
                    "events_checked": report.events_checked,
                    "head_sequence": report.head_sequence,
                    "head_hash": report.head_hash,
                    "first_break": None
                    if first_break is None
                    else {
                        "event_id": first_break.event_id,
                        "sequence": first_break.sequence,
                        "problem": first_break.problem,
                    },
                }
            ).data
        )
