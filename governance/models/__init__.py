from governance.models.users import User

__all__ = ["User"]
