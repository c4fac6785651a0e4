"""Licensed training data and the model registry: licensors, licences, datasets, clips,
snapshots (freeze, export, status) and model versions (lineage, block, deprecate).

Data stewards write; compliance officers read; everyone else gets 403 on collections and 404
on objects (governance/permissions.py). Model versions are registered with
``manage.py register_model`` (the weights live on the server, not in a request).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Model
from django.http import Http404, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from governance.apis.common import (
    CodeListField,
    FileContentNegotiation,
    GovernanceApi,
    GovernanceObjectApi,
    error_responses,
    paginated_response,
    paginated_schema,
    request_user,
)
from governance.models import (
    WORLDWIDE,
    Clip,
    DatasetSnapshot,
    LicenseStatus,
    LicenseUse,
    ModelVersion,
    ModelVersionStatus,
    SnapshotStatus,
)
from governance.selectors.registry import (
    clip_get,
    clip_list,
    dataset_get,
    dataset_list,
    license_get,
    license_list,
    licensor_get,
    licensor_list,
    model_version_get,
    model_version_lineage,
    model_version_list,
    snapshot_get,
    snapshot_items,
    snapshot_list,
    snapshot_persons,
)
from governance.services.datasets import (
    ClipPersonSpec,
    clip_add,
    dataset_create,
    dataset_snapshot_download_record,
    dataset_snapshot_freeze,
    dataset_snapshot_manifest_lines,
    dataset_snapshot_status_document,
    snapshot_export_id,
)
from governance.services.licences import license_create, license_withdraw, licensor_create
from governance.services.registry import model_version_block_by_hand, model_version_deprecate

TAG = "registry"

# --------------------------------------------------------------------------------------------
# Output serializers (shared by list and detail of one entity)
# --------------------------------------------------------------------------------------------


@extend_schema_serializer(component_name="Licensor")
class LicensorOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    contact = serializers.CharField()
    url = serializers.CharField()
    notes = serializers.CharField()
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="Licence")
class LicenseOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    licensor = serializers.IntegerField(source="licensor_id")
    name = serializers.CharField()
    spdx_id = serializers.CharField()
    allowed_uses = serializers.ListField(child=serializers.CharField())
    territories = serializers.SerializerMethodField()
    terms_text = serializers.CharField()
    terms_sha256 = serializers.CharField()
    attribution_text = serializers.CharField()
    valid_from = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    status = serializers.ChoiceField(choices=LicenseStatus.choices)
    withdrawn_at = serializers.DateTimeField(allow_null=True)
    withdraw_reason = serializers.CharField()

    def get_territories(self, licence: Any) -> list[str]:
        return [str(t.pk) for t in licence.territories.all()]

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["allowed_uses"] = instance.allowed_uses()
        return data


@extend_schema_serializer(component_name="Dataset")
class DatasetOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    clip_count = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_clip_count(self, dataset: Any) -> int:
        return int(dataset.clips.count())


@extend_schema_serializer(component_name="Clip")
class ClipOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    location = serializers.CharField()
    is_external = serializers.SerializerMethodField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField(allow_null=True)
    duration_seconds = serializers.FloatField()
    fps = serializers.FloatField()
    frame_count = serializers.IntegerField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    licence = serializers.IntegerField(source="licence_id")
    persons = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_is_external(self, clip: Clip) -> bool:
        return not clip.file

    def get_persons(self, clip: Clip) -> list[dict[str, int | None]]:
        return [
            {"person": cp.person_id, "consent": cp.consent_id} for cp in clip.clipperson_set.all()
        ]


@extend_schema_serializer(component_name="DatasetSnapshot")
class SnapshotOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    export_id = serializers.SerializerMethodField()
    dataset = serializers.IntegerField(source="dataset_id")
    name = serializers.CharField()
    territory = serializers.CharField(source="territory_id")
    frozen_at = serializers.DateTimeField()
    clip_count = serializers.IntegerField()
    manifest_sha256 = serializers.CharField()
    status = serializers.ChoiceField(choices=SnapshotStatus.choices)
    withdrawn_at = serializers.DateTimeField(allow_null=True)
    withdraw_reason = serializers.CharField()

    def get_export_id(self, snapshot: DatasetSnapshot) -> str:
        return snapshot_export_id(snapshot)


@extend_schema_serializer(component_name="ModelVersion")
class ModelVersionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()
    status = serializers.ChoiceField(choices=ModelVersionStatus.choices)
    status_reason = serializers.CharField()
    licence = serializers.IntegerField(source="licence_id")
    layout = serializers.CharField()
    weights_sha256 = serializers.CharField()
    is_demonstration = serializers.BooleanField()
    # The metaclass moves declared fields off the class, so this does not shadow Field.parent.
    parent = serializers.IntegerField(  # type: ignore[assignment]
        source="parent_id", allow_null=True
    )
    snapshots = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_snapshots(self, model: ModelVersion) -> list[int]:
        return sorted(s.pk for s in model.snapshots.all())


def _object(view: GovernanceObjectApi, request: Request, obj: Model | None) -> Any:
    if obj is None:
        raise Http404
    view.check_object_permissions(request, obj)
    return obj


def _reason_serializer(name: str) -> type[serializers.Serializer]:
    return extend_schema_serializer(component_name=name)(
        type(name, (serializers.Serializer,), {"reason": serializers.CharField()})
    )


# --------------------------------------------------------------------------------------------
# Licensors and licences
# --------------------------------------------------------------------------------------------


class LicensorListApi(GovernanceApi):
    """Licensors (who grants licences)."""

    global_permissions = {"GET": ["governance.view_licensor"]}

    @extend_schema(
        operation_id="governance_licensors_list",
        responses={
            200: paginated_schema("LicensorPage", LicensorOutputSerializer),
            **error_responses(401, 403),
        },
        summary="List licensors",
        tags=[TAG],
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            queryset=licensor_list(),
            serializer_class=LicensorOutputSerializer,
            request=request,
            view=self,
        )


class LicensorCreateApi(GovernanceApi):
    """Record a licensor. Data stewards. Audited."""

    global_permissions = {"POST": ["governance.add_licensor"]}

    @extend_schema_serializer(component_name="LicensorCreateInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        contact = serializers.CharField(required=False, allow_blank=True, default="")
        url = serializers.URLField(required=False, allow_blank=True, default="")
        notes = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="governance_licensors_create",
        request=InputSerializer,
        responses={201: LicensorOutputSerializer, **error_responses(400, 401, 403)},
        summary="Record a licensor",
        tags=[TAG],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        licensor = licensor_create(**serializer.validated_data, acting_user=request_user(request))
        return Response(LicensorOutputSerializer(licensor).data, status=status.HTTP_201_CREATED)


class LicenseListApi(GovernanceApi):
    """Licences, filtered by status, allowed use or licensor."""

    global_permissions = {"GET": ["governance.view_license"]}

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=LicenseStatus.choices, required=False)
        use = serializers.ChoiceField(choices=LicenseUse.choices, required=False)
        licensor = serializers.IntegerField(required=False, source="licensor_id")

    @extend_schema(
        operation_id="governance_licences_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("LicencePage", LicenseOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List licences",
        tags=[TAG],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=license_list(**filters.validated_data),
            serializer_class=LicenseOutputSerializer,
            request=request,
            view=self,
        )


class LicenseCreateApi(GovernanceApi):
    """Record a licence: its uses (training, evaluation, research_output, commercial_output),
    territories (WW for worldwide), validity, terms as text and/or a file (PDF, text, Markdown,
    HTML; SHA-256 recorded) and attribution. Data stewards. Audited."""

    global_permissions = {"POST": ["governance.add_license"]}
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="LicenceCreateInput")
    class InputSerializer(serializers.Serializer):
        licensor = serializers.IntegerField()
        name = serializers.CharField(max_length=200)
        spdx_id = serializers.CharField(required=False, allow_blank=True, default="")
        allowed_uses = CodeListField(help_text=f"Among {', '.join(LicenseUse.values)}.")
        territories = CodeListField(help_text=f"ISO 3166-1 alpha-2 codes or {WORLDWIDE}.")
        valid_from = serializers.DateTimeField(required=False, allow_null=True, default=None)
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        terms_text = serializers.CharField(required=False, allow_blank=True, default="")
        terms_file = serializers.FileField(required=False, allow_null=True, default=None)
        attribution_text = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="governance_licences_create",
        request={
            "application/json": InputSerializer,
            "multipart/form-data": InputSerializer,
        },
        responses={201: LicenseOutputSerializer, **error_responses(400, 401, 403)},
        summary="Record a licence",
        tags=[TAG],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        licensor = licensor_get(licensor_id=data.pop("licensor"))
        if licensor is None:
            raise ValidationError({"licensor": "No such licensor."})
        licence = license_create(licensor=licensor, **data, acting_user=request_user(request))
        return Response(
            LicenseOutputSerializer(license_get(license_id=licence.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class LicenseDetailApi(GovernanceObjectApi):
    """One licence."""

    read_permission = "governance.view_license"

    @extend_schema(
        operation_id="governance_licences_detail",
        responses={200: LicenseOutputSerializer, **error_responses(401, 404)},
        summary="A licence",
        tags=[TAG],
    )
    def get(self, request: Request, license_id: int) -> Response:
        licence = _object(self, request, license_get(license_id=license_id))
        return Response(LicenseOutputSerializer(licence).data)


class LicenseWithdrawApi(GovernanceObjectApi):
    """Withdraw a licence: every frozen snapshot holding a clip under it is flagged and every
    model depending on it blocked (the jobs side stops their queued and running jobs). Data
    stewards. Audited."""

    read_permission = "governance.view_license"
    object_permissions = {"POST": ["governance.withdraw_license"]}
    InputSerializer = _reason_serializer("LicenceWithdrawInput")

    @extend_schema_serializer(component_name="LicenceWithdrawal")
    class OutputSerializer(serializers.Serializer):
        licence = LicenseOutputSerializer()
        snapshots_flagged = serializers.ListField(child=serializers.IntegerField())
        models_blocked = serializers.ListField(child=serializers.IntegerField())

    @extend_schema(
        operation_id="governance_licences_withdraw",
        request=InputSerializer,
        responses={200: OutputSerializer, **error_responses(400, 401, 403, 404, 409, 500)},
        summary="Withdraw a licence",
        tags=[TAG],
    )
    def post(self, request: Request, license_id: int) -> Response:
        licence = _object(self, request, license_get(license_id=license_id))
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = license_withdraw(
            license=licence, **serializer.validated_data, acting_user=request_user(request)
        )
        return Response(
            self.OutputSerializer(
                {
                    "licence": license_get(license_id=licence.pk),
                    "snapshots_flagged": result.snapshot_ids,
                    "models_blocked": sorted(set(result.model_version_ids)),
                }
            ).data
        )


# --------------------------------------------------------------------------------------------
# Datasets and clips
# --------------------------------------------------------------------------------------------


class DatasetListApi(GovernanceApi):
    """Datasets."""

    global_permissions = {"GET": ["governance.view_dataset"]}

    @extend_schema(
        operation_id="governance_datasets_list",
        responses={
            200: paginated_schema("DatasetPage", DatasetOutputSerializer),
            **error_responses(401, 403),
        },
        summary="List datasets",
        tags=[TAG],
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            queryset=dataset_list(),
            serializer_class=DatasetOutputSerializer,
            request=request,
            view=self,
        )


class DatasetCreateApi(GovernanceApi):
    """Create a dataset. Data stewards. Audited."""

    global_permissions = {"POST": ["governance.add_dataset"]}

    @extend_schema_serializer(component_name="DatasetCreateInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        description = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="governance_datasets_create",
        request=InputSerializer,
        responses={201: DatasetOutputSerializer, **error_responses(400, 401, 403)},
        summary="Create a dataset",
        tags=[TAG],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dataset = dataset_create(**serializer.validated_data, acting_user=request_user(request))
        return Response(DatasetOutputSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetailApi(GovernanceObjectApi):
    """One dataset."""

    read_permission = "governance.view_dataset"

    @extend_schema(
        operation_id="governance_datasets_detail",
        responses={200: DatasetOutputSerializer, **error_responses(401, 404)},
        summary="A dataset",
        tags=[TAG],
    )
    def get(self, request: Request, dataset_id: int) -> Response:
        dataset = _object(self, request, dataset_get(dataset_id=dataset_id))
        return Response(DatasetOutputSerializer(dataset).data)


class ClipListApi(GovernanceApi):
    """Clips, optionally of one dataset or under one licence."""

    global_permissions = {"GET": ["governance.view_clip"]}

    class FilterSerializer(serializers.Serializer):
        dataset = serializers.IntegerField(required=False, source="dataset_id")
        licence = serializers.IntegerField(required=False, source="license_id")

    @extend_schema(
        operation_id="governance_clips_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("ClipPage", ClipOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List clips",
        tags=[TAG],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=clip_list(**filters.validated_data),
            serializer_class=ClipOutputSerializer,
            request=request,
            view=self,
        )


class _ClipPersonInputSerializer(serializers.Serializer):
    person = serializers.IntegerField()
    consent = serializers.IntegerField(required=False, allow_null=True, default=None)


class ClipCreateApi(GovernanceApi):
    """Add a clip to a dataset: an uploaded file (hashed while stored) or an external URI with
    its SHA-256; its media properties, licence, and the persons appearing in it (each with the
    training consent relied on, checked again at every freeze). Data stewards. Audited."""

    global_permissions = {"POST": ["governance.add_clip"]}
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema_serializer(component_name="ClipCreateInput")
    class InputSerializer(serializers.Serializer):
        dataset = serializers.IntegerField()
        licence = serializers.IntegerField()
        file = serializers.FileField(required=False, allow_null=True, default=None)
        uri = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)
        sha256 = serializers.CharField(required=False, allow_blank=True, default="")
        duration_seconds = serializers.FloatField()
        fps = serializers.FloatField()
        frame_count = serializers.IntegerField()
        width = serializers.IntegerField()
        height = serializers.IntegerField()
        persons = _ClipPersonInputSerializer(many=True, required=False, default=list)
        notes = serializers.CharField(required=False, allow_blank=True, default="")

    @extend_schema(
        operation_id="governance_clips_create",
        request={"application/json": InputSerializer, "multipart/form-data": InputSerializer},
        responses={201: ClipOutputSerializer, **error_responses(400, 401, 403)},
        summary="Add a clip",
        tags=[TAG],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        dataset = dataset_get(dataset_id=data.pop("dataset"))
        licence = license_get(license_id=data.pop("licence"))
        if dataset is None or licence is None:
            raise ValidationError(
                {
                    key: "Not found."
                    for key, value in (("dataset", dataset), ("licence", licence))
                    if value is None
                }
            )
        persons = [
            ClipPersonSpec(person_id=p["person"], consent_id=p["consent"])
            for p in data.pop("persons")
        ]
        clip = clip_add(
            dataset=dataset,
            licence=licence,
            persons=persons,
            **data,
            acting_user=request_user(request),
        )
        return Response(
            ClipOutputSerializer(clip_get(clip_id=clip.pk)).data, status=status.HTTP_201_CREATED
        )


class ClipDetailApi(GovernanceObjectApi):
    """One clip."""

    read_permission = "governance.view_clip"

    @extend_schema(
        operation_id="governance_clips_detail",
        responses={200: ClipOutputSerializer, **error_responses(401, 404)},
        summary="A clip",
        tags=[TAG],
    )
    def get(self, request: Request, clip_id: int) -> Response:
        clip = _object(self, request, clip_get(clip_id=clip_id))
        return Response(ClipOutputSerializer(clip).data)


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


class SnapshotListApi(GovernanceApi):
    """Dataset snapshots, newest first."""

    global_permissions = {"GET": ["governance.view_datasetsnapshot"]}

    class FilterSerializer(serializers.Serializer):
        dataset = serializers.IntegerField(required=False, source="dataset_id")
        status = serializers.ChoiceField(choices=SnapshotStatus.choices, required=False)

    @extend_schema(
        operation_id="governance_snapshots_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("DatasetSnapshotPage", SnapshotOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List dataset snapshots",
        tags=[TAG],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=snapshot_list(**filters.validated_data),
            serializer_class=SnapshotOutputSerializer,
            request=request,
            view=self,
        )


class SnapshotCreateApi(GovernanceApi):
    """Freeze a dataset's eligible clips into an immutable snapshot (licence allows training
    and is in force, every person has a valid training consent). 409 ``snapshot_empty`` when
    no clip is eligible. Data stewards. Audited."""

    global_permissions = {"POST": ["governance.add_datasetsnapshot"]}

    @extend_schema_serializer(component_name="DatasetSnapshotCreateInput")
    class InputSerializer(serializers.Serializer):
        dataset = serializers.IntegerField()
        name = serializers.CharField(max_length=200)
        territory = serializers.CharField(
            max_length=2, default=WORLDWIDE, help_text="Where the training takes place."
        )

    @extend_schema(
        operation_id="governance_snapshots_create",
        request=InputSerializer,
        responses={201: SnapshotOutputSerializer, **error_responses(400, 401, 403, 409)},
        summary="Freeze a dataset snapshot",
        tags=[TAG],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(serializer.validated_data)
        dataset = dataset_get(dataset_id=data.pop("dataset"))
        if dataset is None:
            raise ValidationError({"dataset": "No such dataset."})
        snapshot = dataset_snapshot_freeze(
            dataset=dataset, **data, acting_user=request_user(request)
        )
        return Response(SnapshotOutputSerializer(snapshot).data, status=status.HTTP_201_CREATED)


class SnapshotDetailApi(GovernanceObjectApi):
    """One snapshot with its frozen clips (hash, licence, persons) and the clips left out."""

    read_permission = "governance.view_datasetsnapshot"

    @extend_schema_serializer(component_name="DatasetSnapshotDetail")
    class OutputSerializer(SnapshotOutputSerializer):
        items = serializers.ListField(child=serializers.DictField())
        excluded = serializers.ListField(child=serializers.DictField())

    @extend_schema(
        operation_id="governance_snapshots_detail",
        responses={200: OutputSerializer, **error_responses(401, 404)},
        summary="A dataset snapshot",
        tags=[TAG],
    )
    def get(self, request: Request, snapshot_id: int) -> Response:
        snapshot = _object(self, request, snapshot_get(snapshot_id=snapshot_id))
        persons = snapshot_persons(snapshot=snapshot)
        data = dict(SnapshotOutputSerializer(snapshot).data)
        data["items"] = [
            {
                "clip": item.clip_id,
                "location": item.location,
                "sha256": item.sha256,
                "fps": item.fps,
                "frames": item.frame_count,
                "licence": item.licence_id,
                "persons": persons.get(item.clip_id, []),
            }
            for item in snapshot_items(snapshot=snapshot)
        ]
        data["excluded"] = snapshot.excluded
        return Response(data)


class SnapshotExportApi(GovernanceObjectApi):
    """Stream the snapshot's training manifest (JSON Lines: a header with ``snapshot_id`` and
    ``exported_at``, then one line per clip). A withdrawn snapshot is refused (409). Data
    stewards. Audited."""

    read_permission = "governance.view_datasetsnapshot"
    object_permissions = {"GET": ["governance.export_datasetsnapshot"]}
    content_negotiation_class = FileContentNegotiation

    @extend_schema(
        operation_id="governance_snapshots_export",
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="The manifest, one JSON object per line."
            ),
            **error_responses(401, 403, 404, 409),
        },
        summary="Export a snapshot's training manifest",
        tags=[TAG],
    )
    def get(self, request: Request, snapshot_id: int) -> StreamingHttpResponse:
        snapshot = _object(self, request, snapshot_get(snapshot_id=snapshot_id))
        exported_at = timezone.now()
        dataset_snapshot_download_record(
            snapshot=snapshot, acting_user=request_user(request), exported_at=exported_at
        )
        response = StreamingHttpResponse(
            dataset_snapshot_manifest_lines(snapshot=snapshot, exported_at=exported_at),
            content_type="application/x-ndjson; charset=utf-8",
        )
        response["Content-Disposition"] = (
            f'attachment; filename="{snapshot_export_id(snapshot)}.jsonl"'
        )
        response["Cache-Control"] = "no-store"
        return response


class SnapshotStatusApi(GovernanceObjectApi):
    """Whether a snapshot is still ``active`` or ``withdrawn``: the trainer's check."""

    read_permission = "governance.view_datasetsnapshot"

    @extend_schema_serializer(component_name="DatasetSnapshotStatus")
    class OutputSerializer(serializers.Serializer):
        snapshot_id = serializers.CharField()
        status = serializers.ChoiceField(choices=["active", "withdrawn"])
        withdrawn_at = serializers.CharField(allow_null=True)
        reason = serializers.CharField()
        checked_at = serializers.CharField()

    @extend_schema(
        operation_id="governance_snapshots_status",
        responses={200: OutputSerializer, **error_responses(401, 404)},
        summary="A snapshot's status for the trainer",
        tags=[TAG],
    )
    def get(self, request: Request, snapshot_id: int) -> Response:
        snapshot = _object(self, request, snapshot_get(snapshot_id=snapshot_id))
        document: dict[str, object] = {"snapshot_id": snapshot_export_id(snapshot)}
        document.update(dataset_snapshot_status_document(snapshot))
        return Response(self.OutputSerializer(document).data)


