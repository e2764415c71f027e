from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ElasticSessionsConfig(AppConfig):
    name = "elastic_sessions"
    verbose_name = "Elastic sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in  # noqa: PLC0415

        from . import checks as elastic_checks  # noqa: PLC0415 - needs loaded apps
        from . import policies  # noqa: PLC0415 - imports the models

        checks.register(elastic_checks.check_settings, checks.Tags.compatibility)
        checks.register(elastic_checks.check_engine_and_middleware, checks.Tags.compatibility)
        checks.register(elastic_checks.check_session_cookie, checks.Tags.security, deploy=True)
        user_logged_in.connect(policies.on_user_logged_in, dispatch_uid="elastic_sessions.policies")
