"""Personal data stays in the members database and the audit warehouse.

Each kind of failure seen in the field is forced here (a truncated upstream page retried until it
fails the run; a quarantined row or a member that overflows a column on Postgres), and every place
a kennitala, name or email could leak is scanned: Dagster's event log (messages, stored exception
texts and their causes, asset metadata), every file under DAGSTER_HOME and the state directory
(compute logs, intermediates, checkpoints), the sync log's error column, its warehouse mirror and
the admins' alert email.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from membership_assets.connectors.errors import BadResponseError, TransportError
from membership_assets.connectors.http import JsonApiClient
from membership_assets.definitions import build_definitions
from membership_assets.privacy import (
    carries_personal_data,
    pseudonym,
    redact_url,
    scrub,
    split_credentials,
    with_password,
)
from membership_assets.registry.client import DjangoRegistryClient
from membership_assets.registry.store import MembersStore
from membership_assets.simulators.django_registry import make_kennitala

from .conftest import _postgres_url, alert_admins_of

# -- the building blocks --------------------------------------------------------------------------


def test_pseudonym_identifies_a_member_without_revealing_the_birth_date():
    p = pseudonym("1201743399")
    assert p == pseudonym("120174-3399") and p != pseudonym("1201743389")
    assert "120174" not in p and "3399" not in p and len(p) == 16


def test_scrub_removes_kennitalas_emails_and_quoted_row_values():
    text = (
        'body: [{"kennitala": "1201743399", "name": "Jón", "email": "jon.jonsson@example.is"}, '
        '{"ssn": "120174-3399"}]\n'
        "DETAIL:  Key (kennitala)=(1201743399) already exists.\n"
        "DETAIL:  Failing row contains (1201743399, Jón Jónsson, jon@example.is, active).\n"
        'CONTEXT:  COPY _delta_1a2b, line 3, column new_name: "Jón Jónsson"\n'
        "[parameters: [{'kennitala': '1201743399', 'name': 'Jón Jónsson'}]]\n"
        "run 0131fb5f-1234-4321-8765-123456789012 took 1500 ms"
    )
    out = scrub(text)
    for leak in ("1201743399", "120174-3399", "jon.jonsson@example.is", "jon@example.is", "Jón Jónsson"):
        assert leak not in out
    assert f"<kennitala {pseudonym('1201743399')}>" in out  # an admin can still find the row
    assert "0131fb5f-1234-4321-8765-123456789012" in out and "1500 ms" in out  # ids stay readable


def test_url_credentials_are_redacted_split_and_merged():
    url = "postgresql+psycopg://sync:s3cr%2Fet@db.internal:5432/ekklesia"
    assert redact_url(url) == "postgresql+psycopg://sync:***@db.internal:5432/ekklesia"
    assert split_credentials("https://u:p@h.example/api") == ("https://h.example/api", ("u", "p"))
    merged = with_password("postgresql+psycopg://sync@db.internal/ekklesia", "s3cr/et")
    assert merged == "postgresql+psycopg://sync:s3cr%2Fet@db.internal/ekklesia"
    assert with_password("sqlite:///x.sqlite", "") == "sqlite:///x.sqlite"


class ListLog:
    def __init__(self):
        self.lines: list[str] = []

    def warning(self, msg, *a):
        self.lines.append(str(msg))

    info = error = debug = warning


def _error_texts(exc: BaseException) -> str:
    """The exception and everything it chains, as Dagster would store them."""
    from dagster._utils.error import serializable_error_info_from_exc_info

    return serializable_error_info_from_exc_info((type(exc), exc, exc.__traceback__)).to_string()


def test_a_truncated_page_is_described_not_quoted_in_errors_and_retry_logs(django_sim):
    django_sim.faults.add(path_pattern="/api/members", truncate_body=True, times=None)
    log = ListLog()
    client = DjangoRegistryClient.connect(
        base_url=django_sim.base_url, api_key=django_sim.token, page_size=50, max_attempts=3, log=log
    )
    with pytest.raises(BadResponseError) as info:
        client.fetch_members()
    assert len(log.lines) == 2  # two retries logged
    texts = "\n".join([*log.lines, _error_texts(info.value)])
    assert "bytes" in str(info.value) and "char" in str(info.value)  # what was wrong, and where
    for m in django_sim.data.members[:50]:
        for value in (str(m["kennitala"]), m["email"], m["name"]):
            assert value not in texts


def test_a_password_in_an_api_url_never_reaches_errors_or_logs():
    log = ListLog()
    client = JsonApiClient(
        name="django_registry",
        base_url="http://sync:hunter2-secret@127.0.0.1:9/api",
        max_attempts=2,
        log=log,
        sleep=lambda s: None,
    )
    with pytest.raises(TransportError) as info:
        client.request_json("GET", "members")
    texts = "\n".join([*log.lines, _error_texts(info.value), repr(info.value.url)])
    assert "hunter2-secret" not in texts and "127.0.0.1:9" in texts
    assert client.session.auth == ("sync", "hunter2-secret")  # still used, as basic auth


def test_database_errors_count_as_carrying_personal_data():
    import sqlalchemy as sa

    assert carries_personal_data(sa.exc.DataError("INSERT", {}, Exception("value too long")))
    assert carries_personal_data(RuntimeError("row 1201743399 is odd"))
    assert not carries_personal_data(RuntimeError("sync stopped before writing anything"))


def test_local_urls_with_credentials_are_shown_by_variable_name(monkeypatch, tmp_path):
    from membership_assets.definitions import resources_for

    monkeypatch.setenv("MEMBERSHIP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MEMBERS_DB_URL", "postgresql+psycopg://sync:pw-in-url@db/ekklesia")
    monkeypatch.setenv("DJANGO_API_URL", "https://sync:pw-in-url@registry.example/")
    monkeypatch.setenv("MEMBERS_DB_PASSWORD", "from-password-variable")
    resources = resources_for("local")
    defs = dg.Definitions(resources=resources)
    shown = json.dumps(
        {k: v._get_non_default_public_field_values() for k, v in defs.resources.items()}, default=str
    )
    assert "pw-in-url" not in shown and "from-password-variable" not in shown
    assert resources["members_db"].url == dg.EnvVar("MEMBERS_DB_URL")


# -- forced failures, every place scanned ---------------------------------------------------------


def _identifiers(rows: list[dict]) -> dict[str, list[bytes]]:
    """Each member's kennitala, name and email as they could appear in a file (raw and JSON-escaped)."""
    out: dict[str, list[bytes]] = {}
    for m in rows:
        for value in (str(m["kennitala"]), str(m["kennitala"]).replace("-", ""), m["name"], m["email"]):
            if value and len(value) >= 6:
                out[value] = [value.encode(), json.dumps(value)[1:-1].encode()]
    return out


