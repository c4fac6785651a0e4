from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import (
    FILE_RESPONSE,
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
from governance.models import Person
from governance.selectors.persons import person_get, person_list
from governance.services.evidence import evidence_verify
from governance.services.persons import person_create, person_reference_photo_download_record


@extend_schema_serializer(component_name="Person")
class PersonOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    full_name = serializers.CharField()
    external_reference = serializers.CharField()
    reference_photo = EvidenceOutputSerializer()
    identity_verification_note = serializers.CharField()
    identity_verified_by = serializers.IntegerField(source="identity_verified_by_id")
    created_at = serializers.DateTimeField()


class PersonListApi(GovernanceApi):
    """Enrolled persons, by name. Needs `governance.view_person` (requester, reviewer,
    compliance officer)."""

    global_permissions = {"GET": ["governance.view_person"]}

    class FilterSerializer(serializers.Serializer):
        search = serializers.CharField(required=False, help_text="Part of the name.")

    @extend_schema(
        operation_id="governance_persons_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("PersonPage", PersonOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List persons",
        tags=["persons"],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=person_list(**filters.validated_data),
            serializer_class=PersonOutputSerializer,
            request=request,
            view=self,
        )


class PersonCreateApi(GovernanceApi):
    """Enrol a person with their identity reference photo (JPEG, PNG or WebP, checked by
    content; SHA-256 recorded). Compliance officers only. Audited."""

    global_permissions = {"POST": ["governance.add_person"]}
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="PersonCreateInput")
    class InputSerializer(serializers.Serializer):
        full_name = serializers.CharField(max_length=200)
        external_reference = serializers.CharField(max_length=100, required=False, default="")
        identity_verification_note = serializers.CharField(
            help_text="How the identity was verified (document, in person or remote)."
        )
        reference_photo = serializers.FileField(help_text="JPEG, PNG or WebP.")

    @extend_schema(
        operation_id="governance_persons_create",
        request={"multipart/form-data": InputSerializer},
        responses={201: PersonOutputSerializer, **error_responses(400, 401, 403)},
        summary="Enrol a person",
        tags=["persons"],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        person = person_create(**serializer.validated_data, acting_user=request_user(request))
        return Response(PersonOutputSerializer(person).data, status=status.HTTP_201_CREATED)


class PersonDetailApi(GovernanceObjectApi):
    """One person. 404 for callers who may not read persons."""

    read_permission = "governance.view_person"

    @extend_schema(
        operation_id="governance_persons_detail",
        responses={200: PersonOutputSerializer, **error_responses(401, 404)},
        summary="A person",
        tags=["persons"],
    )
    def get(self, request: Request, person_id: int) -> Response:
        person = _get_person(self, request, person_id)
        return Response(PersonOutputSerializer(person).data)


class PersonReferencePhotoDownloadApi(GovernanceObjectApi):
    """Download a person's identity reference photo (reviewers and compliance officers).
    Audited; the file's hash is checked before it is sent."""

    read_permission = "governance.view_person"
    object_permissions = {"GET": ["governance.download_person_evidence"]}
    content_negotiation_class = FileContentNegotiation

    @extend_schema(
        operation_id="governance_persons_reference_photo",
        responses={200: FILE_RESPONSE, **error_responses(401, 403, 404, 500)},
        summary="Download a person's reference photo",
        tags=["persons"],
    )
    def get(self, request: Request, person_id: int) -> Response:
        person = _get_person(self, request, person_id)
        evidence_verify(evidence=person.reference_photo)
        photo = person_reference_photo_download_record(
            person=person, acting_user=request_user(request)
        )
        return evidence_file_response(photo)  # type: ignore[return-value]  # a file, not JSON


def _get_person(view: GovernanceObjectApi, request: Request, person_id: int) -> Person:
    person = person_get(person_id=person_id)
    if person is None:
        raise Http404
    view.check_object_permissions(request, person)
    return person
