from django.apps import AppConfig


class MembersConfig(AppConfig):
    """Ekklesia's ``membership`` and ``billing`` models, reduced to what the sync reads."""

    name = "membership_assets.simulators.django_registry.members"
    label = "membership"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (listing version and webhooks on every save)
