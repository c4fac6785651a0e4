from django.apps import AppConfig


class ReenactmentConfig(AppConfig):
    name = "reenactment"
    verbose_name = "Reenactment"
    default_auto_field = "django.db.models.BigAutoField"
