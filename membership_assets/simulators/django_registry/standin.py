"""``DjangoRegistrySimulator``: a real Django + DRF member registry, local and in-process.

Each instance is its own registry: a SQLite database of Ekklesia-shaped models (``members``),
served by Django's threaded WSGI server on a loopback port with DRF's TokenAuthentication,
PageNumberPagination and DefaultRouter (see ``runtime`` for how many share one Django). Tests
and the demo change it as staff would (``add``, ``remove`` = soft delete, ``update``, ``churn``)
and inject faults through its middleware (``faults.add(...)``, see ``faults``).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from ...registry.webhook import LOCAL_WEBHOOK_SECRET
from ..http import RequestLog, TokenBucket
from . import runtime
from .faults import RegistryFaults
from .seed import DEFAULT_TOKEN, RegistryData, _person, generate_registry, make_kennitala

WEBHOOK_SECRET_ENV = "REGISTRY_WEBHOOK_SECRET_PASSWORD"
ETAG_MODES = {True: "listing", False: None, None: None, "listing": "listing", "middleware": "middleware"}


def kennitala_key(value: Any) -> str:
    return str(value).replace("-", "")


class DjangoRegistrySimulator:
    def __init__(
        self,
        data: RegistryData | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        auth_scheme: str = "Token",
        shape: str = "paginated",
        default_page_size: int = 100,
        max_page_size: int = 500,
        rate_limit: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        etag: bool | str = True,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ):
        """``etag``: True / "listing" = a whole-listing ETag from the view (a version counter
        bumped by model signals); "middleware" = Django's ConditionalGetMiddleware (an ETag of
        each page's content); False = none. ``webhook_url``: announce every member save and
        delete there, signed with ``webhook_secret`` (default: ``REGISTRY_WEBHOOK_SECRET_PASSWORD``,
        else the documented local value)."""
        runtime.setup()
        data = data or generate_registry()
        self.token = token
        self.auth_scheme = auth_scheme
        self.shape = shape
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.etag = etag
        self.faults = RegistryFaults()
        self.requests = RequestLog()
        self.bucket = TokenBucket(rate_limit) if rate_limit else None
        self.stopping = threading.Event()
        self.webhook_url = webhook_url
        self.webhooks = None
        if webhook_url:
            from .members.webhook import WebhookSender

            secret = webhook_secret or os.getenv(WEBHOOK_SECRET_ENV) or LOCAL_WEBHOOK_SECRET
            self.webhooks = WebhookSender(webhook_url, secret, self.stopping)
        self._truth, self._seed = data.truth, data.seed
        self._exported: tuple[int, list[tuple[int, dict[str, Any]]]] | None = None
        self.alias = runtime.add_database()
        with self.active():
            self._install(data)
        self.server = runtime.StandInServer(self, host=host, port=port)

    # -- set-up -----------------------------------------------------------------------------

    def _install(self, data: RegistryData) -> None:
        from django.contrib.auth.models import User
        from rest_framework.authtoken.models import Token

        from .members import planting
        from .members.models import ListingVersion

        staff = User.objects.create_user("sync-service", is_staff=True)
        Token.objects.create(user=staff, key=self.token)
        ListingVersion.objects.create(pk=1, version=data.version)
        planting.create_many(data.members)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """This registry's database for the ORM calls in the block (one transaction)."""
        from django.db import transaction

        with runtime.serving(self), transaction.atomic(using=self.alias):
            yield

    @property
    def etag_mode(self) -> str | None:
        return ETAG_MODES[self.etag]

    @property
    def base_url(self) -> str:
        return self.server.url

    @property
    def data(self) -> RegistryData:
        """What the registry lists now, in the sync's row shape, with the seed's truth."""
        from .members import planting
        from .members.models import ListingVersion

        with self.active():
            version = ListingVersion.objects.get(pk=1).version
            if self._exported is None or self._exported[0] != version:
                self._exported = (version, planting.exported())
        rows = copy.deepcopy([row for _, row in self._exported[1]])  # callers may edit them
        return RegistryData(members=rows, truth=self._truth, version=version, seed=self._seed)

    # -- mutations (what staff do in the Django admin) ---------------------------------------

    def _listed_by_kennitala(self, kennitala: str) -> list[Any]:
        from .members import planting
        from .members.models import Comrade

        wanted = kennitala_key(kennitala)
        ids = [i for i, row in planting.exported() if kennitala_key(row.get("kennitala")) == wanted]
        return list(Comrade.objects.filter(id__in=ids).order_by("id"))

    def set_members(self, rows: list[dict[str, Any]]) -> None:
        """Replace the whole registry (like restoring a backup: rows get new ids, no webhooks)."""
        from .members import planting
        from .members.models import Comrade, ContactInfo, MembershipFee
        from .members.signals import bump_version

        with self.active():
            for model in (MembershipFee, ContactInfo, Comrade):
                model.objects.all()._raw_delete(self.alias)
            planting.create_many([dict(r) for r in rows])
            bump_version()

    def remove(self, kennitala: str) -> None:
        """Soft-delete the listed members with this kennitala (Ekklesia's ``deleted_at``)."""
        from django.utils import timezone

        with self.active():
            for comrade in self._listed_by_kennitala(kennitala):
                comrade.deleted_at = timezone.now()
                comrade.save()

    def delete(self, kennitala: str) -> None:
        """Delete the listed members with this kennitala outright (staff deleting in the admin)."""
        with self.active():
            for comrade in self._listed_by_kennitala(kennitala):
                comrade.delete()

    def add(self, row: dict[str, Any]) -> None:
        from .members import planting

        with self.active():
            planting.save_row(None, dict(row))

    def update(self, kennitala: str, **fields: Any) -> None:
        from .members import planting

        with self.active():
            rows = dict(planting.exported())
            for comrade in self._listed_by_kennitala(kennitala):
                planting.save_row(comrade, {**rows[comrade.id], **fields})

    def churn(self, step: int, fraction: float = 0.01) -> dict[str, list[str]]:
        """One month of membership life: some leave, some join, some change email.

        Returns the kennitalas of each group, so tests can derive what a sync must do.
        """
        rng = random.Random(self._seed * 1000 + step)
        members = self.data.members
        valid = set(self._truth.valid_kennitalas)
        listed = sorted({kennitala_key(m.get("kennitala")) for m in members} & valid)
        n = max(1, int(len(listed) * fraction))
        left = rng.sample(listed, n)
        changed = rng.sample(sorted(set(listed) - set(left)), n)
        emails = {kennitala_key(m.get("kennitala")): m.get("email") for m in members}
        known = set(emails)
        joined: list[str] = []
        while len(joined) < n:
            kt = make_kennitala(rng)
            if kt not in known:
                known.add(kt)
                joined.append(kt)
        with self.active():
            for kt in left:
                self.remove(kt)
            for kt in changed:
                self.update(kt, email=(emails[kt] or "member@example.is").replace("@", f".{step}@"))
            for kt in joined:
                self.add(_person(rng, kt))
                self._truth.valid_kennitalas.append(kt)
        return {"left": sorted(left), "joined": sorted(joined), "changed": sorted(changed)}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases hanging and slow pages, and webhook retries
        self.server.stop()
        if self.webhooks is not None:
            self.webhooks.close()
        runtime.drop_database(self.alias)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def save(self, path: Path) -> None:
        self.data.save(path)
