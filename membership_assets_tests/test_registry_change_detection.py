"""The polling sensor's change detection sees every kind of member change, with any ETag style.

A DRF-like listing served here (not the simulator) so each ETag style is exactly what a Django
deployment sends: none, ConditionalGetMiddleware's per-page hash of the body, or a whole-list
ETag that changes with any member.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math

import dagster as dg
import pytest

from membership_assets.registry.client import DjangoRegistryClient
from membership_assets.registry.resources import DjangoRegistryResource
from membership_assets.simulators.django_registry import generate_registry
from membership_assets.simulators.http import Request, Response, SimulatorServer

TOKEN = "listing-token"


class Listing:
    """``/api/members/eligible`` with DRF pagination and one of three ETag styles."""

    def __init__(self, members: list[dict], etag: str):
        self.members = members
        self.etag = etag  # "none" | "page" | "whole"
        self.version = 1
        self.requests = 0
        self.server = SimulatorServer(self.handle, name="listing")

    def handle(self, req: Request) -> Response:
        self.requests += 1
        if req.header("authorization") != f"Token {TOKEN}":
            return Response(status=401, body={"detail": "Invalid token."})
        size = int(req.query.get("page_size", 100))
        page = int(req.query.get("page", 1))
        pages = max(1, math.ceil(len(self.members) / size))

        def link(p):
            return (
                f"{self.server.url}/api/members/eligible/?page={p}&page_size={size}"
                if 1 <= p <= pages
                else None
            )

        body = {
            "count": len(self.members),
            "next": link(page + 1),
            "previous": link(page - 1),
            "results": self.members[(page - 1) * size : page * size],
        }
        encoded = json.dumps(body).encode()
        tag = {
            "none": None,
            "page": f'"{hashlib.md5(encoded).hexdigest()}"',  # what ConditionalGetMiddleware sends
            "whole": f'"members-v{self.version}"',
        }[self.etag]
        headers = {"ETag": tag} if tag else {}
        if tag and req.header("if-none-match") == tag:
            return Response(status=304, headers=headers)
        return Response(body=encoded, headers=headers)

    def change(self, mutate) -> None:
        mutate(self.members)
        self.version += 1


def _email(ms):
    ms[3]["email"] = "changed.address@example.is"


def _status(ms):  # the fee went unpaid
    ms[-2]["status"] = "unpaid"


def _join_and_leave(ms):
    newcomer = copy.deepcopy(ms[7])
    newcomer["kennitala"], newcomer["name"] = "0101302989", "Ný Félagsdóttir"
    del ms[1200]
    ms.append(newcomer)


def _name(ms):
    ms[1500]["name"] = "Anna Endurnefnd"


CHANGES = {"email": _email, "status_fee": _status, "join_and_leave": _join_and_leave, "name": _name}


@pytest.fixture(params=["none", "page", "whole"])
def listing(request):
    data = generate_registry(2273, seed=3, invalid=False)
    lst = Listing(data.members, etag=request.param)
    with lst.server:
        yield lst


def _client(listing: Listing) -> DjangoRegistryClient:
    return DjangoRegistryClient.connect(
        base_url=listing.server.url, api_key=TOKEN, page_size=500, rate_limit=5000, sleep=lambda s: None
    )


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_every_kind_of_change_is_seen(listing, kind):
    whole = listing.etag == "whole"
    client = _client(listing)
    marker, _ = client.change_marker(None, whole_list_etag=whole)
    again, changed = client.change_marker(marker, whole_list_etag=whole)
    assert not changed and again == marker
    listing.change(CHANGES[kind])
    after, changed = client.change_marker(marker, whole_list_etag=whole)
    assert changed, f"{kind} not seen with ETag style {listing.etag}"
    assert not client.change_marker(after, whole_list_etag=whole)[1]


def test_cost_per_tick(listing):
    """2,273 members at 500 per page: 5 requests per tick; 1 with a whole-list ETag."""
    whole = listing.etag == "whole"
    client = _client(listing)
    marker, _ = client.change_marker(None, whole_list_etag=whole)
    listing.requests = 0
    client.change_marker(marker, whole_list_etag=whole)
    assert listing.requests == (1 if whole else 5)
    if listing.etag == "page":  # unchanged pages answer 304, without a body
        assert client.stats.by_status[304] == 5


def test_whole_list_etag_setting_without_an_etag_falls_back_to_hashing():
    data = generate_registry(120, seed=4, invalid=False)
    lst = Listing(data.members, etag="none")
    with lst.server:
        client = _client(lst)
        marker, _ = client.change_marker(None, whole_list_etag=True)
        lst.change(_email)
        assert client.change_marker(marker, whole_list_etag=True)[1]


def test_the_polling_sensor_starts_a_sync_for_an_email_change():
    from membership_assets.registry.automation import django_members_changed

    data = generate_registry(700, seed=8, invalid=False)
    lst = Listing(data.members, etag="page")
    with lst.server, dg.DagsterInstance.ephemeral() as instance:
        django = DjangoRegistryResource(base_url=lst.server.url, api_key=TOKEN, rate_limit=5000)

        def tick(cursor):
            ctx = dg.build_sensor_context(cursor=cursor, instance=instance, resources={"django": django})
            return django_members_changed(ctx), ctx.cursor

        result, cursor = tick(None)
        assert isinstance(result, dg.SkipReason)
        result, cursor = tick(cursor)
        assert isinstance(result, dg.SkipReason) and "unchanged" in result.skip_message
        lst.change(_email)  # same count, not on the first page
        result, _ = tick(cursor)
        assert isinstance(result, dg.RunRequest) and result.tags["membership/source"] == "sensor"


STANDIN_CHANGES = {
    "email": lambda sim, kts: sim.update(kts[3], email="changed.address@example.is"),
    "status_fee": lambda sim, kts: sim.update(kts[-2], status="unpaid"),
    "join_and_leave": lambda sim, kts: (
        sim.remove(kts[400]),
        sim.add(
            {
                "kennitala": "0101302989",
                "name": "Ný Félagsdóttir",
                "email": "ny@example.is",
                "status": "active",
            }
        ),
    ),
    "name": lambda sim, kts: sim.update(kts[600], name="Anna Endurnefnd"),
}


@pytest.mark.parametrize("etag", ["middleware", False])
@pytest.mark.parametrize("kind", sorted(STANDIN_CHANGES))
def test_every_kind_of_change_is_seen_on_the_django_standin(etag, kind):
    """The same against the project's real Django + DRF registry (ConditionalGetMiddleware or no ETag)."""
    from membership_assets.simulators.django_registry import DjangoRegistrySimulator

    data = generate_registry(700, seed=9, invalid=False)
    with DjangoRegistrySimulator(data, etag=etag) as sim:
        client = DjangoRegistryClient.connect(
            base_url=sim.base_url, api_key=sim.token, page_size=500, rate_limit=5000, sleep=lambda s: None
        )
        marker, _ = client.change_marker(None)
        assert not client.change_marker(marker)[1]
        kts = [str(m["kennitala"]).replace("-", "") for m in sim.data.members]
        STANDIN_CHANGES[kind](sim, kts)
        assert client.change_marker(marker)[1], f"{kind} not seen with ETag {etag}"
