"""Ekklesia's member tables (shared/reference/ekklesia-member-api.md), as the stand-in keeps them.

A member's status is derived, as Ekklesia computes it: ``inactive`` when soft-deleted
(``deleted_at``), ``suspended`` when staff suspended them (a flag Ekklesia lacks; seed 002 has
the state), ``active`` when this year's fee is paid, ``unpaid`` otherwise.

``served_overrides`` / ``served_omit`` exist only in the stand-in: tests plant rows Django would
never produce (a kennitala as a JSON number, a null status, a 10 MB name...) and the serializers
serve them verbatim.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

ACTIVE, UNPAID, SUSPENDED, INACTIVE = "active", "unpaid", "suspended", "inactive"
DERIVED_STATUSES = (ACTIVE, UNPAID, SUSPENDED, INACTIVE)


class Comrade(models.Model):
    name = models.CharField(max_length=250)  # SQLite keeps whatever length a test plants
    ssn = models.CharField(max_length=10, null=True, blank=True, db_index=True)  # not unique
    birthday = models.DateField(null=True, blank=True)
    date_joined = models.DateField(default=timezone.localdate)
    reachable = models.BooleanField(default=True)
    groupable = models.BooleanField(default=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    suspended = models.BooleanField(default=False)
    served_overrides = models.JSONField(null=True, blank=True)  # stand-in only
    served_omit = models.JSONField(null=True, blank=True)  # stand-in only

    class Meta:
        db_table = "membership_comrade"
        ordering = ["id"]

    def status(self, year: int | None = None) -> str:
        if self.deleted_at is not None:
            return INACTIVE
        if self.suspended:
            return SUSPENDED
        year = year or timezone.localdate().year
        # Reads the prefetched fees when the view prefetched them (one query per page).
        paid = any(f.year == year and f.date_paid is not None for f in self.fees.all())
        return ACTIVE if paid else UNPAID


class ContactInfo(models.Model):
    comrade = models.OneToOneField(Comrade, related_name="contact_info", on_delete=models.CASCADE)
    phone = models.CharField(max_length=32, blank=True, default="")
    email = models.CharField(max_length=124, null=True, blank=True)
    facebook = models.CharField(max_length=124, blank=True, default="")

    class Meta:
        db_table = "membership_contactinfo"


class MembershipFee(models.Model):
    comrade = models.ForeignKey(Comrade, related_name="fees", on_delete=models.CASCADE)
    year = models.IntegerField()
    date_paid = models.DateField(null=True, blank=True)

    class Meta:
        db_table = "billing_membershipfee"
        constraints = [models.UniqueConstraint(fields=["comrade", "year"], name="one_fee_a_year")]


class ListingVersion(models.Model):
    """A counter bumped on every member save or delete: the whole-listing ETag's source."""

    version = models.BigIntegerField(default=1)

    class Meta:
        db_table = "membership_listing_version"
