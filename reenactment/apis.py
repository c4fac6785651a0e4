"""Render-job API: submit, follow, cancel, withdraw, download; webhooks; the worker pool."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import (
    GovernanceApi,
    error_responses,
    paginated_response,
    paginated_schema,
    request_user,
)
from governance.models import ModelVersion, Person, Purpose
from governance.permissions import HasGlobalPermission
from reenactment.engine.configs import COLOR_MATCH_MODES, INITIAL_LATENTS_MODES
from reenactment.models import RenderJob
from reenactment.selectors import (
    render_job_get_visible,
    render_job_visible_list,
    webhook_delivery_list,
    webhook_endpoint_list,
)
from reenactment.services import downloads, jobs, webhooks
from reenactment.services.identity import render_job_identity_checks
from reenactment.services.inputs import render_job_inputs_check
from reenactment.services.workers import render_job_waiting_for_capacity, worker_live_list

# What a requester may set; everything else follows the model's defaults (the release's).
PARAMETER_FIELDS = {
    "num_inference_steps": serializers.IntegerField(min_value=1, max_value=200, required=False),
    "guidance_scale": serializers.FloatField(min_value=0.0, max_value=20.0, required=False),
    "seed": serializers.IntegerField(min_value=0, max_value=2**63 - 1, required=False),
    "resolution": serializers.IntegerField(min_value=32, max_value=1024, required=False),
    "paste_back": serializers.BooleanField(required=False),
    "strength": serializers.FloatField(min_value=0.05, max_value=1.0, required=False),
    "initial_latents": serializers.ChoiceField(choices=list(INITIAL_LATENTS_MODES), required=False),
    "color_match": serializers.ChoiceField(choices=list(COLOR_MATCH_MODES), required=False),
    "refine_details": serializers.BooleanField(required=False),
}


@extend_schema_serializer(component_name="RenderJob")
class JobOutputSerializer(serializers.Serializer):
    class VerificationSerializer(serializers.Serializer):
        name = serializers.CharField()
        status = serializers.CharField()
        detail = serializers.JSONField()
        finished_at = serializers.DateTimeField(allow_null=True)

    class ProgressSerializer(serializers.Serializer):
        percent = serializers.FloatField(source="progress_percent")
        step = serializers.IntegerField(source="progress_step")
        total_steps = serializers.IntegerField(source="progress_total_steps")
        frames = serializers.IntegerField(source="progress_frames")
        total_frames = serializers.IntegerField(source="progress_total_frames")
        updated_at = serializers.DateTimeField(source="progress_updated_at", allow_null=True)

    id = serializers.IntegerField()
    title = serializers.CharField()
    status = serializers.CharField()
    status_reason = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.username")
    portrait_subject_id = serializers.IntegerField()
    performer_id = serializers.IntegerField()
    purpose = serializers.CharField(source="purpose_id")
    channels = serializers.ListField(child=serializers.CharField())
    territory = serializers.CharField()
    model_version_id = serializers.IntegerField()
    approval_request_id = serializers.IntegerField(allow_null=True)
    parameters = serializers.JSONField()
    portrait_sha256 = serializers.CharField()
    driving_sha256 = serializers.CharField()
    output_sha256 = serializers.CharField()
    progress = ProgressSerializer(source="*")
    waiting_for_capacity = serializers.SerializerMethodField()
    verifications = VerificationSerializer(many=True)
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    published_at = serializers.DateTimeField(allow_null=True)

    def get_waiting_for_capacity(self, job: RenderJob) -> bool:
        return render_job_waiting_for_capacity(job)


def _job_data(job: RenderJob) -> dict[str, Any]:
    return JobOutputSerializer(job).data


class RenderJobCreateApi(GovernanceApi):
    """Submit a render job: uploads are checked by content, consents, identities and the model's
    licence are checked, and an approval request is opened."""

    global_permissions = {"POST": ["reenactment.add_renderjob"]}
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="RenderJobCreateInput")
    class InputSerializer(serializers.Serializer):
        portrait = serializers.FileField()
        driving = serializers.FileField()
        portrait_subject_id = serializers.IntegerField()
        performer_id = serializers.IntegerField()
        purpose = serializers.CharField()
        channels = serializers.ListField(child=serializers.CharField(), min_length=1)
        territory = serializers.CharField(max_length=8)
        model_version_id = serializers.IntegerField()
        title = serializers.CharField(max_length=200, required=False, default="")
        # JSON, also inside a multipart form (a JSON string), e.g. '{"seed": 7}'.
        parameters = serializers.JSONField(required=False, default=dict)

        def validate_parameters(self, value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise serializers.ValidationError("Give the parameters as a JSON object.")
            unknown = sorted(set(value) - set(PARAMETER_FIELDS))
            if unknown:
                raise serializers.ValidationError(f"Unknown parameters: {', '.join(unknown)}.")
            checked = {}
            for name, raw in value.items():
                field = PARAMETER_FIELDS[name]
                checked[name] = field.run_validation(raw)
            return checked

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses={201: JobOutputSerializer, **error_responses(400, 401, 403, 409, 422)},
        summary="Submit a render job",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = request_user(request)
        people = Person.objects.in_bulk([data["portrait_subject_id"], data["performer_id"]])
        purpose = Purpose.objects.filter(pk=data["purpose"], is_active=True).first()
        model_version = ModelVersion.objects.filter(pk=data["model_version_id"]).first()
        missing = {
            "portrait_subject_id": data["portrait_subject_id"] not in people,
            "performer_id": data["performer_id"] not in people,
            "purpose": purpose is None,
            "model_version_id": model_version is None,
        }
        if any(missing.values()):
            raise serializers.ValidationError(
                {name: "Unknown or inactive." for name, bad in missing.items() if bad}
            )
        subject, performer = people[data["portrait_subject_id"]], people[data["performer_id"]]
        with render_job_inputs_check(portrait=data["portrait"], driving=data["driving"]) as checked:
            identity = render_job_identity_checks(
                checked=checked,
                subject=subject,
                performer=performer,
                purpose=purpose,
                territory=data["territory"].upper(),
                acting_user=user,
            )
            job = jobs.render_job_submit(
                requested_by=user,
                portrait=checked.portrait,
                driving=checked.driving,
                portrait_subject=subject,
                performer=performer,
                purpose=purpose,
                channels=data["channels"],
                territory=data["territory"].upper(),
                model_version=model_version,
                parameters=data["parameters"],
                title=data["title"],
                face_match_ids=identity,
                acting_user=user,
            )
        return Response(_job_data(job), status=status.HTTP_201_CREATED)


class RenderJobListApi(GovernanceApi):
    """Jobs the caller may see, newest first (requesters: their own)."""

    @extend_schema(
        responses={
            200: paginated_schema("RenderJobList", JobOutputSerializer),
            **error_responses(401),
        },
        summary="List render jobs",
        operation_id="reenactment_jobs_list",
    )
    def get(self, request: Request) -> Response:
        queryset = render_job_visible_list(user=request_user(request))
        status_filter = request.query_params.get("status")
        if status_filter:
            queryset = queryset.filter(status=status_filter)
        return paginated_response(
            queryset=queryset, serializer_class=JobOutputSerializer, request=request, view=self
        )


def _visible_job(request: Request, job_id: int) -> RenderJob:
    job = render_job_get_visible(user=request_user(request), job_id=job_id)
    if job is None:
        raise Http404
    return job


class RenderJobDetailApi(GovernanceApi):
    @extend_schema(
        responses={200: JobOutputSerializer, **error_responses(401, 404)},
        summary="A render job with progress and verification",
        operation_id="reenactment_jobs_detail",
    )
    def get(self, request: Request, job_id: int) -> Response:
        return Response(_job_data(_visible_job(request, job_id)))


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class RenderJobCancelApi(GovernanceApi):
    """Cancel a job that has not finished (the requester, or a compliance officer)."""

    parser_classes = [JSONParser, FormParser]

    @extend_schema(
        request=ReasonSerializer,
        responses={200: JobOutputSerializer, **error_responses(400, 401, 403, 404, 409)},
        summary="Cancel a render job",
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = _visible_job(request, job_id)
        user = request_user(request)
        if job.requested_by_id != user.pk and not user.has_perm("reenactment.withdraw_renderjob"):
            return Response(
                {
                    "error": {
                        "code": "permission_denied",
                        "message": "Only the requester or compliance may cancel a job.",
                    }
                },
                status=status.HTTP_403_FORBIDDEN,
            )
        serializer = ReasonSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = jobs.render_job_cancel(
            job=job, reason=serializer.validated_data["reason"], acting_user=user
        )
        return Response(_job_data(job))


class RenderJobWithdrawApi(GovernanceApi):
    """Withdraw a published output (compliance officers): downloads are refused afterwards."""

    parser_classes = [JSONParser, FormParser]

    @extend_schema(
        request=ReasonSerializer,
        responses={200: JobOutputSerializer, **error_responses(400, 401, 403, 404, 409)},
        summary="Withdraw a published output",
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = _visible_job(request, job_id)
        user = request_user(request)
        if not user.has_perm("reenactment.withdraw_renderjob"):
            return Response(
                {
                    "error": {
                        "code": "permission_denied",
                        "message": "Only compliance officers withdraw outputs.",
                    }
                },
                status=status.HTTP_403_FORBIDDEN,
            )
        serializer = ReasonSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = jobs.render_job_withdraw(
            job=job, reason=serializer.validated_data["reason"], acting_user=user
        )
        return Response(_job_data(job))


class RenderJobDownloadLinkApi(GovernanceApi):
    """A short-lived download link for a published output (audited)."""

    @extend_schema_serializer(component_name="RenderJobDownloadLink")
    class OutputSerializer(serializers.Serializer):
        url = serializers.CharField()
        expires_in = serializers.IntegerField()

    @extend_schema(
        request=None,
        responses={200: OutputSerializer, **error_responses(401, 404, 410)},
        summary="Create a download link",
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = _visible_job(request, job_id)
        token, seconds = downloads.render_job_download_link_create(
            job=job, acting_user=request_user(request)
        )
        url = request.build_absolute_uri(f"/api/reenactment/downloads/{token}")
        return Response(self.OutputSerializer({"url": url, "expires_in": seconds}).data)


class RenderJobDownloadApi(GovernanceApi):
    """Redeem a download link: the signed MP4 (same user, link not expired, still published)."""

    @extend_schema(
        responses={200: OpenApiResponse(description="video/mp4"), **error_responses(401, 403, 410)},
        summary="Download a published output",
    )
    def get(self, request: Request, token: str) -> FileResponse:
        job = downloads.render_job_download_redeem(token=token, acting_user=request_user(request))
        return FileResponse(
            job.output.open("rb"),
            as_attachment=True,
            filename=f"render-job-{job.pk}.mp4",
            content_type="video/mp4",
        )


class WorkerListApi(GovernanceApi):
    """Live workers of the pool (operators, compliance officers)."""

    global_permissions = {"GET": ["reenactment.view_workerheartbeat"]}
    permission_classes = [HasGlobalPermission]

    @extend_schema_serializer(component_name="Worker")
    class OutputSerializer(serializers.Serializer):
        nodename = serializers.CharField()
        hostname = serializers.CharField()
        queues = serializers.ListField(child=serializers.CharField())
        device = serializers.JSONField()
        loaded_models = serializers.ListField(child=serializers.IntegerField())
        current_job_id = serializers.IntegerField(allow_null=True)
        last_seen = serializers.DateTimeField()

    @extend_schema(
        responses={200: OutputSerializer(many=True), **error_responses(401, 403)},
        summary="Live workers",
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(worker_live_list(), many=True).data)


class WebhookEndpointSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.URLField()
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class WebhookEndpointCreateApi(GovernanceApi):
    """Register a URL for your jobs' state changes; the signing secret is shown once."""

    global_permissions = {"POST": ["reenactment.add_webhookendpoint"]}
    parser_classes = [JSONParser, FormParser]

    @extend_schema_serializer(component_name="WebhookEndpointCreateInput")
    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=500)

    @extend_schema_serializer(component_name="WebhookEndpointCreated")
    class OutputSerializer(WebhookEndpointSerializer):
        secret = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(400, 401, 403)},
        summary="Register a webhook",
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = request_user(request)
        endpoint = webhooks.webhook_endpoint_create(
            owner=user, url=serializer.validated_data["url"], acting_user=user
        )
        return Response(self.OutputSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookEndpointListApi(GovernanceApi):
    @extend_schema(responses={200: WebhookEndpointSerializer(many=True)}, summary="Your webhooks")
    def get(self, request: Request) -> Response:
        endpoints = webhook_endpoint_list(user=request_user(request))
        return Response(WebhookEndpointSerializer(endpoints, many=True).data)


class WebhookDeliveryListApi(GovernanceApi):
    """The delivery log of one of your webhooks."""

    @extend_schema_serializer(component_name="WebhookDelivery")
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        job_id = serializers.IntegerField()
        event = serializers.CharField()
        status = serializers.CharField()
        attempts = serializers.IntegerField()
        last_status_code = serializers.IntegerField(allow_null=True)
        last_error = serializers.CharField()
        log = serializers.JSONField()
        created_at = serializers.DateTimeField()
        delivered_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(
        responses={200: OutputSerializer(many=True), **error_responses(401, 404)},
        summary="Webhook delivery log",
    )
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = webhook_endpoint_list(user=request_user(request)).filter(pk=endpoint_id).first()
        if endpoint is None:
            raise Http404
        return Response(
            self.OutputSerializer(webhook_delivery_list(endpoint=endpoint), many=True).data
        )