def _dagster_texts(instance: dg.DagsterInstance, run_ids: list[str]) -> str:
    """Every event of the runs as stored: messages, error infos with causes, metadata."""
    from dagster._serdes import serialize_value

    parts = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id):
            parts.append(record.message or "")
            parts.append(record.user_message or "")
            parts.append(serialize_value(record))
    return json.loads(json.dumps("\n".join(parts)))  # one str, escapes undone by serialize_value


def _leaks(identifiers: dict[str, list[bytes]], text: str) -> list[str]:
    decoded = text.encode().decode("unicode_escape", errors="ignore") if "\\u" in text else text
    return [v for v in identifiers if v in text or v in decoded]


def _file_leaks(identifiers: dict[str, list[bytes]], roots: list[Path], skip: set[str]) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or any(path.name.startswith(s) for s in skip):
                continue
            data = path.read_bytes()
            found += [f"{v} in {path}" for v, forms in identifiers.items() if any(f in data for f in forms)]
    return found


@pytest.fixture
def persistent_instance(tmp_path):
    """An instance on disk, so event logs, compute logs and intermediates are files we can scan."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance, home


def _assert_nothing_leaked(*, instance, home, tmp_path, result, defs, rows, members_db_url, warehouse):
    identifiers = _identifiers(rows)
    alert_admins_of(instance, result, defs)
    # A later successful sync mirrors the failed one's log row into the warehouse.
    fixed = defs.resolve_job_def("registry_sync").execute_in_process(instance=instance, raise_on_error=False)
    places = {
        "dagster events": _dagster_texts(instance, [result.run_id]),
        "sync log errors": json.dumps(
            MembersStore.from_url(members_db_url).log_entry(result.run_id)["errors"]
        ),
        "alert email": "\n".join(p.read_text() for p in (tmp_path / "outbox").glob("*.eml")),
    }
    if fixed.success:
        mirrored = warehouse.query(
            f"SELECT errors FROM {{dataset}}.membership_sync_log WHERE sync_id = '{result.run_id}'"
        )
        assert len(mirrored) == 1
        places["warehouse sync log"] = str(mirrored["errors"][0])
    assert places["alert email"] and places["sync log errors"] != "null"
    for place, text in places.items():
        assert not _leaks(identifiers, text), f"personal data in {place}: {_leaks(identifiers, text)}"
    # Files: compute logs, event logs, intermediates, checkpoints. Not the members DB or warehouse.
    leaks = _file_leaks(identifiers, [home, tmp_path], skip={"members.sqlite", "warehouse.duckdb"})
    assert not leaks, leaks[:5]


def test_a_truncated_registry_page_leaks_no_personal_data(
    registry_defs, persistent_instance, django_sim, members_db_url, warehouse, tmp_path
):
    instance, home = persistent_instance
    rows = [dict(m) for m in django_sim.data.members]
    fault = django_sim.faults.add(path_pattern="page=2", truncate_body=True, times=None)
    result = registry_defs.resolve_job_def("registry_sync").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success and fault.hits >= 2
    django_sim.faults.clear()
    _assert_nothing_leaked(
        instance=instance,
        home=home,
        tmp_path=tmp_path,
        result=result,
        defs=registry_defs,
        rows=rows,
        members_db_url=members_db_url,
        warehouse=warehouse,
    )


@pytest.mark.postgres
@pytest.mark.parametrize("overflow", ["quarantined_row", "member"])
def test_a_row_overflowing_a_postgres_column_leaks_no_personal_data(
    overflow, ab_resource, persistent_instance, django_sim, warehouse, outbox, tmp_path, worker_id
):
    import random

    from membership_assets.notify.resources import FileOutboxEmail, Recipients
    from membership_assets.registry.resources import (
        DjangoRegistryResource,
        MembersDatabase,
        RegistrySyncPolicy,
    )

    url = _postgres_url(worker_id)
    MembersStore.from_url(url).drop_schema()
    defs = build_definitions(
        {
            "django": DjangoRegistryResource(
                base_url=django_sim.base_url, api_key=django_sim.token, page_size=50, rate_limit=1000
            ),
            "members_db": MembersDatabase(url=url),
            "registry_policy": RegistrySyncPolicy(),
            "email": FileOutboxEmail(directory=str(outbox)),
            "recipients": Recipients(tag_report="organizers@example.org", admins="admins@example.org"),
            "warehouse": warehouse,
            "action_builder": ab_resource,
        }
    )
    instance, home = persistent_instance
    if overflow == "member":
        # Validation keeps rows within the columns, so a stricter rule of the database itself (a
        # DBA's CHECK) makes the apply fail, with the row's values in Postgres's error text.
        store = MembersStore.from_url(url)
        store.ensure_schema()
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("ALTER TABLE members ADD CONSTRAINT name_under_100 CHECK (char_length(name) < 100)")
            )
        store.engine.dispose()
    # quarantined_row: > 255 characters, over the column, so validation quarantines it.
    long_name = "Sigurbjörg Þórhildardóttir " + "Ásgeirsdóttir " * (
        20 if overflow == "quarantined_row" else 7
    )
    kennitala = make_kennitala(random.Random(99)) if overflow == "member" else "9999"  # 9999: rejected
    row = {"kennitala": kennitala, "name": long_name, "email": "sigurbjorg.t@example.is", "status": "active"}
    django_sim.add(row)
    result = defs.resolve_job_def("registry_sync").execute_in_process(instance=instance, raise_on_error=False)
    if overflow == "member":
        assert not result.success
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert failure and "membership_sync" in failure[0].step_key
    else:
        assert result.success  # the hostile row is quarantined; the rest of the sync applies
        identifiers = _identifiers([row])
        assert not _leaks(identifiers, _dagster_texts(instance, [result.run_id]))
        assert not _file_leaks(identifiers, [home, tmp_path], skip={"members.sqlite", "warehouse.duckdb"})
        return
    django_sim.remove(kennitala)  # fixed upstream: the next sync succeeds and mirrors the log
    rows = [dict(m) for m in django_sim.data.members] + [row]
    _assert_nothing_leaked(
        instance=instance,
        home=home,
        tmp_path=tmp_path,
        result=result,
        defs=defs,
        rows=rows,
        members_db_url=url,
        warehouse=warehouse,
    )


def test_a_successful_sync_leaves_no_member_data_on_disk_and_logs_no_birth_dates(
    registry_defs, persistent_instance, django_sim, tmp_path
):
    instance, home = persistent_instance
    result = registry_defs.resolve_job_def("registry_sync").execute_in_process(instance=instance)
    assert result.success
    leaks = _file_leaks(
        _identifiers(django_sim.data.members), [home, tmp_path], skip={"members.sqlite", "warehouse.duckdb"}
    )
    assert not leaks, leaks[:5]
    texts = _dagster_texts(instance, [result.run_id])
    rejected = [k for k in django_sim.data.truth.rejected_rows if k and len(k.replace("-", "")) == 10]
    assert rejected and not [k for k in rejected if k.replace("-", "")[:6] + "****" in texts]


def test_error_responses_are_described_never_quoted(django_sim):
    rows = django_sim.data.members[:3]
    django_sim.faults.add(path_pattern="/api/members", status=500, body={"results": rows}, times=None)
    client = DjangoRegistryClient.connect(
        base_url=django_sim.base_url, api_key=django_sim.token, max_attempts=1
    )
    with pytest.raises(Exception) as info:
        client.fetch_members()
    assert "bytes (HTTP 500)" in str(info.value)  # described: content type and length
    django_sim.faults.clear()
    django_sim.faults.add(
        path_pattern="/api/members", status=500, body={"error": f"bad row {rows[0]['email']}"}, times=None
    )
    with pytest.raises(Exception) as again:
        client.fetch_members()
    assert "bad row" not in str(again.value)  # free text is never repeated, scrubbed or not
    for m in rows:
        for value in (str(m["kennitala"]), m["email"], m["name"]):
            assert value not in str(info.value) + str(again.value)


# -- personal data planted in every upstream field and error body ---------------------------------


def _planted_bodies(m: dict) -> dict[str, tuple[int, object]]:
    """Upstream answers that quote a member in each field a client could read, or print."""
    kt, name, email = str(m["kennitala"]), m["name"], m["email"]
    quoted = f"row {kt} ({name} <{email}>) failed validation"
    error_fields = {
        key: value
        for key, value in zip(
            ("detail", "message", "title", "error", "code", "error_code", "errors"),
            (quoted, quoted, name, name.replace(" ", "_"), email, kt, [{"name": [name]}, {kt: email}]),
            strict=True,
        )
    }
    return {
        "500_error_fields": (500, error_fields),
        "400_error_fields": (400, error_fields),
        "200_count_is_a_name": (200, {"count": name, "next": None, "results": []}),
        "200_keys_are_members": (200, {name: 1, email: 2, kt: 3}),
        "200_body_not_json": (200, f"{name},{email},{kt}".encode()),
        "502_text_body": (502, f"upstream said: {quoted}".encode()),
    }


@pytest.mark.parametrize(
    "planted",
    [
        "500_error_fields",
        "400_error_fields",
        "200_count_is_a_name",
        "200_keys_are_members",
        "200_body_not_json",
        "502_text_body",
    ],
)
def test_upstream_answers_quoting_members_leak_nowhere(
    planted, registry_defs, persistent_instance, django_sim, members_db_url, warehouse, tmp_path
):
    """A registry answer naming a member (a 500 whose detail quotes the row, a count or keys that
    hold a name): the failed run's events, files, sync log, warehouse mirror and alert hold none of it."""
    instance, home = persistent_instance
    rows = [dict(m) for m in django_sim.data.members]
    victim = next(m for m in rows if " " in m["name"])
    status, body = _planted_bodies(victim)[planted]
    fault = django_sim.faults.add(path_pattern="page=2", status=status, body=body, times=None)
    result = registry_defs.resolve_job_def("registry_sync").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not result.success and fault.hits >= 1
    django_sim.faults.clear()
    _assert_nothing_leaked(
        instance=instance,
        home=home,
        tmp_path=tmp_path,
        result=result,
        defs=registry_defs,
        rows=rows,
        members_db_url=members_db_url,
        warehouse=warehouse,
    )
    stored = MembersStore.from_url(members_db_url).log_entry(result.run_id)["errors"]
    assert stored["step"] == "django_members" and f"HTTP {status}" in stored["error"]  # still useful


