from __future__ import annotations

from django.contrib.auth.models import AbstractUser

from governance.roles import Role


class User(AbstractUser):
    """A person who works on the platform. Roles are group memberships (see governance.roles)."""

    class Meta(AbstractUser.Meta):
        db_table = "governance_user"
        swappable = "AUTH_USER_MODEL"

    def has_role(self, role: Role) -> bool:
        return self.groups.filter(name=role.value).exists()

    @property
    def role_names(self) -> list[str]:
        names = self.groups.filter(name__in=[r.value for r in Role]).values_list("name", flat=True)
        return sorted(names)
