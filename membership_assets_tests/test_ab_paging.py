"""Paging can never silently truncate: edge cases against the simulator over real HTTP."""

from __future__ import annotations

import pytest

from membership_assets.action_builder.client import ActionBuilderClient, Listing, native_id, parse_page
from membership_assets.connectors.errors import BadResponseError, IncompleteListingError
from membership_assets.simulators.action_builder import ActionBuilderSimulator
from membership_assets.simulators.action_builder_seed import CampaignData


def campaign_with_entities(n: int) -> CampaignData:
    data = CampaignData(campaign_id="camp-1", campaign_name="Test", subdomain="test")
    for i in range(n):
        eid = f"person-{i:05d}"
        data.entities[eid] = {
            "id": eid,
            "entity_type": "Person",
            "given_name": f"G{i}",
            "family_name": f"F{i}",
            "created": "2026-01-01T00:00:00.000Z",
            "modified": "2026-01-01T00:00:00.000Z",
            "browser_n": i,
            "custom_ids": [],
        }
        data.entity_order.append(eid)
    return data


def people_page(n: int) -> str:
    """Fault pattern for page ``n`` of the people listing (not per_page=25)."""
    return rf"/people\?(.*&)?page={n}(&|$)"


def client_for(sim: ActionBuilderSimulator, **kw) -> ActionBuilderClient:
    kw.setdefault("rate_limit", 5000)
    kw.setdefault("sleep", lambda s: None)
    return ActionBuilderClient.connect(
        api_token=sim.token, base_url=sim.base_url, campaign_id=sim.data.campaign_id, **kw
    )


@pytest.mark.parametrize(
    "entities, pages",
    [(0, 1), (1, 1), (24, 1), (25, 1), (26, 2), (50, 2), (51, 3), (130, 6)],
)
def test_listing_returns_every_entity_with_the_fewest_requests(entities, pages):
    with ActionBuilderSimulator(campaign_with_entities(entities), rate_limit=None) as sim:
        client = client_for(sim)
        people = client.list_people()
        assert [native_id(p) for p in people] == sim.data.entity_order
        assert client.stats.requests == pages
        assert sim.requests.by_route["people_page"] == pages


def test_empty_listing_omits_embedded_and_reports_zero_pages():
    with ActionBuilderSimulator(campaign_with_entities(0), rate_limit=None) as sim:
        client = client_for(sim)
        body = client.api.request_json("GET", f"campaigns/{sim.data.campaign_id}/people")
        assert body["total_pages"] == 0 and "_embedded" not in body
        assert client.list_people() == []


def test_concurrent_page_fetch_keeps_order():
    from concurrent.futures import ThreadPoolExecutor

    with ActionBuilderSimulator(campaign_with_entities(260), rate_limit=None) as sim:
        client = client_for(sim)
        with ThreadPoolExecutor(8) as pool:
            people = client.list_people(map_fn=lambda fn, xs: pool.map(fn, xs))
        assert [native_id(p) for p in people] == sim.data.entity_order


def _drop_last_item(body):
    body["_embedded"]["osdi:people"].pop()
    return body


def test_a_short_middle_page_is_retried_then_succeeds():
    with ActionBuilderSimulator(campaign_with_entities(60), rate_limit=None) as sim:
        sim.faults.add(path_pattern=people_page(2), mutate=_drop_last_item, times=1)
        client = client_for(sim)
        assert len(client.list_people()) == 60
        assert client.stats.retries == 1


def test_a_persistently_short_page_fails_instead_of_truncating():
    with ActionBuilderSimulator(campaign_with_entities(60), rate_limit=None) as sim:
        sim.faults.add(path_pattern=people_page(2), mutate=_drop_last_item, times=None)
        client = client_for(sim, max_attempts=3)
        with pytest.raises(IncompleteListingError, match="page 2 of 3 is short"):
            client.list_people()


def test_an_empty_last_page_is_an_error():
    with ActionBuilderSimulator(campaign_with_entities(30), rate_limit=None) as sim:

        def empty(body):
            body["_embedded"]["osdi:people"] = []
            return body

        sim.faults.add(path_pattern=people_page(2), mutate=empty, times=None)
        with pytest.raises(IncompleteListingError, match="last page 2 of 2 is empty"):
            client_for(sim, max_attempts=2).list_people()


def test_wrong_embedded_key_is_an_error_not_an_empty_list():
    # ccef once read action_builder:tags instead of osdi:tags and silently got nothing.
    with ActionBuilderSimulator(campaign_with_entities(5), rate_limit=None) as sim:

        def rename(body):
            body["_embedded"] = {"action_builder:people": body["_embedded"]["osdi:people"]}
            return body

        sim.faults.add(path_pattern=r"/people", mutate=rename, times=None)
        with pytest.raises(BadResponseError, match=r"expected _embedded\['osdi:people'\]"):
            client_for(sim, max_attempts=2).list_people()


def test_missing_embedded_with_pages_left_is_an_error():
    with ActionBuilderSimulator(campaign_with_entities(5), rate_limit=None) as sim:

        def drop(body):
            body.pop("_embedded")
            return body

        sim.faults.add(path_pattern=r"/people", mutate=drop, times=None)
        with pytest.raises(BadResponseError, match="has no _embedded"):
            client_for(sim, max_attempts=2).list_people()


