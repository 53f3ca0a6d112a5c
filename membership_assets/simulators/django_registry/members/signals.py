"""Model signals: every member change bumps the listing version (the whole-listing ETag) and,
when the stand-in has a webhook URL, is announced to it after the transaction commits."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .. import runtime
from .models import Comrade, ContactInfo, ListingVersion, MembershipFee
from .webhook import DELETED, SAVED

MEMBER_MODELS = (Comrade, ContactInfo, MembershipFee)


def bump_version() -> None:
    ListingVersion.objects.filter(pk=1).update(version=F("version") + 1)


def _announce(kind: str, member_id: int | None) -> None:
    stand_in = runtime.current()
    if stand_in.webhooks is not None and member_id is not None:
        webhooks = stand_in.webhooks
        transaction.on_commit(lambda: webhooks.send(kind, member_id), using=stand_in.alias)


@receiver(post_save)
def member_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    if sender in MEMBER_MODELS:
        bump_version()
        _announce(SAVED, instance.pk if sender is Comrade else instance.comrade_id)


@receiver(post_delete)
def member_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    if sender in MEMBER_MODELS:
        bump_version()
        origin = kwargs.get("origin")
        if sender is Comrade:
            _announce(DELETED, instance.pk)
        elif not (isinstance(origin, Comrade) or getattr(origin, "model", None) is Comrade):
            _announce(SAVED, instance.comrade_id)  # a contact or fee removed; not a cascade
