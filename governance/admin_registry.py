"""Data stewards' admin pages: licensors, licences, datasets, clips, snapshots and model
versions with their lineage. Imported by ``governance.admin``.

As everywhere in the admin, nothing is written directly: creating goes through the audited
services, frozen snapshots and registered models are read-only, nothing is deleted, and the
only changes offered are a licence's withdrawal and a model's block or deprecation, each with
a reason, through their services (which cascade and audit).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from config.api import ApplicationError
from governance.models import (
    WORLDWIDE,
    Clip,
    ClipPerson,
    Dataset,
    DatasetSnapshot,
    DatasetSnapshotClip,
    License,
    LicenseStatus,
    LicenseUse,
    Licensor,
    ModelVersion,
    ModelVersionStatus,
    Territory,
    User,
)
from governance.selectors.registry import model_version_lineage
from governance.services.datasets import dataset_create, dataset_snapshot_freeze
from governance.services.licences import license_create, license_withdraw, licensor_create
from governance.services.registry import model_version_block_by_hand, model_version_deprecate


def _actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


def _adopt(obj: Model, created: Model) -> None:
    """Make the admin's unsaved ``obj`` stand for the row a service created."""
    obj.pk = created.pk
    obj.__dict__.update({k: v for k, v in created.__dict__.items() if not k.startswith("_")})
    obj._state.adding = False
    obj._state.db = created._state.db


class NoDeleteAdmin(admin.ModelAdmin):
    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """Rows shown inside their parent's page to whoever may view the parent (the rows have no
    permissions of their own)."""

    extra = 0
    can_delete = False
    parent_view_permission = ""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.has_perm(self.parent_view_permission)


class CreateOnlyAdmin(NoDeleteAdmin):
    """Added through a service; read-only afterwards."""

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# --- licensors and licences --------------------------------------------------------------------


@admin.register(Licensor)
class LicensorAdmin(CreateOnlyAdmin):
    list_display = ["name", "contact", "url", "created_at"]
    search_fields = ["name"]
    fields = ["name", "contact", "url", "notes"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def save_model(
        self, request: HttpRequest, obj: Licensor, form: ModelForm, change: bool
    ) -> None:
        created = licensor_create(
            name=obj.name,
            contact=obj.contact,
            url=obj.url,
            notes=obj.notes,
            acting_user=_actor(request),
        )
        _adopt(obj, created)


class LicenseAddForm(forms.ModelForm):
    allowed_uses = forms.MultipleChoiceField(
        choices=LicenseUse.choices, widget=forms.CheckboxSelectMultiple, required=False
    )
    territory_codes = forms.CharField(
        initial=WORLDWIDE,
        help_text=f"ISO 3166-1 alpha-2 codes separated by commas, or {WORLDWIDE} (worldwide).",
    )

    class Meta:
        model = License
        fields = [
            "licensor",
            "name",
            "spdx_id",
            "valid_from",
            "expires_at",
            "terms_text",
            "terms_file",
            "attribution_text",
        ]


class LicenseWithdrawForm(forms.ModelForm):
    withdraw = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Withdraw with reason",
        help_text=(
            "Filling this in withdraws the licence: every snapshot holding a clip under it is "
            "flagged and every model depending on it is blocked (audited)."
        ),
    )

    class Meta:
        model = License
        fields: list[str] = []


@admin.register(License)
class LicenseAdmin(NoDeleteAdmin):
    list_display = ["name", "licensor", "uses", "status", "valid_from", "expires_at"]
    list_filter = ["status", "allows_training", "allows_commercial_output", "licensor"]
    search_fields = ["name", "spdx_id"]
    readonly_fields = [
        "licensor",
        "name",
        "spdx_id",
        "uses",
        "territory_list",
        "valid_from",
        "expires_at",
        "terms_text",
        "terms_file",
        "terms_sha256",
        "attribution_text",
        "status",
        "withdrawn_at",
        "withdrawn_by",
        "withdraw_reason",
        "created_at",
        "created_by",
    ]

    @admin.display(description="Allowed uses")
    def uses(self, obj: License) -> str:
        return ", ".join(obj.allowed_uses()) or "none"

    @admin.display(description="Territories")
    def territory_list(self, obj: License) -> str:
        return ", ".join(str(t.pk) for t in obj.territories.all())

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # "Change" here means only "withdraw".
        if isinstance(obj, License) and obj.status != LicenseStatus.ACTIVE:
            return False
        return request.user.has_perm("governance.withdraw_license")

    def get_form(
        self, request: HttpRequest, obj: Model | None = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm]:
        kwargs["form"] = LicenseWithdrawForm if obj is not None else LicenseAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return list(self.readonly_fields) if obj is not None else []

    def get_fields(  # type: ignore[override]  # a plain list of names, by design
        self, request: HttpRequest, obj: Model | None = None
    ) -> list[str]:
        if obj is None:
            return [*LicenseAddForm.Meta.fields[:3], "allowed_uses", "territory_codes"] + list(
                LicenseAddForm.Meta.fields[3:]
            )
        fields = list(self.readonly_fields)
        if self.has_change_permission(request, obj):
            fields.append("withdraw")
        return fields

    def save_model(self, request: HttpRequest, obj: License, form: ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            if data.get("withdraw", "").strip():
                license_withdraw(license=obj, reason=data["withdraw"], acting_user=_actor(request))
            return
        created = license_create(
            licensor=data["licensor"],
            name=data["name"],
            spdx_id=data.get("spdx_id", ""),
            allowed_uses=data["allowed_uses"],
            territories=[c for c in data["territory_codes"].split(",") if c.strip()],
            valid_from=data.get("valid_from"),
            expires_at=data.get("expires_at"),
            terms_text=data.get("terms_text", ""),
            terms_file=data.get("terms_file") or None,
            attribution_text=data.get("attribution_text", ""),
            acting_user=_actor(request),
        )
        _adopt(obj, created)

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool
    ) -> None:
        # The service saved the territories.
        return


