"""Action Builder API v1 simulator: the documented endpoints and shapes, served over real HTTP.

Shapes follow shared/reference/action-builder-api.md: HAL+JSON, ``osdi:people`` / ``osdi:tags`` /
``osdi:taggings`` and ``action_builder:campaigns`` / ``action_builder:connections`` embedded keys,
25-per-page cap, ``total_pages``, ``_embedded`` omitted on empty results, ``OSDI-API-Token`` auth,
``filter=modified_date gt '...'`` on people, 4 requests/second answered with 429 + Retry-After.

The Person Signup Helper (``POST /campaigns/{c}/people``) updates a person named by their
``action_builder:`` identifier or creates one, and adds the ``add_tags`` that match an existing
section, field and response; see ``_signup`` for what it does where the documentation is silent.
"""

from __future__ import annotations

import json
import math
import operator
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Any

from .action_builder_seed import CampaignData, SeedConfig, generate_campaign, iso, parse_ts
from .http import Request, Response, SimulatedService, SimulatorServer, TokenBucket, json_error

API_PREFIX = "/api/rest/v1"
UNIT_SIDE_VARIANTS = ("same", "reversed_label", "empty")
MAX_PAGE = 25
DEFAULT_TOKEN = "simulated-action-builder-token"

_FILTER_CLAUSE = re.compile(r"^\s*([\w:]+)\s+(eq|ne|gt|ge|lt|le)\s+'((?:[^']|'')*)'\s*$")
_FILTERABLE_DATES = {"modified_date": "modified", "created_date": "created"}
_OPS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


class SlidingWindowLimiter:
    """A stricter limiter than a token bucket: at most ``limit`` requests in any ``window``
    seconds, and one request over it blocks *every* request for ``penalty`` seconds (answered
    429 with that Retry-After). Whether Action Builder behaves so is not documented; a client
    must survive it."""

    def __init__(self, limit: int = 4, window: float = 1.0, penalty: float = 10.0):
        self.limit, self.window, self.penalty = limit, window, penalty
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0
        self._lock = threading.Lock()
        self.penalties = 0

    def take(self) -> float:
        with self._lock:
            now = time.monotonic()
            if now < self._blocked_until:
                return self._blocked_until - now
            while self._sent and self._sent[0] <= now - self.window:
                self._sent.popleft()
            if len(self._sent) >= self.limit:
                self._blocked_until = now + self.penalty
                self.penalties += 1
                return self.penalty
            self._sent.append(now)
            return 0.0


class SharedBudget:
    """Another tool using the same API key: it spends ``other_rate`` requests/second of the
    server's limiter (Action Builder issues one key per organization)."""

    def __init__(self, inner: Any, other_rate: float = 1.0):
        self.inner = inner
        self.other_rate = other_rate
        self.other_requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._other_client, name="other-ab-client", daemon=True)
        self._thread.start()

    def _other_client(self) -> None:
        while not self._stop.wait(1.0 / self.other_rate):
            self.inner.take()
            self.other_requests += 1

    def take(self) -> float:
        return self.inner.take()

    def close(self) -> None:
        self._stop.set()


def make_limiter(kind: str, rate: float = 4.0) -> Any:
    """Server-side limiters: ``plain`` (token bucket, burst = rate), ``strict`` (sliding window,
    10 s block on excess), ``shared`` (token bucket, another client spending 1 req/s of it)."""
    if kind == "plain":
        return TokenBucket(rate)
    if kind == "strict":
        return SlidingWindowLimiter(limit=max(1, int(rate)), window=1.0, penalty=10.0)
    if kind == "shared":
        return SharedBudget(TokenBucket(rate), other_rate=1.0)
    raise ValueError(f"limiter must be plain, strict or shared, not {kind!r}")


