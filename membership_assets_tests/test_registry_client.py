"""The Django registry client against the simulator: shapes, completeness, auth, change marker."""

from __future__ import annotations

import json

import pytest

from membership_assets.connectors.errors import AuthError, BadResponseError, IncompleteListingError
from membership_assets.registry.client import DjangoRegistryClient
from membership_assets.simulators.django_registry import DjangoRegistrySimulator, generate_registry


def connect(sim, **kw) -> DjangoRegistryClient:
    kw.setdefault("page_size", 50)
    kw.setdefault("max_attempts", 2)
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("auth_scheme", sim.auth_scheme)
    return DjangoRegistryClient.connect(base_url=sim.base_url, api_key=sim.token, rate_limit=5000, **kw)


@pytest.mark.parametrize("members, pages", [(0, 1), (49, 1), (50, 1), (51, 2), (230, 5)])
def test_paginated_listing_is_complete(members, pages):
    data = generate_registry(members, invalid=False)
    with DjangoRegistrySimulator(data) as sim:
        client = connect(sim)
        listing = client.fetch_members()
    assert listing.shape == "paginated" and listing.pages == pages
    assert [r["kennitala"] for r in listing.rows] == [m["kennitala"] for m in data.members]
    assert [r["row_number"] for r in listing.rows] == list(range(1, members + 1))


def test_plain_members_shape_and_bearer_auth():
    data = generate_registry(30, invalid=False)
    with DjangoRegistrySimulator(data, shape="plain", auth_scheme="Bearer") as sim:
        listing = connect(sim).fetch_members()
    assert listing.shape == "plain" and len(listing.rows) == 30 and listing.declared_count is None


def test_a_truncated_page_is_an_error_not_fewer_members(django_sim):
    def drop_one(body):
        body["results"].pop()
        return body

    django_sim.faults.add(path_pattern=r"page=3", mutate=drop_one, times=None)
    n = len(django_sim.data.members)
    with pytest.raises(IncompleteListingError, match=f"declared {n} members but listed {n - 1}"):
        connect(django_sim).fetch_members()


def test_count_changing_while_paging_is_an_error(django_sim):
    def grow(body):
        body["count"] += 1
        return body

    django_sim.faults.add(path_pattern=r"page=2", mutate=grow, times=None)
    with pytest.raises(IncompleteListingError, match="changed"):
        connect(django_sim).fetch_members()


def test_an_empty_page_that_promises_more_is_an_error(django_sim):
    def empty(body):
        body["results"] = []
        return body

    django_sim.faults.add(path_pattern=r"page=2", mutate=empty, times=None)
    with pytest.raises(IncompleteListingError, match="empty but names a next page"):
        connect(django_sim).fetch_members()


def test_malformed_body_is_retried_then_reported(django_sim):
    django_sim.faults.add(path_pattern="eligible", truncate_body=True, times=1)
    assert len(connect(django_sim).fetch_members().rows) == len(django_sim.data.members)
    django_sim.faults.add(path_pattern="eligible", body={"unexpected": True}, status=200, times=None)
    with pytest.raises(BadResponseError, match="neither 'results' nor 'members'"):
        connect(django_sim).fetch_members()


def test_expired_token_fails_at_once_with_a_clear_error(django_sim):
    client = DjangoRegistryClient.connect(base_url=django_sim.base_url, api_key="expired", rate_limit=5000)
    with pytest.raises(AuthError, match="credentials rejected"):
        client.fetch_members()
    assert client.stats.requests == 1


def test_5xx_storm_then_success(django_sim):
    django_sim.faults.add(path_pattern="eligible", status=503, retry_after="0", times=3)
    assert len(connect(django_sim, max_attempts=5).fetch_members().rows) == len(django_sim.data.members)


def test_change_marker_uses_a_whole_list_etag_and_304(django_sim):
    # The simulator's ETag is derived from its data version: it covers the whole list.
    client = connect(django_sim)
    marker, changed = client.change_marker(None, whole_list_etag=True)
    assert changed and json.loads(marker)["etag"].startswith('"members-v')
    assert client.change_marker(marker, whole_list_etag=True) == (marker, False)
    assert django_sim.requests.by_route["not_modified"] == 1
    django_sim.update(django_sim.data.truth.valid_kennitalas[0], email="new@example.is")
    new, changed = client.change_marker(marker, whole_list_etag=True)
    assert changed and new != marker


def test_change_marker_without_etag_digests_the_whole_listing(registry_data):
    with DjangoRegistrySimulator(registry_data, etag=False) as sim:
        client = connect(sim)
        marker, _ = client.change_marker(None)
        assert json.loads(marker)["digest"] and client.change_marker(marker) == (marker, False)
        sim.add({"kennitala": "1201743399", "name": "New", "email": None, "status": "active"})
        assert client.change_marker(marker)[1] is True


def test_the_django_api_password_is_sent_as_the_token(django_sim, monkeypatch, tmp_path):
    """DJANGO_API_PASSWORD (the {NAME}_PASSWORD convention) authenticates as `Token <pw>`: no
    `:pw@` in a URL without a user, no Basic auth replacing the token."""
    from membership_assets.definitions import resources_for

    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("DJANGO_API_URL", django_sim.base_url)
    monkeypatch.setenv("DJANGO_API_PASSWORD", django_sim.token)
    import dagster as dg

    with dg.build_resources({"django": resources_for("local")["django"]}) as resources:
        client = resources.django.open_client()
    try:
        assert client.api.session.auth is None
        assert client.api.session.headers["Authorization"] == f"Token {django_sim.token}"
        assert "@" not in client.api.base_url
        assert len(client.fetch_members().rows) == len(django_sim.data.members)
    finally:
        client.api.close()


def test_a_user_in_the_url_keeps_basic_auth_and_no_token_is_a_clear_error(django_sim):
    from membership_assets.connectors.errors import AuthError
    from membership_assets.registry.resources import DjangoRegistryResource

    with_user = DjangoRegistryResource(
        base_url=django_sim.base_url.replace("://", "://sync@"), password="pw", api_key="key"
    )
    url, token = with_user.credentials()
    assert token == "key" and "sync:pw@" in url
    with pytest.raises(AuthError, match="DJANGO_API_PASSWORD"):
        DjangoRegistryResource(base_url=django_sim.base_url).credentials()