# --- datasets and clips ------------------------------------------------------------------------


class ClipInline(ReadOnlyInline):
    model = Clip
    fields = readonly_fields = ("id", "location", "sha256", "fps", "frame_count", "licence")
    show_change_link = True
    parent_view_permission = "governance.view_dataset"


class SnapshotInline(ReadOnlyInline):
    model = DatasetSnapshot
    fields = readonly_fields = ("name", "status", "clip_count", "frozen_at", "manifest_sha256")
    show_change_link = True
    parent_view_permission = "governance.view_dataset"


@admin.register(Dataset)
class DatasetAdmin(CreateOnlyAdmin):
    list_display = ["name", "clip_total", "snapshot_total", "created_at"]
    search_fields = ["name"]
    fields = ["name", "description"]

    def get_inlines(self, request: HttpRequest, obj: Model | None) -> list[type[Any]]:
        return [ClipInline, SnapshotInline] if obj is not None else []

    @admin.display(description="Clips")
    def clip_total(self, obj: Dataset) -> int:
        return int(obj.clips.count())

    @admin.display(description="Snapshots")
    def snapshot_total(self, obj: Dataset) -> int:
        return int(obj.snapshots.count())

    def save_model(self, request: HttpRequest, obj: Dataset, form: ModelForm, change: bool) -> None:
        _adopt(
            obj,
            dataset_create(name=obj.name, description=obj.description, acting_user=_actor(request)),
        )


class ClipPersonInline(ReadOnlyInline):
    model = ClipPerson
    fields = readonly_fields = ("person", "consent")
    parent_view_permission = "governance.view_clip"


@admin.register(Clip)
class ClipAdmin(CreateOnlyAdmin):
    """Clips are added through the API (uploads are hashed while stored); shown here."""

    list_display = ["id", "dataset", "location", "sha256", "fps", "frame_count", "licence"]
    list_filter = ["dataset", "licence"]
    search_fields = ["sha256", "uri"]
    inlines = [ClipPersonInline]
    exclude = ["persons"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


# --- snapshots ---------------------------------------------------------------------------------


class SnapshotItemInline(ReadOnlyInline):
    model = DatasetSnapshotClip
    fields = readonly_fields = (
        "position",
        "clip",
        "location",
        "sha256",
        "fps",
        "frame_count",
        "licence",
    )
    parent_view_permission = "governance.view_datasetsnapshot"


class SnapshotFreezeForm(forms.ModelForm):
    territory = forms.ModelChoiceField(
        queryset=Territory.objects.filter(is_active=True),
        initial=WORLDWIDE,
        help_text="Where the training takes place.",
    )

    class Meta:
        model = DatasetSnapshot
        fields = ["dataset", "name", "territory"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(CreateOnlyAdmin):
    """Adding freezes the dataset's eligible clips (``dataset_snapshot_freeze``); a frozen
    snapshot is read-only."""

    list_display = ["name", "dataset", "status", "clip_count", "territory", "frozen_at"]
    list_filter = ["status", "dataset"]
    readonly_fields = [
        "dataset",
        "name",
        "territory",
        "status",
        "frozen_at",
        "frozen_by",
        "clip_count",
        "manifest_sha256",
        "excluded_clips",
        "withdrawn_at",
        "withdraw_reason",
    ]

    def get_form(
        self, request: HttpRequest, obj: Model | None = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm]:
        if obj is None:
            kwargs["form"] = SnapshotFreezeForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(  # type: ignore[override]  # a plain list of names, by design
        self, request: HttpRequest, obj: Model | None = None
    ) -> list[str]:
        return list(self.readonly_fields) if obj is not None else ["dataset", "name", "territory"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return list(self.readonly_fields) if obj is not None else []

    def get_inlines(self, request: HttpRequest, obj: Model | None) -> list[type[Any]]:
        return [SnapshotItemInline] if obj is not None else []

    @admin.display(description="Clips left out")
    def excluded_clips(self, obj: DatasetSnapshot) -> SafeString:
        if not obj.excluded:
            return format_html("{}", "none")
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>clip #{}: {}</li>",
                ((e.get("clip_id"), "; ".join(e.get("reasons", []))) for e in obj.excluded),
            ),
        )

    def save_model(
        self, request: HttpRequest, obj: DatasetSnapshot, form: ModelForm, change: bool
    ) -> None:
        try:
            created = dataset_snapshot_freeze(
                dataset=form.cleaned_data["dataset"],
                name=form.cleaned_data["name"],
                territory=form.cleaned_data["territory"].pk,
                acting_user=_actor(request),
            )
        except (ApplicationError, ValidationError) as exc:
            # Nothing was frozen: say why on the add page instead of failing.
            text = exc.message if isinstance(exc, ApplicationError) else "; ".join(exc.messages)
            self.message_user(request, f"Not frozen: {text}", messages.ERROR)
            obj._freeze_refused = True  # type: ignore[attr-defined]  # read by response_add
            return
        _adopt(obj, created)

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool
    ) -> None:
        return

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        if getattr(obj, "_freeze_refused", False):
            return None
        return super().log_addition(request, obj, message)

    def response_add(
        self, request: HttpRequest, obj: DatasetSnapshot, post_url_continue: str | None = None
    ) -> HttpResponse:
        if getattr(obj, "_freeze_refused", False):
            return HttpResponseRedirect(request.path)
        return super().response_add(request, obj, post_url_continue)


