"""The admin. Nothing here writes governance state directly: every save goes through the
audited services, records that are never edited (audit events, persons, consents, evidence,
approval requests) are read-only, and nothing can be deleted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Model
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest

from governance.models import (
    ApprovalPolicy,
    ApprovalRequest,
    AuditEvent,
    Channel,
    ConsentRecord,
    EvidenceFile,
    Person,
    Purpose,
    Territory,
    User,
)
from governance.models.identity import FaceMatchRecord, FaceThresholdPolicy, LeakageReport
from governance.roles import Role
from governance.services.approvals import (
    approval_policy_create,
    approval_policy_update,
    approval_policy_validate,
)
from governance.services.identity import face_threshold_policy_update
from governance.services.roles import role_grant, role_revoke
from governance.services.vocabulary import vocabulary_entry_save


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by holders of the view permission; never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(User)
class PlatformUserAdmin(UserAdmin):
    """Role groups change only through ``role_grant``/``role_revoke`` (audited); other groups
    are saved as usual."""

    def save_related(
        self,
        request: HttpRequest,
        form: ModelForm,
        formsets: Sequence[BaseInlineFormSet],
        change: bool,
    ) -> None:
        wanted = form.cleaned_data.get("groups")
        if wanted is None:
            super().save_related(request, form, formsets, change)
            return
        role_names = {role.value for role in Role}
        user = form.instance
        actor = request.user if isinstance(request.user, User) else None
        current = set(user.groups.filter(name__in=role_names).values_list("name", flat=True))
        wanted_roles = {group.name for group in wanted if group.name in role_names}
        form.cleaned_data["groups"] = [g for g in wanted if g.name not in role_names] + list(
            Group.objects.filter(name__in=current)
        )
        super().save_related(request, form, formsets, change)
        for name in sorted(wanted_roles - current):
            role_grant(user=user, role=Role(name), acting_user=actor)
        for name in sorted(current - wanted_roles):
            role_revoke(user=user, role=Role(name), acting_user=actor)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "occurred_at", "actor", "action_name", "target_type", "target_id"]
    list_filter = ["action", "target_type"]
    search_fields = ["target_id", "request_id", "hash"]
    date_hierarchy = "occurred_at"
    ordering = ["-sequence"]


class StepRolesField(forms.CharField):
    """The ordered deciding roles, typed as ``reviewer, compliance_officer``."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]  # a list, by design
        text = super().to_python(value) or ""
        return [part.strip() for part in text.split(",") if part.strip()]


class ApprovalPolicyForm(forms.ModelForm):
    step_roles = StepRolesField(
        help_text="Deciding roles in order, separated by commas. Roles: "
        + ", ".join(role.value for role in Role)
        + "."
    )

    class Meta:
        model = ApprovalPolicy
        fields = ["name", "purpose", "risk_level", "step_roles", "approval_ttl", "is_active"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors:
            try:
                approval_policy_validate(
                    policy_id=self.instance.pk,
                    name=data.get("name", ""),
                    purpose=data.get("purpose"),
                    risk_level=data.get("risk_level", ""),
                    step_roles=data.get("step_roles", []),
                    approval_ttl=data["approval_ttl"],
                    is_active=data.get("is_active", False),
                )
            except ValidationError as exc:
                raise ValidationError(exc.message_dict) from exc
        return data


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    """Compliance officers edit policies here; each save is ``approval_policy_create`` or
    ``approval_policy_update`` (audited with old and new values). Policies are retired, not
    deleted."""

    form = ApprovalPolicyForm
    list_display = ["name", "purpose", "risk_level", "step_roles", "approval_ttl", "is_active"]
    list_filter = ["is_active", "risk_level"]

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: ApprovalPolicy, form: ModelForm, change: bool
    ) -> None:
        values = {
            "name": form.cleaned_data["name"],
            "purpose": form.cleaned_data["purpose"],
            "risk_level": form.cleaned_data["risk_level"],
            "step_roles": form.cleaned_data["step_roles"],
            "approval_ttl": form.cleaned_data["approval_ttl"],
            "is_active": form.cleaned_data["is_active"],
        }
        user = request.user if isinstance(request.user, User) else None
        if change:
            approval_policy_update(policy=obj, **values, acting_user=user)
            return
        created = approval_policy_create(**values, acting_user=user)
        obj.pk = created.pk
        obj.created_at = created.created_at
        obj.updated_at = created.updated_at
        obj._state.adding = False
        obj._state.db = created._state.db


