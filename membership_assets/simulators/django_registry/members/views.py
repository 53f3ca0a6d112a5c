"""The registry's API, as Ekklesia's Django REST framework code serves it."""

from __future__ import annotations

from typing import Any

from django.utils.cache import get_conditional_response
from rest_framework import permissions, viewsets
from rest_framework.authentication import TokenAuthentication
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from .. import runtime
from .models import Comrade, ListingVersion
from .planting import listed
from .serializers import ComradeFullSerializer, EligibleMemberSerializer, PlainMemberSerializer


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <key>``: seed 002's planned API."""

    keyword = "Bearer"


class MemberPagination(PageNumberPagination):
    """Ekklesia's ``MemberFullPagination`` (100 a page, ``page_size`` up to 500)."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500

    def __init__(self) -> None:
        stand_in = runtime.current()
        self.page_size = stand_in.default_page_size
        self.max_page_size = stand_in.max_page_size


class StandInAuthMixin:
    def get_authenticators(self) -> list[Any]:
        scheme = runtime.current().auth_scheme
        return [BearerTokenAuthentication() if scheme == "Bearer" else TokenAuthentication()]


class EligibleMemberViewSet(StandInAuthMixin, viewsets.ReadOnlyModelViewSet):
    """``/api/members/eligible/``: members not soft-deleted, with their derived status."""

    serializer_class = EligibleMemberSerializer
    pagination_class = MemberPagination
    permission_classes = [permissions.IsAuthenticated]

    def get_queryset(self) -> Any:
        return listed()

    def list(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        stand_in = runtime.current()
        etag = None
        if stand_in.etag_mode == "listing":
            # A whole-listing ETag, as a Django project computes one with a version counter.
            version = ListingVersion.objects.get(pk=1).version
            etag = f'"members-v{version}-{self.get_queryset().count()}"'
            not_modified = get_conditional_response(request, etag=etag)
            if not_modified is not None:
                not_modified["ETag"] = etag
                return not_modified
        if stand_in.shape == "plain":
            response = Response({"members": PlainMemberSerializer(self.get_queryset(), many=True).data})
        else:
            response = super().list(request, *args, **kwargs)
        if etag:
            response["ETag"] = etag
        return response


class ComradeFullViewSet(StandInAuthMixin, viewsets.ReadOnlyModelViewSet):
    """Ekklesia's real ``/felagar/api/full/``: every comrade, soft-deleted too, no status field."""

    serializer_class = ComradeFullSerializer
    pagination_class = MemberPagination
    permission_classes = [permissions.IsAdminUser]

    def get_queryset(self) -> Any:
        return Comrade.objects.select_related("contact_info").order_by("id")