# --- model versions ----------------------------------------------------------------------------


def _lineage_html(node: dict[str, Any]) -> SafeString:
    licence = node["licence"]
    snapshots = format_html_join(
        "",
        "<li>trained on snapshot #{} <b>{} / {}</b> ({}, {} clips), clip licences: {}</li>",
        (
            (
                s["id"],
                s["dataset"],
                s["name"],
                s["status"],
                s["clip_count"],
                ", ".join(
                    f"{lic['name']} [{', '.join(lic['allowed_uses'])}]" for lic in s["licences"]
                ),
            )
            for s in node["snapshots"]
        ),
    )
    parent = (
        format_html("<li>fine-tuned from {}</li>", _lineage_html(node["parent"]))
        if node["parent"]
        else ""
    )
    return format_html(
        '<div class="lineage"><b>{} {}</b> (#{}, {})<ul><li>weights licence: {} [{}] ({})</li>'
        "{}{}</ul></div>",
        node["name"],
        node["version"],
        node["id"],
        node["status"],
        licence["name"],
        ", ".join(licence["allowed_uses"]),
        licence["status"],
        snapshots,
        parent,
    )


class ModelVersionStatusForm(forms.ModelForm):
    change_status = forms.ChoiceField(
        choices=[("", "keep"), ("block", "block"), ("deprecate", "deprecate")],
        required=False,
        help_text="Blocking stops new jobs and reports queued and running ones to compliance.",
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    class Meta:
        model = ModelVersion
        fields: list[str] = []

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("change_status") and not data.get("reason", "").strip():
            raise ValidationError({"reason": "Give the reason."})
        return data


@admin.register(ModelVersion)
class ModelVersionAdmin(NoDeleteAdmin):
    """Registered with ``manage.py register_model``; shown with its files and lineage tree."""

    list_display = ["name", "version", "status", "licence", "is_demonstration", "created_at"]
    list_filter = ["status", "layout", "is_demonstration", "licence"]
    search_fields = ["name", "version", "weights_sha256"]
    form = ModelVersionStatusForm
    readonly_fields = [
        "name",
        "version",
        "status",
        "status_reason",
        "licence",
        "layout",
        "weights_sha256",
        "folder",
        "is_demonstration",
        "lineage",
        "weight_file_list",
        "architecture",
        "description",
        "created_at",
        "created_by",
    ]

    @admin.display(description="Lineage")
    def lineage(self, obj: ModelVersion) -> SafeString:
        return _lineage_html(model_version_lineage(model_version=obj))

    @admin.display(description="Weight files")
    def weight_file_list(self, obj: ModelVersion) -> SafeString:
        return format_html(
            "<table><tr><th>file</th><th>SHA-256</th><th>bytes</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                obj.weight_files.values_list("relative_path", "sha256", "size_bytes"),
            ),
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if isinstance(obj, ModelVersion) and obj.status == ModelVersionStatus.BLOCKED:
            return False
        return request.user.has_perm("governance.block_modelversion") or request.user.has_perm(
            "governance.deprecate_modelversion"
        )

    def get_fields(  # type: ignore[override]  # a plain list of names, by design
        self, request: HttpRequest, obj: Model | None = None
    ) -> list[str]:
        fields = list(self.readonly_fields)
        if obj is not None and self.has_change_permission(request, obj):
            fields += ["change_status", "reason"]
        return fields

    def save_model(
        self, request: HttpRequest, obj: ModelVersion, form: ModelForm, change: bool
    ) -> None:
        action, reason = form.cleaned_data.get("change_status"), form.cleaned_data.get("reason", "")
        actor = _actor(request)
        if action == "block" and request.user.has_perm("governance.block_modelversion"):
            model_version_block_by_hand(model_version=obj, reason=reason, acting_user=actor)
        elif action == "deprecate" and request.user.has_perm("governance.deprecate_modelversion"):
            model_version_deprecate(model_version=obj, reason=reason, acting_user=actor)

    def save_related(
        self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool
    ) -> None:
        return
