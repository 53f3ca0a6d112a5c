"""Django settings of the local member registry (a test and demo stand-in, never production).

Applied with ``settings.configure`` by ``runtime.setup`` rather than ``DJANGO_SETTINGS_MODULE``,
so nothing leaks into subprocesses. Every stand-in in a process shares this one Django; each has
its own SQLite database (an alias added at start), server thread, faults and request log.
"""

from __future__ import annotations

SECRET_KEY = "local-registry-stand-in-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = True
TIME_ZONE = "Atlantic/Reykjavik"
ROOT_URLCONF = "membership_assets.simulators.django_registry.members.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework.authtoken",
    "membership_assets.simulators.django_registry.members",
]
_MW = "membership_assets.simulators.django_registry.members.middleware"
MIDDLEWARE = [
    f"{_MW}.RequestLogMiddleware",  # counts every request; server-side rate limit (429)
    f"{_MW}.SwitchableConditionalGetMiddleware",  # Django's ConditionalGetMiddleware, per stand-in
    "django.middleware.common.CommonMiddleware",  # APPEND_SLASH: a missing slash is a 301
    f"{_MW}.FaultMiddleware",  # injected faults, behind the redirect like a failing view
]
APPEND_SLASH = True
DATABASE_ROUTERS = ["membership_assets.simulators.django_registry.runtime.StandInRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
LOGGING = {  # keep test output clean: 4xx/5xx are what tests provoke on purpose
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {
        "django.request": {"handlers": ["null"], "propagate": False},
        "django.server": {"handlers": ["null"], "propagate": False},
    },
}
