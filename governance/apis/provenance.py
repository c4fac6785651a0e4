"""The public C2PA verifier: any authenticated user may check a file's Content Credentials."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ApplicationError
from governance.apis.common import GovernanceApi, error_responses
from governance.integrations.c2pa_signing import verify_file
from governance.models.provenance import ProvenanceStatus
from governance.signing import trust_anchors_pem


class ProvenanceVerifyApi(GovernanceApi):
    """Report whether an uploaded file carries valid Content Credentials.

    Verdicts: Trusted (signed by a certificate chaining to this platform's trust anchors),
    Valid but untrusted, Invalid (tampered, truncated or corrupt), or No manifest. A damaged
    file is a verdict, never a server error.
    """

    permission_classes = [IsAuthenticated]
    parser_classes = [MultiPartParser]

    @extend_schema_serializer(component_name="ProvenanceVerifyInput")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()

    @extend_schema_serializer(component_name="ProvenanceVerification")
    class OutputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=ProvenanceStatus.choices)
        verdict = serializers.CharField()
        signer = serializers.CharField(allow_null=True)
        issuer = serializers.CharField(allow_null=True)
        organisation_assertion = serializers.JSONField(allow_null=True)
        errors = inline_serializer(
            "ProvenanceIssue",
            fields={"code": serializers.CharField(), "explanation": serializers.CharField()},
            many=True,
        )

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses={200: OutputSerializer, **error_responses(400, 401, 413)},
        summary="Verify a file's C2PA Content Credentials",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        if upload.size > settings.PROVENANCE_VERIFY_MAX_BYTES:
            raise ApplicationError(
                f"The file is larger than {settings.PROVENANCE_VERIFY_MAX_BYTES >> 20} MB.",
                code="too_large",
                status_code=413,
            )
        workdir = Path(tempfile.mkdtemp(prefix="verify-"))
        try:
            # The uploaded name is not trusted: c2pa sniffs the format from the content.
            path = workdir / "upload.bin"
            with path.open("wb") as out:
                for chunk in upload.chunks():
                    out.write(chunk)
            result = verify_file(path, trust_anchors_pem=trust_anchors_pem())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        status_value = ProvenanceStatus.of(result.status)
        return Response(
            self.OutputSerializer(
                {
                    "status": status_value.value,
                    "verdict": status_value.label,
                    "signer": result.signer_common_name,
                    "issuer": result.signer_issuer,
                    "organisation_assertion": result.org_assertion,
                    "errors": [
                        {"code": i.code, "explanation": i.explanation}
                        for i in result.validation_errors
                    ],
                }
            ).data
        )