class ActionBuilderSimulator(SimulatedService):
    """In-memory campaign + HTTP front end. Thread-safe; state can be saved between runs."""

    def __init__(
        self,
        data: CampaignData | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        rate_limit: float | None = 4.0,
        burst: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tagging_tag_links: bool = False,
        latency: float = 0.0,
        limiter: Any = None,
        unit_side_connections: str = "same",
    ):
        self.data = data or generate_campaign(SeedConfig())
        self.token = token
        # Whether taggings carry an osdi:tag link is undocumented; off by default so the client
        # must resolve tag ids the safe way (from the campaign's tag catalog).
        self.tagging_tag_links = tagging_tag_links
        # What a unit's own connection listing shows is not documented either: "same" (every
        # member's connection, same type label), "reversed_label" ("Units + People"), "empty".
        if unit_side_connections not in UNIT_SIDE_VARIANTS:
            raise ValueError(f"unit_side_connections must be one of {UNIT_SIDE_VARIANTS}")
        self.unit_side_connections = unit_side_connections
        self._lock = threading.RLock()
        self._index()
        self.server = SimulatorServer(
            self.handle,
            name="action_builder",
            host=host,
            port=port,
            rate_limit=rate_limit,
            burst=burst,
            latency=latency,
        )
        if limiter is not None:  # a stricter or shared limiter instead of the token bucket
            self.server.bucket = limiter

    def stop(self) -> None:
        super().stop()
        close = getattr(self.server.bucket, "close", None)
        if close is not None:
            close()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.server.url + API_PREFIX

    @property
    def credentials_json(self) -> str:
        return json.dumps({"api_token": self.token, "subdomain": self.data.subdomain})

    # -- indexes ------------------------------------------------------------------------------

    def _index(self) -> None:
        d = self.data
        self._conns_by_entity: dict[str, list[str]] = defaultdict(list)
        for cid, c in d.connections.items():
            self._conns_by_entity[c["a"]].append(cid)
            self._conns_by_entity[c["b"]].append(cid)
        self._taggings_by_item: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._taggings_by_tag: dict[str, list[str]] = defaultdict(list)
        for tgid, t in d.taggings.items():
            self._taggings_by_item[(t["item_type"], t["item_id"])].append(tgid)
            self._taggings_by_tag[t["tag_id"]].append(tgid)

    # -- direct (test) helpers ---------------------------------------------------------------------

    def taggings_of(self, item_type: str, item_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self.data.taggings[t] for t in self._taggings_by_item.get((item_type, item_id), [])]

    def tagging_exists(self, tagging_id: str) -> bool:
        with self._lock:
            return tagging_id in self.data.taggings

    def add_tagging(self, item_type: str, item_id: str, tag_id: str, tagging_id: str) -> None:
        with self._lock:
            self.data.taggings[tagging_id] = {
                "id": tagging_id,
                "tag_id": tag_id,
                "item_type": item_type,
                "item_id": item_id,
                "created": iso(datetime.now(UTC)),
            }
            self._taggings_by_item[(item_type, item_id)].append(tagging_id)
            self._taggings_by_tag[tag_id].append(tagging_id)

    def remove_person(self, entity_id: str) -> None:
        """The person is removed from the campaign (``DELETE /people/{id}``), taggings with it."""
        with self._lock:
            del self.data.entities[entity_id]
            self.data.entity_order.remove(entity_id)
            for tgid in list(self._taggings_by_item.get(("person", entity_id), [])):
                self._drop_tagging(tgid)

    def remove_tag(self, tag_id: str) -> None:
        """A tag (field response) deleted from the campaign (``DELETE /tags/{id}``), taggings with it."""
        with self._lock:
            for tgid in list(self._taggings_by_tag.get(tag_id, [])):
                self._drop_tagging(tgid)
            del self.data.tags[tag_id]
            self.data.tag_order.remove(tag_id)

    def _drop_tagging(self, tgid: str) -> None:
        t = self.data.taggings.pop(tgid)
        self._taggings_by_item[(t["item_type"], t["item_id"])].remove(tgid)
        self._taggings_by_tag[t["tag_id"]].remove(tgid)

    def touch(self, entity_id: str, when: datetime | None = None) -> None:
        with self._lock:
            self.data.entities[entity_id]["modified"] = iso(when or datetime.now(UTC))

    # -- HAL rendering ---------------------------------------------------------------------------

    def _href(self, path: str) -> str:
        return f"{self.base_url}/campaigns/{self.data.campaign_id}{path}"

    def _entity_json(self, eid: str) -> dict[str, Any]:
        e = self.data.entities[eid]
        out: dict[str, Any] = {
            "origin_system": "Action Builder",
            "identifiers": [*e.get("custom_ids", []), f"action_builder:{eid}"],
            "created_date": e["created"],
            "modified_date": e["modified"],
            "action_builder:entity_type": e["entity_type"],
            "browser_url": (
                f"https://{self.data.subdomain}.actionbuilder.org/entity/view/{e['browser_n']}"
                f"/profile?campaignId=1"
            ),
            "_links": {
                "self": {"href": self._href(f"/people/{eid}")},
                "action_builder:connections": {"href": self._href(f"/people/{eid}/connections")},
                "osdi:taggings": {"href": self._href(f"/people/{eid}/taggings")},
            },
        }
        if "name" in e:
            out["action_builder:name"] = e["name"]
        else:
            out["given_name"] = e.get("given_name")
            out["family_name"] = e.get("family_name")
        return out

    def _connection_json(self, cid: str, viewer: str) -> dict[str, Any]:
        c = self.data.connections[cid]
        other = c["b"] if c["a"] == viewer else c["a"]
        label = c["type"]
        if self.unit_side_connections == "reversed_label" and not self._is_person(viewer):
            label = " + ".join(reversed([part.strip() for part in label.split("+")]))
        return {
            "origin_system": "Action Builder",
            "identifiers": [f"action_builder:{cid}"],
            "created_date": c["created"],
            "modified_date": c.get("modified", c["created"]),
            "connection_type": label,
            "person_id": other,
            "inactive": c["inactive"],
            "_links": {
                "self": {"href": self._href(f"/people/{viewer}/connections/{cid}")},
                "osdi:person": {"href": self._href(f"/people/{other}")},
                "osdi:taggings": {"href": self._href(f"/connections/{cid}/taggings")},
            },
        }

    def _connection_type_json(self, name: str) -> dict[str, Any]:
        # connection_types.html: "connection[]" with the plural names of the two entity types.
        return {
            "origin_system": "Action Builder",
            "identifiers": [f"action_builder:{_stable_id('connection_type', name)}"],
            "name": name,
            "connection": [{"types": part.strip()} for part in name.split("+")],
        }

    def _entity_type_json(self, name: str) -> dict[str, Any]:
        # entity_types.html spells the singular name field "singular_nane".
        plural = "People" if name.lower() == "person" else f"{name}s"
        return {
            "origin_system": "Action Builder",
            "identifiers": [f"action_builder:{_stable_id('entity_type', name)}"],
            "singular_nane": name,
            "plural_name": plural,
            "name_type": "multi" if name.lower() == "person" else "single",
        }

    def _is_person(self, eid: str) -> bool:
        return self.data.entities[eid]["entity_type"].lower() == "person"

    def _tag_json(self, tid: str) -> dict[str, Any]:
        t = self.data.tags[tid]
        return {
            "origin_system": "Action Builder",
            "identifiers": [f"action_builder:{tid}"],
            "created_date": t["created"],
            "modified_date": t["created"],
            "name": t["name"],
            "action_builder:section": t["section"],
            "action_builder:field": t["field"],
            "action_builder:field_type": t["field_type"],
            "action_builder:locked": False,
            "action_builder:allow_multiple_responses": True,
            "_links": {
                "self": {"href": self._href(f"/tags/{tid}")},
                "osdi:taggings": {"href": self._href(f"/tags/{tid}/taggings")},
            },
        }

    def _tagging_json(self, tgid: str) -> dict[str, Any]:
        t = self.data.taggings[tgid]
        tag = self.data.tags[t["tag_id"]]
        links: dict[str, Any] = {"self": {"href": self._href(f"/tags/{t['tag_id']}/taggings/{tgid}")}}
        if self.tagging_tag_links:
            links["osdi:tag"] = {"href": self._href(f"/tags/{t['tag_id']}")}
        if t["item_type"] == "connection":
            conn = self.data.connections[t["item_id"]]
            links["action_builder:connection"] = {
                "href": self._href(f"/people/{conn['a']}/connections/{t['item_id']}")
            }
        else:
            links["osdi:person"] = {"href": self._href(f"/people/{t['item_id']}")}
        return {
            "origin_system": "Action Builder",
            "identifiers": [f"action_builder:{tgid}"],
            "created_date": t["created"],
            "modified_date": t["created"],
            "action_builder:section": tag["section"],
            "action_builder:field": tag["field"],
            "action_builder:name": tag["name"],
            "action_builder:field_type": tag["field_type"],
            "item_type": t["item_type"],
            "_links": links,
        }

    def _page(self, req: Request, key: str, items: list[Any], render, self_path: str, route: str) -> Response:
        try:
            page = int(req.query.get("page", "1"))
            per_page = min(int(req.query.get("per_page", str(MAX_PAGE))), MAX_PAGE)
        except ValueError:
            return json_error(400, "page and per_page must be integers", route)
        if page < 1 or per_page < 1:
            return json_error(400, "page and per_page must be positive", route)
        total_pages = math.ceil(len(items) / per_page)
        chunk = items[(page - 1) * per_page : page * per_page]
        body: dict[str, Any] = {
            "per_page": per_page,
            "page": page,
            "total_pages": total_pages,
            "_links": {"self": {"href": self._href(self_path)}},
        }
        if total_pages:
            body["_embedded"] = {key: [render(i) for i in chunk]}
        if page < total_pages:
            body["_links"]["next"] = {"href": self._href(f"{self_path}?page={page + 1}&per_page={per_page}")}
        return Response(body=body, route=route)

    # -- routing ---------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        if not req.path.startswith(API_PREFIX):
            return json_error(404, "Not found")
        if req.header("osdi-api-token") != self.token:
            return json_error(401, "Invalid or missing OSDI-API-Token", "unauthorized")
        path = req.path[len(API_PREFIX) :].rstrip("/")
        with self._lock:
            return self._route(req, path)

    def _route(self, req: Request, path: str) -> Response:
        d = self.data
        if path == "":
            return Response(body={"motd": "Action Builder simulator", "max_pagesize": MAX_PAGE}, route="aep")
        if path == "/campaigns":
            return self._page(
                req,
                "action_builder:campaigns",
                [d.campaign_id],
                lambda _: {
                    "identifiers": [f"action_builder:{d.campaign_id}"],
                    "name": d.campaign_name,
                },
                "",
                "campaigns",
            )
        m = re.fullmatch(r"/campaigns/([^/]+)(/.*)?", path)
        if not m:
            return json_error(404, "Not found")
        if m.group(1) != d.campaign_id:
            return json_error(404, "Campaign not found")
        rest = m.group(2) or ""
        if req.method == "DELETE":
            return self._delete(rest)
        if req.method == "POST" and rest == "/people":
            return self._signup(req)
        if req.method != "GET":
            return json_error(405, "Method not allowed")
        if rest == "":
            return Response(
                body={"identifiers": [f"action_builder:{d.campaign_id}"], "name": d.campaign_name},
                route="campaign",
            )
        if rest == "/people":
            try:
                ids = self._filter_people(req.query.get("filter"))
            except ValueError as exc:
                return json_error(400, str(exc), "people_page")
            return self._page(req, "osdi:people", ids, self._entity_json, "/people", "people_page")
        if rest == "/connection_types":
            return self._page(
                req,
                "action_builder:connection_types",
                sorted({c["type"] for c in d.connections.values()}),
                self._connection_type_json,
                "/connection_types",
                "connection_types",
            )
        if rest == "/entity_types":
            return self._page(
                req,
                "action_builder:entity_types",
                sorted({e["entity_type"] for e in d.entities.values()}),
                self._entity_type_json,
                "/entity_types",
                "entity_types",
            )
        if rest == "/tags":
            return self._page(req, "osdi:tags", list(d.tag_order), self._tag_json, "/tags", "tags_page")
        if mm := re.fullmatch(r"/people/([^/]+)", rest):
            if mm.group(1) not in d.entities:
                return json_error(404, "Entity not found", "entity")
            return Response(body=self._entity_json(mm.group(1)), route="entity")
        if mm := re.fullmatch(r"/people/([^/]+)/connections", rest):
            eid = mm.group(1)
            if eid not in d.entities:
                return json_error(404, "Entity not found", "connections")
            listed = list(self._conns_by_entity.get(eid, []))
            if self.unit_side_connections == "empty" and not self._is_person(eid):
                listed = []
            return self._page(
                req,
                "action_builder:connections",
                listed,
                lambda cid: self._connection_json(cid, eid),
                f"/people/{eid}/connections",
                "connections",
            )
        if mm := re.fullmatch(r"/people/([^/]+)/taggings", rest):
            eid = mm.group(1)
            if eid not in d.entities:
                return json_error(404, "Entity not found", "person_taggings")
            return self._page(
                req,
                "osdi:taggings",
                list(self._taggings_by_item.get(("person", eid), [])),
                self._tagging_json,
                f"/people/{eid}/taggings",
                "person_taggings",
            )
        if mm := re.fullmatch(r"/connections/([^/]+)/taggings", rest):
            cid = mm.group(1)
            if cid not in d.connections:
                return json_error(404, "Connection not found", "connection_taggings")
            return self._page(
                req,
                "osdi:taggings",
                list(self._taggings_by_item.get(("connection", cid), [])),
                self._tagging_json,
                f"/connections/{cid}/taggings",
                "connection_taggings",
            )
        if mm := re.fullmatch(r"/tags/([^/]+)", rest):
            if mm.group(1) not in d.tags:
                return json_error(404, "Tag not found", "tag")
            return Response(body=self._tag_json(mm.group(1)), route="tag")
        if mm := re.fullmatch(r"/tags/([^/]+)/taggings", rest):
            tid = mm.group(1)
            if tid not in d.tags:
                return json_error(404, "Tag not found", "tag_taggings_page")
            return self._page(
                req,
                "osdi:taggings",
                list(self._taggings_by_tag.get(tid, [])),
                self._tagging_json,
                f"/tags/{tid}/taggings",
                "tag_taggings_page",
            )
        return json_error(404, "Not found")

    def _filter_people(self, expr: str | None) -> list[str]:
        ids = list(self.data.entity_order)
        if not expr:
            return ids
        for clause in re.split(r"\s+and\s+", expr.strip()):
            m = _FILTER_CLAUSE.match(clause)
            if not m:
                raise ValueError(f"Unsupported filter: {clause!r}")
            fname, op, raw = m.group(1), m.group(2), m.group(3).replace("''", "'")
            if fname not in _FILTERABLE_DATES:
                raise ValueError(f"Unsupported filter field: {fname}")
            try:
                bound = parse_ts(raw if "T" in raw else raw + "T00:00:00Z")
            except ValueError as exc:
                raise ValueError(f"Invalid date in filter: {raw!r}") from exc
            if bound.tzinfo is None:
                bound = bound.replace(tzinfo=UTC)
            key = _FILTERABLE_DATES[fname]
            compare = _OPS[op]
            ids = [i for i in ids if compare(parse_ts(self.data.entities[i][key]), bound)]
        return ids

    def _delete(self, rest: str) -> Response:
        m = re.fullmatch(r"/tags/([^/]+)/taggings/([^/]+)", rest) or re.fullmatch(
            r"/people/([^/]+)/taggings/([^/]+)", rest
        )
        if not m:
            return json_error(405, "Method not allowed")
        owner, tgid = m.group(1), m.group(2)
        t = self.data.taggings.get(tgid)
        by_tag = rest.startswith("/tags/")
        if t is None or (by_tag and t["tag_id"] != owner) or (not by_tag and t["item_id"] != owner):
            return json_error(404, "Tagging not found", "delete_tagging")
        self._drop_tagging(tgid)
        # The per-person DELETE path is UNCERTAIN (reference §1.2): counted apart, so tests can
        # tell that only the documented /tags/{tag}/taggings/{tagging} path is used.
        return Response(
            body={"message": "Tag has been removed from Taggable Logbook"},
            route="delete_tagging" if by_tag else "delete_person_tagging_uncertain",
        )

    # -- Person Signup Helper ---------------------------------------------------------------------

    def _signup(self, req: Request) -> Response:
        """``POST /people``: ``{"person": {...}, "add_tags": [...]}`` (person_signup_helper.html).

        Documented: an update names the person by their Action Builder identifier; a new person
        needs ``given_name`` (or ``name``) and ``action_builder:entity_type``; ``add_tags`` that
        match no existing section, field and response are ignored unless
        ``action_builder:create_tag`` is true; the answer is the person wrapped in ``{"person"}``.

        Where the documentation is silent this is the strictest plausible behaviour:
        an ``action_builder:`` identifier that names no entity of the campaign (never existed, or
        removed) is a 404 and nothing is created or tagged; a malformed body or tag entry is a
        400 and nothing changes; ``remove_tags`` (UNCERTAIN: documented in the changelog, yet
        answered with a 500 per ccef) is a 500 and nothing changes; adding a response the
        person already carries adds no second tagging.
        """
        route = "person_signup"
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            return json_error(400, "Body is not valid JSON", route)
        person = body.get("person") if isinstance(body, dict) else None
        if not isinstance(person, dict):
            return json_error(400, "A person object is required", route)
        if "remove_tags" in body:
            return json_error(500, "Internal Server Error", route)
        add_tags = body.get("add_tags", [])
        if not isinstance(add_tags, list) or not all(isinstance(t, dict) for t in add_tags):
            return json_error(400, "add_tags must be a list of objects", route)
        tags = []
        for entry in add_tags:
            keys = (entry.get("action_builder:section"), entry.get("action_builder:field"))
            value = entry.get("name", entry.get("action_builder:name"))
            if not all(isinstance(v, str) and v for v in (*keys, value)):
                return json_error(
                    400, "each tag needs action_builder:section, action_builder:field, name", route
                )
            tags.append((keys[0], keys[1], value, entry.get("action_builder:create_tag") is True))
        identifiers = person.get("identifiers") or []
        if not isinstance(identifiers, list):
            return json_error(400, "identifiers must be a list", route)
        native = [
            i[len("action_builder:") :]
            for i in identifiers
            if isinstance(i, str) and i.startswith("action_builder:")
        ]
        if native:
            eid = native[0]
            if eid not in self.data.entities:
                return json_error(404, "Entity not found", route)
            status = 200
        else:
            entity_type = person.get("action_builder:entity_type")
            name = person.get("given_name") or person.get("name") or person.get("action_builder:name")
            if not (isinstance(entity_type, str) and entity_type and isinstance(name, str) and name):
                return json_error(400, "A new entity needs a name and action_builder:entity_type", route)
            eid = self._create_entity(entity_type, person)
            status = 201
        for section, fname, value, create in tags:
            tid = self._tag_for(section, fname, value, create)
            if tid is None:
                continue  # documented: tags that match no existing field and response are ignored
            held = {self.data.taggings[t]["tag_id"] for t in self._taggings_by_item.get(("person", eid), [])}
            if tid not in held:
                self.add_tagging("person", eid, tid, str(uuid.uuid4()))
        self.data.entities[eid]["modified"] = iso(datetime.now(UTC))
        return Response(status=status, body={"person": self._entity_json(eid)}, route=route)

    def _tag_for(self, section: str, fname: str, value: str, create: bool) -> str | None:
        for tid, t in self.data.tags.items():
            if (t["section"], t["field"], t["name"]) == (section, fname, value):
                return tid
        if not create:
            return None
        tid = str(uuid.uuid4())
        now = iso(datetime.now(UTC))
        self.data.tags[tid] = {
            "id": tid,
            "section": section,
            "field": fname,
            "name": value,
            "field_type": "standard",
            "created": now,
        }
        self.data.tag_order.append(tid)
        return tid

    def _create_entity(self, entity_type: str, person: dict[str, Any]) -> str:
        eid = str(uuid.uuid4())
        now = iso(datetime.now(UTC))
        names = {k: person[k] for k in ("given_name", "family_name") if isinstance(person.get(k), str)}
        if not names:
            names = {"name": person.get("name") or person.get("action_builder:name")}
        self.data.entities[eid] = {
            "id": eid,
            "entity_type": entity_type,
            "created": now,
            "modified": now,
            "browser_n": 90000 + len(self.data.entities),
            "custom_ids": [],
            **names,
        }
        self.data.entity_order.append(eid)
        return eid


def _stable_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{name}"))
