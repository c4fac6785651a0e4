from django.apps import AppConfig


class ReenactmentConfig(AppConfig):
    name = "reenactment"
    verbose_name = "Reenactment"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from governance import hooks
        from reenactment import checks, worker  # noqa: F401 - registers checks, signals
        from reenactment.services import jobs, verification

        # Governance tells us what happened without importing us (ARCHITECTURE.md §2).
        hooks.register_approval_released_handler(jobs.render_job_on_approval_released)
        hooks.register_approval_closed_handler(jobs.render_job_on_approval_closed)
        hooks.register_consent_revocation_handler(jobs.render_job_on_consent_revoked)
        hooks.register_leakage_review_handler(verification.render_job_on_leakage_reviewed)
