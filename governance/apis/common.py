"""What every governance API shares: authentication order, the documented error shape,
pagination and a content negotiation for file responses."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import NotAuthenticated
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.models import EvidenceFile, User
from governance.permissions import HasGlobalPermission, ObjectPermission
from governance.services.evidence import ALLOWED_TYPES


class GovernanceApi(APIView):
    """Base of the governance APIs.

    Basic authentication comes first so that an anonymous caller gets **401** with a
    ``WWW-Authenticate`` challenge (DRF answers 403 when the first authenticator cannot issue
    one); session authentication (the admin and Swagger UI log-in) works as before.
    """

    authentication_classes = [BasicAuthentication, SessionAuthentication]
    permission_classes = [HasGlobalPermission]


def request_user(request: Request) -> User:
    """The authenticated caller (the permission classes have already refused anyone else)."""
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticated()
    return user


class GovernanceObjectApi(GovernanceApi):
    """An API about one object: 404 unless the caller may read it (see permissions.py)."""

    permission_classes = [ObjectPermission]


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. consent_invalid.")
    message = serializers.CharField(help_text="What went wrong, for people.")
    # The error shape's key is "fields"; the serializer metaclass moves declared fields out of
    # the class, so this does not shadow Serializer.fields.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Per-field messages for invalid input.",
    )


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the whole API (config/api.py)."""

    error = ErrorBodySerializer()


_ERROR_DESCRIPTIONS = {
    400: "Invalid input (code `invalid`, with per-field messages).",
    401: "Not authenticated (code `not_authenticated`).",
    403: "Authenticated but not allowed (code `permission_denied` or a business rule's code).",
    404: "No such object, or one the caller may not read (code `not_found`).",
    409: "The object's state does not allow the action (e.g. already decided or revoked).",
    410: "Gone: the output was withdrawn, or the link expired (code says which).",
    413: "The upload is larger than the configured limit (code `too_large`).",
    422: "Understood but refused by a rule about the content (e.g. `face_mismatch`).",
    500: "A file failed its integrity check or a registered handler failed; nothing changed.",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(ErrorSerializer, description=_ERROR_DESCRIPTIONS[code])
        for code in statuses
    }


class Pagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


def paginated_schema(name: str, serializer: type[serializers.Serializer]) -> serializers.Serializer:
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer(many=True),
        },
    )


def paginated_response(
    *,
    queryset: QuerySet[Any] | Sequence[Any],
    serializer_class: type[serializers.Serializer],
    request: Request,
    view: APIView,
) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    assert page is not None
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


class FileContentNegotiation(BaseContentNegotiation):
    """File and export responses do not go through renderers, so the client's Accept header
    (``application/pdf``, ``text/csv``) must not make DRF answer 406; errors are JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class CodeListField(serializers.ListField):
    """A list of vocabulary codes, given as repeated fields or comma-separated."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.CharField(max_length=64), **kwargs)

    def to_internal_value(self, data: Any) -> list[str]:
        if isinstance(data, str):
            data = [data]
        items: list[str] = []
        for item in data if isinstance(data, list | tuple) else [data]:
            if isinstance(item, str):
                items.extend(part.strip() for part in item.split(",") if part.strip())
            else:
                items.append(item)
        return super().to_internal_value(items)


@extend_schema_serializer(component_name="Evidence")
class EvidenceOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    kind = serializers.CharField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    content_type = serializers.CharField()
    uploaded_at = serializers.DateTimeField()


FILE_RESPONSE = OpenApiResponse(
    OpenApiTypes.BINARY,
    description=(
        "The file, as an attachment. `X-Content-SHA256` carries the SHA-256 recorded when it "
        "was uploaded (checked again before sending); the download is audited."
    ),
)


def evidence_file_response(evidence: EvidenceFile) -> FileResponse:
    """Stream an evidence file (whose hash the caller has just checked with
    ``evidence_verify``); never cached."""
    extension = ALLOWED_TYPES[evidence.kind][evidence.content_type]
    name = evidence.file.name
    assert name is not None
    response = FileResponse(
        default_storage.open(name, "rb"),
        as_attachment=True,
        filename=f"{evidence.kind}-{evidence.public_id}.{extension}",
        content_type=evidence.content_type,
    )
    response["X-Content-SHA256"] = evidence.sha256
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