def test_page_count_shrinking_mid_listing_is_an_error():
    with ActionBuilderSimulator(campaign_with_entities(75), rate_limit=None) as sim:

        def shrink(body):
            body["total_pages"] = 2
            body["_links"].pop("next", None)
            return body

        sim.faults.add(path_pattern=people_page(3), mutate=shrink, times=None)
        with pytest.raises(IncompleteListingError):
            client_for(sim, max_attempts=2).list_people()


def test_page_count_growing_mid_listing_fetches_the_new_pages():
    data = campaign_with_entities(50)
    with ActionBuilderSimulator(data, rate_limit=None) as sim:

        def add_people(body):
            # Someone joins while we page: the server now reports 3 pages.
            for i in range(50, 60):
                eid = f"person-{i:05d}"
                if eid not in sim.data.entities:
                    sim.data.entities[eid] = dict(sim.data.entities["person-00000"], id=eid)
                    sim.data.entity_order.append(eid)
            body["total_pages"] = 3
            return body

        sim.faults.add(path_pattern=people_page(2), mutate=add_people, times=1)
        people = client_for(sim).list_people()
        assert len(people) == 60


def test_listing_without_total_pages_follows_next_links():
    with ActionBuilderSimulator(campaign_with_entities(55), rate_limit=None) as sim:

        def strip_total(body):
            body.pop("total_pages", None)
            return body

        sim.faults.add(path_pattern=r"/people", mutate=strip_total, times=None)
        client = client_for(sim)
        assert len(client.list_people()) == 55
        assert client.stats.requests == 3


def test_listing_without_total_pages_or_links_still_checks_the_page_after_a_full_one():
    with ActionBuilderSimulator(campaign_with_entities(50), rate_limit=None) as sim:

        def strip(body):
            body.pop("total_pages", None)
            body["_links"].pop("next", None)
            return body

        sim.faults.add(path_pattern=r"/people", mutate=strip, times=None)
        client = client_for(sim)
        assert len(client.list_people()) == 50
        assert client.stats.requests == 3  # page 3 is empty: only then is the list complete


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "expected a JSON object"),
        ({"total_pages": -1}, "total_pages"),
        ({"total_pages": "2"}, "total_pages"),
        ({"total_pages": 1, "page": 2, "_embedded": {"osdi:people": []}}, "server answered page 2"),
        ({"total_pages": 1, "_embedded": {"osdi:people": "x"}}, "not a list"),
        ({"total_pages": 1, "_embedded": {"osdi:people": [{}] * 26}}, "26 items on a page of 25"),
    ],
)
def test_parse_page_rejects_malformed_pages(body, message):
    with pytest.raises(BadResponseError, match=message):
        parse_page(body, "osdi:people", 1, 25)


def test_links_to_another_origin_are_refused(ab_sim):
    client = client_for(ab_sim)
    with pytest.raises(BadResponseError, match="another origin"):
        client.api.url_for("https://evil.example.com/api/rest/v1/campaigns")


def test_many_listings_are_read_together_and_each_completely():
    """Per-unit and per-tag reads: all first pages first, then every remaining page, none lost."""
    from concurrent.futures import ThreadPoolExecutor

    data = campaign_with_entities(200)
    sizes = {"person-00000": 0, "person-00001": 1, "person-00002": 25, "person-00003": 26, "person-00004": 60}
    others = iter(data.entity_order[10:])
    for hub, n in sizes.items():
        for _ in range(n):
            cid = f"conn-{len(data.connections):04d}"
            data.connections[cid] = {
                "id": cid,
                "a": next(others) if n < 60 else data.entity_order[10 + len(data.connections) % 190],
                "b": hub,
                "type": "People + Units",
                "inactive": False,
                "created": "2026-01-01T00:00:00.000Z",
            }
    with ActionBuilderSimulator(data, rate_limit=None) as sim:
        client = client_for(sim)
        one_by_one = {hub: client.list_connections(hub) for hub in sizes}
        assert {hub: len(c) for hub, c in one_by_one.items()} == sizes

        calls: list[int] = []
        fetch_page = client.fetch_page

        def recording(path, key, page, params, kind):
            calls.append(page)
            return fetch_page(path, key, page, params, kind)

        client.fetch_page = recording
        with ThreadPoolExecutor(8) as pool:
            together = client.fetch_listings(
                [client.connections_listing(hub) for hub in sizes], map_fn=lambda fn, xs: pool.map(fn, xs)
            )
        assert together == list(one_by_one.values())
        # 1 + 1 + 1 + 2 + 3 pages, and every first page before any later one.
        assert sorted(calls) == [1, 1, 1, 1, 1, 2, 2, 3]
        assert calls[:5] == [1] * 5


def test_a_listing_shrinking_among_many_is_an_error():
    from concurrent.futures import ThreadPoolExecutor

    with ActionBuilderSimulator(campaign_with_entities(60), rate_limit=None) as sim:

        def shrink(body):
            body["total_pages"] = 2
            return body

        sim.faults.add(path_pattern=people_page(3), mutate=shrink, times=None)
        client = client_for(sim, max_attempts=2)
        people = Listing(f"campaigns/{sim.data.campaign_id}/people", "osdi:people", "people_page")
        listings = [client.connections_listing("person-00000"), people]
        with ThreadPoolExecutor(4) as pool, pytest.raises(IncompleteListingError, match="shrank"):
            client.fetch_listings(listings, map_fn=lambda fn, xs: pool.map(fn, xs))
