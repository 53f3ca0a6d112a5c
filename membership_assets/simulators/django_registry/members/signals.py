"""Model signals: every member change bumps the listing version (the whole-listing ETag)."""

from __future__ import annotations

from typing import Any

from django.db.models import F
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Comrade, ContactInfo, ListingVersion, MembershipFee

MEMBER_MODELS = (Comrade, ContactInfo, MembershipFee)


def bump_version() -> None:
    ListingVersion.objects.filter(pk=1).update(version=F("version") + 1)


@receiver(post_save)
@receiver(post_delete)
def member_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if sender in MEMBER_MODELS:
        bump_version()
