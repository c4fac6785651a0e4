from __future__ import annotations

from django.db.models import QuerySet

from governance.models import Person


def person_list(*, search: str | None = None) -> QuerySet[Person]:
    qs = Person.objects.select_related("reference_photo", "identity_verified_by")
    if search:
        qs = qs.filter(full_name__icontains=search)
    return qs


def person_get(*, person_id: int) -> Person | None:
    return person_list().filter(pk=person_id).first()