class VocabularyAdmin(admin.ModelAdmin):
    """Entries are saved through ``vocabulary_entry_save`` (audited); the code of an existing
    entry never changes; entries are retired, not deleted."""

    list_display = ["code", "label", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["code", "label"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return ["code"] if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        user = request.user if isinstance(request.user, User) else None
        vocabulary_entry_save(entry=obj, acting_user=user)


@admin.register(Purpose)
class PurposeAdmin(VocabularyAdmin):
    list_display = ["code", "label", "is_commercial", "risk_level", "is_active"]
    list_filter = ["is_active", "is_commercial", "risk_level"]


@admin.register(Channel)
class ChannelAdmin(VocabularyAdmin):
    pass


@admin.register(Territory)
class TerritoryAdmin(VocabularyAdmin):
    pass


@admin.register(Person)
class PersonAdmin(ReadOnlyAdmin):
    list_display = ["id", "full_name", "external_reference", "created_at"]
    search_fields = ["full_name", "external_reference"]


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    list_display = ["id", "person", "role", "status", "valid_from", "valid_until", "recorded_at"]
    list_filter = ["status", "role", "commercial_use"]
    raw_id_fields = ["person"]


@admin.register(EvidenceFile)
class EvidenceFileAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "kind", "content_type", "size_bytes", "sha256", "uploaded_at"]
    list_filter = ["kind", "content_type"]
    exclude = ["file"]


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "subject_type", "subject_id", "status", "requested_by", "created_at"]
    list_filter = ["status", "subject_type"]


class FaceThresholdPolicyForm(forms.ModelForm):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), help_text="Why the thresholds change (audited)."
    )

    class Meta:
        model = FaceThresholdPolicy
        fields = [
            "match_threshold",
            "review_threshold",
            "leakage_margin",
            "leakage_review_margin",
            "max_faceless_share",
            "min_sampled_frames",
        ]


@admin.register(FaceThresholdPolicy)
class FaceThresholdPolicyAdmin(admin.ModelAdmin):
    """Compliance officers change thresholds here; each save is
    ``face_threshold_policy_update`` (reason required, audited with old and new values).
    Policies exist per backend (seeded, or created on first use) and are never deleted."""

    form = FaceThresholdPolicyForm
    list_display = ["backend", "match_threshold", "review_threshold", "leakage_margin", "licence"]
    readonly_fields = ["backend", "licence", "licence_text", "updated_at", "updated_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: FaceThresholdPolicy, form: ModelForm, change: bool
    ) -> None:
        user = request.user if isinstance(request.user, User) else None
        assert user is not None, "the admin is only reachable when logged in"
        values = {field: form.cleaned_data[field] for field in FaceThresholdPolicyForm.Meta.fields}
        updated = face_threshold_policy_update(
            backend=obj.backend, reason=form.cleaned_data["reason"], acting_user=user, **values
        )
        obj.updated_at = updated.updated_at
        obj.updated_by = updated.updated_by


@admin.register(FaceMatchRecord)
class FaceMatchRecordAdmin(ReadOnlyAdmin):
    list_display = ["id", "subject_type", "subject_id", "check_type", "person", "verdict"]
    list_filter = ["verdict", "check_type", "backend"]
    raw_id_fields = ["person"]


@admin.register(LeakageReport)
class LeakageReportAdmin(ReadOnlyAdmin):
    list_display = ["id", "subject_type", "subject_id", "verdict", "review_decision", "created_at"]
    list_filter = ["verdict", "review_decision", "backend"]


# Licensed training data and the model registry: data stewards' pages.
from governance import admin_registry  # noqa: E402, F401 - registers its ModelAdmins
