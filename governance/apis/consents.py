from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import (
    FILE_RESPONSE,
    CodeListField,
    EvidenceOutputSerializer,
    FileContentNegotiation,
    GovernanceApi,
    GovernanceObjectApi,
    error_responses,
    evidence_file_response,
    paginated_response,
    paginated_schema,
    request_user,
)
from governance.models import ConsentRecord, ConsentRole, ConsentStatus, EvidenceKind
from governance.selectors.consents import consent_get, consent_is_valid_at, consent_list
from governance.selectors.persons import person_get
from governance.services.consents import (
    consent_evidence_download_record,
    consent_record_create,
    consent_revoke,
    consent_supersede,
)
from governance.services.evidence import evidence_verify

# URL segment -> evidence kind.
EVIDENCE_KINDS = {
    "signed-form": EvidenceKind.SIGNED_FORM,
    "statement-video": EvidenceKind.STATEMENT_VIDEO,
}


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class CodesField(serializers.Field):
    """The codes of a many-to-many vocabulary relation (purposes, channels, territories)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: Any) -> list[str]:
        return [str(row.pk) for row in value.all()]


@extend_schema_serializer(component_name="Consent")
class ConsentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    person = serializers.IntegerField(source="person_id")
    role = serializers.ChoiceField(choices=ConsentRole.choices)
    purposes = CodesField()
    channels = CodesField()
    territories = CodesField()
    commercial_use = serializers.BooleanField()
    valid_from = serializers.DateTimeField()
    valid_until = serializers.DateTimeField(allow_null=True)
    signed_form = EvidenceOutputSerializer(allow_null=True)
    statement_video = EvidenceOutputSerializer(allow_null=True)
    notes = serializers.CharField()
    recorded_by = serializers.IntegerField(source="recorded_by_id")
    recorded_at = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=ConsentStatus.choices)
    is_valid_now = serializers.SerializerMethodField()
    supersedes = serializers.IntegerField(source="supersedes_id", allow_null=True)
    superseded_by = serializers.SerializerMethodField()
    ended_at = serializers.DateTimeField(allow_null=True)
    ended_by = serializers.IntegerField(source="ended_by_id", allow_null=True)
    end_reason = serializers.CharField()

    def get_is_valid_now(self, consent: ConsentRecord) -> bool:
        return consent_is_valid_at(consent)

    def get_superseded_by(self, consent: ConsentRecord) -> int | None:
        replacement = getattr(consent, "superseded_by", None)
        return replacement.pk if replacement is not None else None


class _ScopeInputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ConsentRole.choices)
    purposes = CodeListField(help_text="Purpose codes (repeat the field or separate by commas).")
    channels = CodeListField(help_text="Distribution channel codes.")
    territories = CodeListField(help_text="ISO 3166-1 alpha-2 codes, or WW for worldwide.")
    commercial_use = serializers.BooleanField(default=False)
    valid_from = serializers.DateTimeField()
    valid_until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    signed_form = serializers.FileField(required=False, allow_null=True, help_text="PDF.")
    statement_video = serializers.FileField(
        required=False, allow_null=True, help_text="MP4, MOV or WebM."
    )
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class ConsentListApi(GovernanceApi):
    """Consents, newest first, with filters. Needs `governance.view_consentrecord`."""

    global_permissions = {"GET": ["governance.view_consentrecord"]}

    class FilterSerializer(serializers.Serializer):
        person = serializers.IntegerField(required=False, source="person_id")
        role = serializers.ChoiceField(choices=ConsentRole.choices, required=False)
        purpose = serializers.CharField(required=False)
        channel = serializers.CharField(required=False)
        territory = serializers.CharField(required=False)
        status = serializers.ChoiceField(choices=ConsentStatus.choices, required=False)
        valid_at = serializers.DateTimeField(
            required=False, help_text="Only consents standing at this time."
        )

    @extend_schema(
        operation_id="governance_consents_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("ConsentPage", ConsentOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List consents",
        tags=["consents"],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=consent_list(**filters.validated_data),
            serializer_class=ConsentOutputSerializer,
            request=request,
            view=self,
        )


class ConsentCreateApi(GovernanceApi):
    """Record a consent from its evidence: a signed form (PDF) and/or a recorded consent
    statement (MP4, MOV, WebM), checked by content and size, SHA-256 recorded. Compliance
    officers only. Missing or contradictory scope (a commercial purpose without commercial
    use, WW next to countries), a validity that ends before it starts, or refused evidence
    answer 400 and nothing is written. Audited."""

    global_permissions = {"POST": ["governance.add_consentrecord"]}
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="ConsentCreateInput")
    class InputSerializer(_ScopeInputSerializer):
        person = serializers.IntegerField()

    @extend_schema(
        operation_id="governance_consents_create",
        request={"multipart/form-data": InputSerializer},
        responses={201: ConsentOutputSerializer, **error_responses(400, 401, 403)},
        summary="Record a consent",
        tags=["consents"],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        person = person_get(person_id=data.pop("person"))
        if person is None:
            raise ValidationError({"person": "No such person."})
        consent = consent_record_create(person=person, **data, acting_user=request_user(request))
        return Response(
            ConsentOutputSerializer(consent_get(consent_id=consent.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class ConsentDetailApi(GovernanceObjectApi):
    """One consent. 404 for callers who may not read it."""

    read_permission = "governance.view_consentrecord"

    @extend_schema(
        operation_id="governance_consents_detail",
        responses={200: ConsentOutputSerializer, **error_responses(401, 404)},
        summary="A consent",
        tags=["consents"],
    )
    def get(self, request: Request, consent_id: int) -> Response:
        consent = _get_consent(self, request, consent_id)
        return Response(ConsentOutputSerializer(consent).data)


class ConsentSupersedeApi(GovernanceObjectApi):
    """Replace an active consent with a new record (new evidence, new scope) for the same
    person. The old one ends as superseded; revocation handlers are told. Audited."""

    read_permission = "governance.view_consentrecord"
    object_permissions = {"POST": ["governance.supersede_consentrecord"]}
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="ConsentSupersedeInput")
    class InputSerializer(_ScopeInputSerializer):
        reason = serializers.CharField()

    @extend_schema(
        operation_id="governance_consents_supersede",
        request={"multipart/form-data": InputSerializer},
        responses={201: ConsentOutputSerializer, **error_responses(400, 401, 403, 404, 409)},
        summary="Supersede a consent",
        tags=["consents"],
    )
    def post(self, request: Request, consent_id: int) -> Response:
        consent = _get_consent(self, request, consent_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        new = consent_supersede(
            consent=consent, **serializer.validated_data, acting_user=request_user(request)
        )
        return Response(
            ConsentOutputSerializer(consent_get(consent_id=new.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class ConsentRevokeApi(GovernanceObjectApi):
    """Revoke an active consent. The registered revocation handlers run in the same
    transaction (pending requests blocked, running jobs cancelled, outputs withdrawn); if one
    fails nothing is revoked (500). Audited."""

    read_permission = "governance.view_consentrecord"
    object_permissions = {"POST": ["governance.revoke_consentrecord"]}
    parser_classes = [JSONParser, FormParser]

    @extend_schema_serializer(component_name="ConsentRevokeInput")
    class InputSerializer(serializers.Serializer):
        reason = serializers.CharField()

    @extend_schema(
        operation_id="governance_consents_revoke",
        request=InputSerializer,
        responses={200: ConsentOutputSerializer, **error_responses(400, 401, 403, 404, 409, 500)},
        summary="Revoke a consent",
        tags=["consents"],
    )
    def post(self, request: Request, consent_id: int) -> Response:
        consent = _get_consent(self, request, consent_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        consent_revoke(
            consent=consent, **serializer.validated_data, acting_user=request_user(request)
        )
        return Response(ConsentOutputSerializer(consent_get(consent_id=consent.pk)).data)


class ConsentEvidenceDownloadApi(GovernanceObjectApi):
    """Download a consent's signed form or recorded statement (reviewers and compliance
    officers). Audited; the file's hash is checked before it is sent."""

    read_permission = "governance.view_consentrecord"
    object_permissions = {"GET": ["governance.download_consent_evidence"]}
    content_negotiation_class = FileContentNegotiation

    @extend_schema(
        operation_id="governance_consents_evidence",
        parameters=[
            OpenApiParameter(
                "kind", str, OpenApiParameter.PATH, enum=list(EVIDENCE_KINDS), required=True
            )
        ],
        responses={200: FILE_RESPONSE, **error_responses(401, 403, 404, 500)},
        summary="Download a consent's evidence file",
        tags=["consents"],
    )
    def get(self, request: Request, consent_id: int, kind: str) -> Response:
        consent = _get_consent(self, request, consent_id)
        evidence_kind = EVIDENCE_KINDS.get(kind)
        evidence = (
            {
                EvidenceKind.SIGNED_FORM: consent.signed_form,
                EvidenceKind.STATEMENT_VIDEO: consent.statement_video,
            }.get(evidence_kind)
            if evidence_kind
            else None
        )
        if evidence is None:
            raise Http404
        evidence_verify(evidence=evidence)
        consent_evidence_download_record(
            consent=consent, kind=evidence.kind, acting_user=request_user(request)
        )
        return evidence_file_response(evidence)  # type: ignore[return-value]  # a file


def _get_consent(view: GovernanceObjectApi, request: Request, consent_id: int) -> ConsentRecord:
    consent = consent_get(consent_id=consent_id)
    if consent is None:
        raise Http404
    view.check_object_permissions(request, consent)
    return consent
