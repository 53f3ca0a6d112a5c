"""The preflight against the simulators configured right and wrong: each ✗ provoked, with its fix.

Stand-ins over real HTTP for what has no simulator: SendGrid's /v3/scopes and the webhook
receiver's /healthz + signed ping (the contract h5's receiver serves).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from membership_assets.preflight import PreflightSettings, run_preflight
from membership_assets.preflight.action_builder import check_action_builder
from membership_assets.preflight.core import FAIL, OK, SKIP, as_json, exit_code, render_table
from membership_assets.preflight.members_db import check_members_db
from membership_assets.preflight.registry import check_registry
from membership_assets.preflight.scratch import check_scratch
from membership_assets.preflight.sendgrid import check_sendgrid
from membership_assets.preflight.webhook import check_webhook
from membership_assets.registry.resources import DjangoRegistryResource, MembersDatabase, RegistrySyncPolicy
from membership_assets.scratch import RunScratchIOManager

from .conftest import ab_resource_for, dropped_after, emulator_warehouse


def line(checks, name):
    [found] = [c for c in checks if c.name == name]
    return found


# -- Action Builder -------------------------------------------------------------------------------


def test_action_builder_configured_right_passes_in_a_dozen_reads(ab_sim, tmp_path):
    checks = check_action_builder(ab_resource_for(ab_sim, tmp_path))
    assert exit_code(checks) == 0, render_table(checks)
    names = [c.name for c in checks]
    assert names[:2] == ["token", "campaign"] and "full scan estimate" in names
    assert line(checks, "connection type").seen.startswith("connection type 'People + Units' confirmed by")
    assert "per_page 25" in line(checks, "paging").seen
    assert ab_sim.requests.snapshot()["total"] <= 15
    assert not [r for r in ab_sim.requests.by_route if r.startswith("delete")]


def test_a_bad_token_is_a_failure_naming_the_variable(ab_sim, tmp_path):
    creds = json.dumps({"api_token": "wrong", "subdomain": "x"})
    checks = check_action_builder(ab_resource_for(ab_sim, tmp_path, credentials=creds))
    [token] = checks
    assert token.status == FAIL and "ACTION_BUILDER_CREDENTIALS_PASSWORD" in token.fix


def test_an_unknown_campaign_names_the_ones_the_token_sees(ab_sim, tmp_path):
    checks = check_action_builder(ab_resource_for(ab_sim, tmp_path, campaign_id="nope"))
    campaign = line(checks, "campaign")
    assert campaign.status == FAIL and ab_sim.data.campaign_id in campaign.fix


def test_an_unknown_tag_field_fails_with_the_variable_and_the_campaigns_fields(ab_sim, tmp_path):
    resource = ab_resource_for(ab_sim, tmp_path, membership_type_field="Member Type")
    checks = check_action_builder(resource)
    field = line(checks, "tag field 'Member Type'")
    assert field.status == FAIL and "'Membership Type'" in field.seen
    assert field.fix.startswith("set ACTION_BUILDER_TYPE_FIELD")
    assert line(checks, "tag field 'Bargaining Unit'").status == OK


def test_a_catalog_that_404s_is_no_failure_when_the_sample_confirms(ab_sim, tmp_path):
    ab_sim.faults.add(path_pattern="/connection_types", status=404, times=None)
    checks = check_action_builder(ab_resource_for(ab_sim, tmp_path))
    conn = line(checks, "connection type")
    assert conn.status == OK and "confirmed by the sample's own connections" in conn.seen


def test_a_connection_type_contradicted_by_the_catalog_fails(ab_sim, tmp_path):
    checks = check_action_builder(ab_resource_for(ab_sim, tmp_path, unit_connection_type="People + Unit"))
    conn = line(checks, "connection type")
    assert conn.status == FAIL and "'People + Units'" in conn.seen
    assert "ACTION_BUILDER_CONNECTION_TYPE" in conn.fix


# -- registry -------------------------------------------------------------------------------------


def registry_resource(sim, **kw) -> DjangoRegistryResource:
    return DjangoRegistryResource(
        base_url=sim.base_url, api_key=sim.token, rate_limit=1000, max_attempts=2, **kw
    )


def mapped_policy() -> RegistrySyncPolicy:
    """The seed plants one row with the status "honorary": configured right, it is mapped."""
    from membership_assets.registry.validation import DEFAULT_STATUS_MAP

    return RegistrySyncPolicy(status_map=json.dumps({**DEFAULT_STATUS_MAP, "honorary": "active"}))


def test_the_registry_configured_right_passes(django_sim):
    checks = check_registry(registry_resource(django_sim), mapped_policy())
    assert exit_code(checks) == 0, render_table(checks)
    assert [c.name for c in checks] == [
        "auth",
        "listing shape",
        "page_size",
        "count",
        "status",
        "validation",
        "ETag",
    ]
    assert line(checks, "listing shape").seen.startswith("DRF pages")
    assert "304" in line(checks, "ETag").seen
    assert line(checks, "status").status == OK
    # Counts and categories only: no kennitala, name or email in any line.
    text = render_table(checks)
    for row in django_sim.data.members:
        assert str(row["kennitala"]) not in text
        if len((row["name"] or "").strip()) > 3:
            assert row["name"] not in text


def test_a_registry_without_status_fails_with_the_choice_to_make(django_sim):
    checks = check_registry(
        registry_resource(django_sim, members_path="felagar/api/full/"), RegistrySyncPolicy()
    )
    assert line(checks, "listing shape").seen.startswith("Ekklesia's /felagar/api/full/")
    status = line(checks, "status")
    assert status.status == FAIL and "REGISTRY_MISSING_STATUS" in status.fix
    assert line(checks, "validation").status == FAIL


def test_an_unmapped_status_fails_naming_it(django_sim):
    status = line(check_registry(registry_resource(django_sim), RegistrySyncPolicy()), "status")
    assert status.status == FAIL and "honorary" in status.seen and "REGISTRY_STATUS_MAP" in status.fix


def test_a_wrong_registry_token_fails(django_sim):
    resource = DjangoRegistryResource(base_url=django_sim.base_url, api_key="wrong", max_attempts=1)
    [auth] = check_registry(resource, RegistrySyncPolicy())
    assert auth.status == FAIL and "DJANGO_API_KEY_PASSWORD" in auth.fix


# -- SendGrid (local stand-in) ----------------------------------------------------------------------


@contextmanager
def serve(handler_class) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def sendgrid_standin(keys: dict[str, list[str]], seen: list[str]):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(f"GET {self.path}")
            key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if self.path != "/v3/scopes" or key not in keys:
                return self._answer(401, {"errors": [{"message": "authorization required"}]})
            self._answer(200, {"scopes": keys[key]})

        def do_POST(self):  # noqa: N802
            seen.append(f"POST {self.path}")
            self._answer(202, {})

        def _answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def test_sendgrid_key_scope_is_checked_without_sending(monkeypatch):
    from membership_assets.notify.resources import SendGridEmail

    seen: list[str] = []
    keys = {"good": ["mail.send", "scopes.read"], "readonly": ["stats.read"]}
    with serve(sendgrid_standin(keys, seen)) as url:
        good = check_sendgrid(SendGridEmail(api_key="good", from_address="sync@union.is"), url)
        assert [c.status for c in good] == [OK, OK]
        [key, _] = check_sendgrid(SendGridEmail(api_key="readonly", from_address="sync@union.is"), url)
        assert key.status == FAIL and "Mail Send" in key.fix
        [key, sender] = check_sendgrid(SendGridEmail(api_key="wrong", from_address=""), url)
        assert key.status == FAIL and "SENDGRID_API_KEY_PASSWORD" in key.fix
        assert sender.status == FAIL and "EMAIL_FROM" in sender.fix
    assert seen and all(s == "GET /v3/scopes" for s in seen)  # never a mail send


# -- BigQuery (emulator) ----------------------------------------------------------------------------


@pytest.mark.bigquery
def test_bigquery_dataset_missing_then_present_with_the_expected_schema():
    from membership_assets.preflight.warehouse import check_warehouse
    from membership_assets.warehouse.schema import TABLES

    with dropped_after(emulator_warehouse("preflight")) as wh:
        [missing] = check_warehouse(wh)
        assert missing.status == FAIL and "does not exist" in missing.seen and "bq mk" in missing.fix
        with wh.client() as client:
            for spec in TABLES.values():
                wh._ensure(client, spec)
        checks = check_warehouse(wh)
        assert line(checks, "dataset").status == OK
        tables = line(checks, "tables")
        assert tables.status == OK and f"{len(TABLES)} of {len(TABLES)} tables exist" in tables.seen
        # What the emulator does not implement is "not checked", never a pretended ✓.
        for name in ("load permission", "query permission"):
            assert line(checks, name).status in (OK, SKIP)
        assert line(checks, "analyst views").status == FAIL  # not published yet


def test_a_table_behind_the_codes_schema_fails_with_the_alter_statement():
    from types import SimpleNamespace

    from membership_assets.preflight.warehouse import _alter, schema_problems
    from membership_assets.warehouse.schema import TABLES

    spec = next(iter(TABLES.values()))
    schema = [SimpleNamespace(name=c.name, field_type=c.type) for c in spec.columns[:-1]]
    schema[0] = SimpleNamespace(name=spec.columns[0].name, field_type="INTEGER")
    problems = schema_problems(spec, schema, "p.d.t")
    last = spec.columns[-1]
    assert f"`p.d.t` lacks {last.name} {last.type}" in problems
    assert (
        _alter(f"`p.d.t` lacks {last.name} {last.type}")
        == f"ALTER TABLE `p.d.t` ADD COLUMN {last.name} {last.type}"
    )


# -- members DB -----------------------------------------------------------------------------------


def test_members_db_at_head_passes_and_behind_head_names_the_migrate_command(members_db_url):
    import sqlalchemy as sa
    from alembic import command

    from membership_assets.registry import migrate
    from membership_assets.registry.store import MembersStore

    store = MembersStore.from_url(members_db_url)
    engine = store.engine
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0001")
    [reachable, schema] = check_members_db(MembersDatabase(url=members_db_url))
    assert reachable.status == OK
    assert schema.status == FAIL and "0001" in schema.seen and "membership_assets migrate" in schema.fix
    store.ensure_schema()
    [_, schema] = check_members_db(MembersDatabase(url=members_db_url))
    assert schema.status == OK and migrate.head() in schema.seen
    with engine.connect() as conn:  # the preflight itself wrote nothing
        assert migrate.current_revision(conn) == migrate.head()
    engine.dispose()
    del sa


def test_members_db_unreachable_and_never_created(tmp_path):
    [missing] = check_members_db(MembersDatabase(url=f"sqlite:///{tmp_path / 'none.sqlite'}"))
    assert missing.status == FAIL and not (tmp_path / "none.sqlite").exists()
    [down] = check_members_db(MembersDatabase(url="postgresql+psycopg://nobody@127.0.0.1:9/x"))
    assert down.status == FAIL and "MEMBERS_DB_URL" in down.fix


# -- webhook (local stand-in of the receiver's contract) ----------------------------------------------

SECRET = "receiver-secret-for-tests"


def receiver_standin(secret: str, received: list[bytes]):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self._answer(200 if self.path == "/healthz" else 404, {"ok": True})

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            stamp = self.headers.get("x-membership-timestamp", "")
            mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
            if self.headers.get("x-membership-signature") != "sha256=" + mac:
                return self._answer(401, {"error": "bad_signature"})
            received.append(body)
            event = json.loads(body)
            if event.get("event") == "ping":
                return self._answer(200, {"ping": "ok"})
            self._answer(202, {"accepted": True})

        def _answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def test_webhook_path_receiver_up_with_the_same_secret():
    received: list[bytes] = []
    with serve(receiver_standin(SECRET, received)) as url:
        checks = check_webhook(url, SECRET, required=True)
        assert [c.status for c in checks] == [OK, OK]
        [wrong] = check_webhook(url, "another-secret", required=True)[1:]
        assert wrong.status == FAIL and "REGISTRY_WEBHOOK_SECRET_PASSWORD" in wrong.fix
    assert [json.loads(b)["event"] for b in received] == ["ping"]


def test_the_real_receiver_acknowledges_the_signed_ping_and_stores_nothing(tmp_path):
    from membership_assets.registry.events import ChangeEventStore
    from membership_assets.registry.store import MembersStore

    from .sync_api_process import STRONG_SECRET, SyncApiProcess, production_env

    url = f"sqlite:///{tmp_path / 'members.sqlite'}"
    MembersStore.from_url(url).ensure_schema()
    with SyncApiProcess(production_env(url)) as receiver:
        assert [c.status for c in check_webhook(receiver.base, STRONG_SECRET, required=True)] == [OK, OK]
        [_, wrong] = check_webhook(receiver.base, "another-secret-of-enough-length-0123456789", required=True)
        assert wrong.status == FAIL and "REGISTRY_WEBHOOK_SECRET_PASSWORD" in wrong.fix
    events = ChangeEventStore.from_url(url)
    assert events.pending() is None  # the ping changed nothing


def test_webhook_receiver_down_fails_and_unset_url_depends_on_the_environment():
    with serve(receiver_standin(SECRET, [])) as url:
        pass  # closed again: nothing listens there now
    [down] = check_webhook(url, SECRET, required=True)
    assert down.status == FAIL and "sync-api" in down.fix
    [unset] = check_webhook("", SECRET, required=True)
    assert unset.status == FAIL and "SYNC_API_URL" in unset.fix
    assert check_webhook("", SECRET, required=False)[0].status == SKIP


def test_webhook_daemon_heartbeat(instance):
    from membership_assets.preflight.webhook import daemon_check

    assert daemon_check(None).status == SKIP
    stale = daemon_check(instance)
    assert stale.status == FAIL and "dagster-daemon" in stale.fix


def test_webhook_daemon_beating_with_the_event_sensor_running_by_default():
    from types import SimpleNamespace

    from membership_assets.preflight.webhook import daemon_check

    class Instance:
        def __init__(self, states):
            self.states = states

        def get_daemon_heartbeats(self):
            return {"SENSOR": SimpleNamespace(timestamp=1000.0)}

        def all_instigator_state(self, instigator_type=None):
            return self.states

    assert daemon_check(Instance([]), now=1010.0).status == OK
    from dagster._core.scheduler.instigation import InstigatorStatus

    from membership_assets.registry.event_sensor import SENSOR_NAME

    stopped = SimpleNamespace(instigator_name=SENSOR_NAME, status=InstigatorStatus.STOPPED)
    check = daemon_check(Instance([stopped]), now=1010.0)
    assert check.status == FAIL and SENSOR_NAME in check.fix
    assert daemon_check(Instance([]), now=2000.0).status == FAIL  # the heartbeat is stale


# -- scratch ----------------------------------------------------------------------------------------


def test_scratch_write_read_delete(tmp_path):
    [good] = check_scratch(RunScratchIOManager(base_path=str(tmp_path / "scratch")))
    assert good.status == OK and not any((tmp_path / "scratch").iterdir())
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    [bad] = check_scratch(RunScratchIOManager(base_path=str(blocked)))
    assert bad.status == FAIL and "MEMBERSHIP_SCRATCH_URL" in bad.fix


# -- everything together: the CLI and the job ---------------------------------------------------------


def all_resources(ab_sim, django_sim, tmp_path, members_url):
    from membership_assets.notify.resources import FileOutboxEmail, Recipients
    from membership_assets.warehouse.resources import DuckDBWarehouse

    return {
        "action_builder": ab_resource_for(ab_sim, tmp_path),
        "django": registry_resource(django_sim),
        "registry_policy": mapped_policy(),
        "email": FileOutboxEmail(directory=str(tmp_path / "outbox")),
        "warehouse": DuckDBWarehouse(path=str(tmp_path / "wh.duckdb")),
        "members_db": MembersDatabase(url=members_url),
        "io_manager": RunScratchIOManager(base_path=str(tmp_path / "scratch")),
        "recipients": Recipients(tag_report="organizers@example.org", admins="admins@example.org"),
    }


def test_the_whole_preflight_writes_nothing_and_sends_no_email(ab_sim, django_sim, tmp_path):
    from membership_assets.registry.store import MembersStore

    url = f"sqlite:///{tmp_path / 'members.sqlite'}"
    MembersStore.from_url(url).ensure_schema()
    resources = all_resources(ab_sim, django_sim, tmp_path, url)
    checks = run_preflight(resources, PreflightSettings())
    assert exit_code(checks) == 0, render_table(checks)
    assert {c.system for c in checks} >= {"Action Builder", "Registry", "Members DB", "Scratch"}
    assert not (tmp_path / "outbox").exists() and not (tmp_path / "wh.duckdb").exists()
    result = as_json(checks)
    assert result["ok"] and json.loads(json.dumps(result)) == result


def test_the_cli_prints_json_keeps_the_latest_result_and_exits_1_on_a_failure(
    ab_sim, tmp_path, monkeypatch, capsys
):
    from membership_assets.__main__ import main
    from membership_assets.preflight.core import load_latest

    monkeypatch.setenv("MEMBERSHIP_ENV", "local")
    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("ACTION_BUILDER_BASE_URL", ab_sim.base_url)
    monkeypatch.setenv("ACTION_BUILDER_CAMPAIGN_ID", ab_sim.data.campaign_id)
    assert main(["preflight", "--json", "--only", "action_builder"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] and printed["checks"][0]["name"] == "token"
    assert load_latest(tmp_path)["checks"] == printed["checks"]
    monkeypatch.setenv("ACTION_BUILDER_TYPE_FIELD", "Member Type")
    assert main(["preflight", "--only", "action_builder"]) == 1
    out = capsys.readouterr().out
    assert "✗ Action Builder" in out and "fix: set ACTION_BUILDER_TYPE_FIELD" in out
    assert load_latest(tmp_path)["ok"] is False


def test_the_preflight_job_records_its_result_as_asset_metadata_and_fails_on_a_failure(
    ab_sim, django_sim, tmp_path, instance, monkeypatch
):
    import dagster as dg

    from membership_assets.definitions import build_definitions
    from membership_assets.preflight.job import PREFLIGHT_ASSET

    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'members.sqlite'}"
    resources = all_resources(ab_sim, django_sim, tmp_path, url)  # members DB never created: ✗
    defs = build_definitions(resources)
    result = defs.resolve_job_def("preflight").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    event = instance.get_latest_materialization_event(PREFLIGHT_ASSET)
    metadata = event.asset_materialization.metadata
    # The members DB was never created, and no daemon beats for this instance.
    assert metadata["ok"].value is False and metadata["failed"].value == 2
    assert (
        "✗ Members DB" in metadata["result"].value and "✗ Webhook        daemon" in metadata["result"].value
    )
    assert isinstance(metadata["checks"], dg.JsonMetadataValue)
    assert Path(tmp_path, "preflight", "latest.json").exists()


def test_production_without_its_variables_names_each_one(tmp_path, monkeypatch, capsys):
    from membership_assets.__main__ import main

    monkeypatch.setenv("MEMBERSHIP_ENV", "production")
    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for var in (
        "ACTION_BUILDER_CREDENTIALS_PASSWORD",
        "DJANGO_API_URL",
        "DJANGO_API_KEY_PASSWORD",
        "SYNC_API_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    assert main(["preflight", "--only", "action_builder", "registry", "webhook"]) == 1
    out = capsys.readouterr().out
    assert "✗ Action Builder configuration: not set: ACTION_BUILDER_CREDENTIALS_PASSWORD" in out
    assert "fix: set DJANGO_API_KEY_PASSWORD, DJANGO_API_URL" in out
    assert "fix: set SYNC_API_URL" in out


def test_a_registry_url_without_any_token_is_named_before_any_request(tmp_path, monkeypatch, capsys):
    from membership_assets.__main__ import main

    monkeypatch.setenv("MEMBERSHIP_ENV", "production")
    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("DJANGO_API_URL", "http://127.0.0.1:9")  # closed: no request may be needed
    for var in ("DJANGO_API_KEY_PASSWORD", "DJANGO_API_PASSWORD", "DAGSTER_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert main(["preflight", "--only", "registry"]) == 1
    out = capsys.readouterr().out
    assert "✗ Registry" in out and "no API token configured" in out
    assert "DJANGO_API_KEY_PASSWORD (or DJANGO_API_PASSWORD" in out