# --------------------------------------------------------------------------------------------
# Model versions
# --------------------------------------------------------------------------------------------


class ModelVersionListApi(GovernanceApi):
    """Registered model versions."""

    global_permissions = {"GET": ["governance.view_modelversion"]}

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=ModelVersionStatus.choices, required=False)
        name = serializers.CharField(required=False)

    @extend_schema(
        operation_id="governance_models_list",
        parameters=[FilterSerializer],
        responses={
            200: paginated_schema("ModelVersionPage", ModelVersionOutputSerializer),
            **error_responses(400, 401, 403),
        },
        summary="List model versions",
        tags=[TAG],
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            queryset=model_version_list(**filters.validated_data),
            serializer_class=ModelVersionOutputSerializer,
            request=request,
            view=self,
        )


class ModelVersionDetailApi(GovernanceObjectApi):
    """One model version with its weight files, architecture and lineage tree (licence,
    snapshots with their clip licences, parent, recursively)."""

    read_permission = "governance.view_modelversion"

    @extend_schema_serializer(component_name="ModelVersionDetail")
    class OutputSerializer(ModelVersionOutputSerializer):
        folder = serializers.CharField()
        architecture = serializers.DictField()
        description = serializers.CharField()
        files = serializers.SerializerMethodField()
        lineage = serializers.SerializerMethodField()

        @extend_schema_field(
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "sha256": {"type": "string"},
                        "size_bytes": {"type": "integer"},
                    },
                },
            }
        )
        def get_files(self, model: ModelVersion) -> list[dict[str, object]]:
            return [
                {"path": f.relative_path, "sha256": f.sha256, "size_bytes": f.size_bytes}
                for f in model.weight_files.all()
            ]

        @extend_schema_field(
            {
                "type": "object",
                "description": (
                    "{id, name, version, status, weights_sha256, licence, snapshots: [{id, "
                    "dataset, name, status, clip_count, manifest_sha256, licences}], parent: "
                    "the same shape or null}"
                ),
            }
        )
        def get_lineage(self, model: ModelVersion) -> dict[str, object]:
            return model_version_lineage(model_version=model)

    @extend_schema(
        operation_id="governance_models_detail",
        responses={200: OutputSerializer, **error_responses(401, 404)},
        summary="A model version and its lineage",
        tags=[TAG],
    )
    def get(self, request: Request, model_version_id: int) -> Response:
        model = _object(self, request, model_version_get(model_version_id=model_version_id))
        return Response(self.OutputSerializer(model).data)


