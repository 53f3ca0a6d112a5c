"""DRF serializers: the eligible-members listing, the plain shape, and Ekklesia's full listing."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from .models import Comrade, ContactInfo
from .planting import EXTRA, RAW


class ServedAsPlanted(serializers.ModelSerializer):
    """Serves a planted row's overrides verbatim (``served_overrides``, stand-in only)."""

    # row key -> (served key, nested key or None); None: the listing has no such field
    keys: dict[str, tuple[str, str | None] | None] = {}

    def to_representation(self, instance: Comrade) -> dict[str, Any]:
        data = super().to_representation(instance)
        overrides = dict(instance.served_overrides or {})
        extra, raw = overrides.pop(EXTRA, {}), overrides.pop(RAW, {})
        for key, value in overrides.items():
            target = self.keys.get(key)
            if target is None:
                continue
            served, nested = target
            if nested is None:
                data[served] = value
            else:
                data[served] = {**(data.get(served) or {}), nested: value}
        for key in instance.served_omit or []:
            target = self.keys.get(key)
            if target is not None:
                data.pop(target[0], None)
        data.update(extra)
        data.update(raw)
        return data


class ContactEmailSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContactInfo
        fields = ["email"]


class EligibleMemberSerializer(ServedAsPlanted):
    """``id, ssn, name, contact_info{email}, status`` (status as Ekklesia derives it)."""

    keys = {
        "kennitala": ("ssn", None),
        "name": ("name", None),
        "email": ("contact_info", "email"),
        "status": ("status", None),
    }
    contact_info = ContactEmailSerializer(read_only=True, allow_null=True, required=False)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Comrade
        fields = ["id", "ssn", "name", "contact_info", "status"]

    def get_status(self, obj: Comrade) -> str:
        return obj.status(self.year)

    @cached_property
    def year(self) -> int:
        return timezone.localdate().year


class PlainMemberSerializer(ServedAsPlanted):
    """Seed 002's planned ``{members: [{kennitala, name, email, status}]}``."""

    keys = {
        "kennitala": ("kennitala", None),
        "name": ("name", None),
        "email": ("email", None),
        "status": ("status", None),
    }
    kennitala = serializers.CharField(source="ssn", read_only=True, allow_null=True)
    email = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()

    class Meta:
        model = Comrade
        fields = ["kennitala", "name", "email", "status"]

    def get_email(self, obj: Comrade) -> str | None:
        try:
            return obj.contact_info.email
        except ContactInfo.DoesNotExist:
            return None

    def get_status(self, obj: Comrade) -> str:
        return obj.status(self.year)

    @cached_property
    def year(self) -> int:
        return timezone.localdate().year


class ContactInfoSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContactInfo
        fields = ["pk", "phone", "email", "facebook"]


class ComradeFullSerializer(ServedAsPlanted):
    """Ekklesia's ``ComradeFullSerializer``: every comrade, soft-deleted ones too, no status."""

    keys = {"kennitala": ("ssn", None), "name": ("name", None), "email": ("contact_info", "email")}
    contact_info = ContactInfoSerializer(read_only=True, allow_null=True, required=False)
    unions = serializers.SerializerMethodField()
    titles = serializers.SerializerMethodField()
    local_address = serializers.SerializerMethodField()
    foreign_addresses = serializers.SerializerMethodField()
    housing_situation = serializers.SerializerMethodField()
    gender = serializers.SerializerMethodField()

    class Meta:
        model = Comrade
        fields = [
            "id",
            "name",
            "ssn",
            "birthday",
            "date_joined",
            "reachable",
            "groupable",
            "housing_situation",
            "gender",
            "contact_info",
            "unions",
            "titles",
            "local_address",
            "foreign_addresses",
        ]

    def get_unions(self, obj: Comrade) -> list:
        return []

    get_titles = get_foreign_addresses = get_unions

    def get_local_address(self, obj: Comrade) -> None:
        return None

    get_housing_situation = get_gender = get_local_address
