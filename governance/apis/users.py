from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import GovernanceApi, error_responses, request_user


class UserMeApi(GovernanceApi):
    """Who the caller is and which platform roles they hold."""

    @extend_schema_serializer(component_name="UserMe")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        roles = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        operation_id="governance_me",
        responses={200: OutputSerializer, **error_responses(401)},
        summary="The calling user and their roles",
        tags=["users"],
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        data = {"id": user.pk, "username": user.get_username(), "roles": user.role_names}
        return Response(self.OutputSerializer(data).data)