def test_an_error_code_is_kept_and_free_text_is_not(django_sim):
    m = django_sim.data.members[0]
    django_sim.faults.add(
        path_pattern="/api/members",
        status=503,
        body={"code": "registry_maintenance", "detail": f"{m['name']} is being edited"},
        times=None,
    )
    client = DjangoRegistryClient.connect(
        base_url=django_sim.base_url, api_key=django_sim.token, max_attempts=1
    )
    with pytest.raises(Exception) as info:
        client.fetch_members()
    text = str(info.value)
    assert "error code registry_maintenance" in text and "HTTP 503" in text
    assert m["name"] not in text and "being edited" not in text


@pytest.mark.parametrize("field", ["a kennitala", "a name", "an email"])
def test_a_status_field_holding_personal_data_is_rejected_by_category(
    field, registry_defs, persistent_instance, django_sim, members_db_url, tmp_path
):
    """status_unknown, never status_unknown:<value>; the value is kept only in the quarantine table."""
    import random

    instance, home = persistent_instance
    other = {
        "kennitala": make_kennitala(random.Random(7)),
        "name": "Anna Sigurðsson",
        "email": "anna.s@example.is",
    }
    status = {"a kennitala": other["kennitala"], "a name": other["name"], "an email": other["email"]}[field]
    row = {
        "kennitala": make_kennitala(random.Random(8)),
        "name": "Björk Guðmundsdóttir",
        "email": "bjork.g@example.is",
        "status": status,
    }
    django_sim.add(row)
    result = registry_defs.resolve_job_def("registry_sync").execute_in_process(instance=instance)
    rejects = MembersStore.from_url(members_db_url).rejects_of(result.run_id)
    mine = rejects[rejects["kennitala"] == row["kennitala"]]
    assert list(mine["reasons"]) == ["status_unknown"] and list(mine["status"]) == [status]
    identifiers = _identifiers([row, other])
    assert not _leaks(identifiers, _dagster_texts(instance, [result.run_id]))
    assert not _file_leaks(identifiers, [home, tmp_path], skip={"members.sqlite", "warehouse.duckdb"})
