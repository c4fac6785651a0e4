from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import GovernanceApi, error_responses
from governance.models import Channel, Purpose, Territory


@extend_schema_serializer(component_name="VocabularyPurpose")
class _PurposeSerializer(serializers.Serializer):
    code = serializers.CharField()
    # Declared fields leave the class (serializer metaclass): no clash with Field.label.
    label = serializers.CharField()  # type: ignore[assignment]
    description = serializers.CharField()
    is_commercial = serializers.BooleanField()
    risk_level = serializers.CharField()


@extend_schema_serializer(component_name="VocabularyEntry")
class _EntrySerializer(serializers.Serializer):
    code = serializers.CharField()
    # Declared fields leave the class (serializer metaclass): no clash with Field.label.
    label = serializers.CharField()  # type: ignore[assignment]


class VocabularyListApi(GovernanceApi):
    """The active purposes, channels and territories a consent scope is written in."""

    @extend_schema_serializer(component_name="Vocabulary")
    class OutputSerializer(serializers.Serializer):
        purposes = _PurposeSerializer(many=True)
        channels = _EntrySerializer(many=True)
        territories = _EntrySerializer(many=True)

    @extend_schema(
        operation_id="governance_vocabulary",
        responses={200: OutputSerializer, **error_responses(401)},
        summary="Purposes, channels and territories in use",
        tags=["consents"],
    )
    def get(self, request: Request) -> Response:
        data = {
            "purposes": Purpose.objects.filter(is_active=True),
            "channels": Channel.objects.filter(is_active=True),
            "territories": Territory.objects.filter(is_active=True),
        }
        return Response(self.OutputSerializer(data).data)