class ModelVersionBlockApi(GovernanceObjectApi):
    """Block a model version from new jobs (its queued and running jobs are reported to
    compliance by the jobs side). Data stewards. Audited."""

    read_permission = "governance.view_modelversion"
    object_permissions = {"POST": ["governance.block_modelversion"]}
    InputSerializer = _reason_serializer("ModelVersionBlockInput")

    @extend_schema(
        operation_id="governance_models_block",
        request=InputSerializer,
        responses={200: ModelVersionOutputSerializer, **error_responses(400, 401, 403, 404, 409)},
        summary="Block a model version",
        tags=[TAG],
    )
    def post(self, request: Request, model_version_id: int) -> Response:
        model = _object(self, request, model_version_get(model_version_id=model_version_id))
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        model_version_block_by_hand(
            model_version=model, **serializer.validated_data, acting_user=request_user(request)
        )
        return Response(
            ModelVersionOutputSerializer(model_version_get(model_version_id=model.pk)).data
        )


class ModelVersionDeprecateApi(GovernanceObjectApi):
    """Deprecate an active model version (no new jobs; kept to reproduce old ones). Data
    stewards. Audited."""

    read_permission = "governance.view_modelversion"
    object_permissions = {"POST": ["governance.deprecate_modelversion"]}
    InputSerializer = _reason_serializer("ModelVersionDeprecateInput")

    @extend_schema(
        operation_id="governance_models_deprecate",
        request=InputSerializer,
        responses={200: ModelVersionOutputSerializer, **error_responses(400, 401, 403, 404, 409)},
        summary="Deprecate a model version",
        tags=[TAG],
    )
    def post(self, request: Request, model_version_id: int) -> Response:
        model = _object(self, request, model_version_get(model_version_id=model_version_id))
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        model_version_deprecate(
            model_version=model, **serializer.validated_data, acting_user=request_user(request)
        )
        return Response(
            ModelVersionOutputSerializer(model_version_get(model_version_id=model.pk)).data
        )
