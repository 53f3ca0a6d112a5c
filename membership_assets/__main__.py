"""Command line: ``python -m membership_assets demo | dev | simulators | query | migrate | sync-api |
preflight``.

``demo`` runs the main jobs once on the embedded default (simulators, DuckDB, SQLite, outbox) and
prints where everything went. ``dev`` opens the Dagster UI on the embedded default (simulators,
``DAGSTER_HOME`` with the project's dagster.yaml, ``dagster dev``). ``simulators`` serves the
simulated APIs alone. ``migrate`` applies the members database's schema migrations (production:
before deploying code). ``sync-api`` serves the registry webhook receiver and sync API.
``preflight`` checks every service's configuration read-only (docs/going-live.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

PROJECT_INSTANCE_CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"


def _dagster_home() -> Path:
    """$DAGSTER_HOME (default ./.dagster_home) holding the project's dagster.yaml, kept current."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if PROJECT_INSTANCE_CONFIG.exists():
        wanted = PROJECT_INSTANCE_CONFIG.read_text()
        if not config.exists() or config.read_text() != wanted:
            # Limits and run retries apply only from $DAGSTER_HOME/dagster.yaml.
            config.write_text(wanted)
    return home


def _embedded_default(command: str) -> bool:
    """``dev`` and ``demo`` run on the simulators only: refuse a production environment."""
    from .settings import ENVIRONMENT_VAR, LOCAL

    os.environ.setdefault(ENVIRONMENT_VAR, LOCAL)
    if os.environ[ENVIRONMENT_VAR] != LOCAL:
        print(f"{command} runs on the embedded default only ({ENVIRONMENT_VAR}={LOCAL})", file=sys.stderr)
        return False
    return True


def dev(args: argparse.Namespace) -> int:
    """The Dagster UI on the embedded default: simulators up, instance configured, `dagster dev`."""

    from .simulators.local import LocalSimulators

    if not _embedded_default("dev"):
        return 2
    home = _dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "membership_assets.definitions", *args.dagster_args]
    with LocalSimulators() as sims:
        for name, sim in (("Action Builder", sims.action_builder), ("Django registry", sims.django)):
            print(f"{name} simulator: {sim.base_url if sim else 'already running'}")
        print(f"DAGSTER_HOME={home} (instance: {home / 'dagster.yaml'})")
        print("$ " + " ".join(command), flush=True)
        return run_until_signalled(command, os.environ.copy())


STOP_GRACE_SECONDS = 30  # for `dagster dev` to stop its webserver, daemon and code servers itself


def run_until_signalled(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` until it exits, or until one Ctrl-C / SIGINT / SIGTERM reaches this process:
    then stop it and every process it started, whichever signal came and from wherever."""
    import subprocess

    # Its own session: a signal reaches the children only through us, once, in one order.
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while proc.poll() is None and not stop.wait(0.5):
            pass
        if proc.poll() is None:
            print("stopping dagster dev and everything it started ...", flush=True)
        return stop_tree(proc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_tree(proc) -> int:
    """Ask ``proc`` to stop as Ctrl-C would, then end whatever of its process tree is left."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(Exception):
            proc.wait(timeout=STOP_GRACE_SECONDS)
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return proc.wait()


def demo(args: argparse.Namespace) -> int:
    if not _embedded_default("demo"):
        return 2
    _dagster_home()
    import dagster as dg

    from .settings import state_dir
    from .simulators.local import LocalSimulators

    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    with LocalSimulators(advance_registry=True) as sims, dg.DagsterInstance.get() as instance:
        from .definitions import defs

        if sims.reused:
            print(f"using the running simulators: {', '.join(sims.reused)}")
        registry = defs.resolve_job_def("registry_sync").execute_in_process(
            run_config=quiet, instance=instance, tags={"membership/source": "manual"}, raise_on_error=False
        )
        ab_config = {
            **quiet,
            "ops": {
                "action_builder_campaign": {"config": {"mode": args.mode}},
                "outdated_tagging_deletions": {"config": {"dry_run": not args.apply_deletions}},
                # The demo campaign plants 591 repairs, over the default per-run cap of 500.
                "planned_tag_repairs": {"config": {"dry_run": not args.apply_repairs, "max_repairs": 1000}},
            },
        }
        tags = defs.resolve_job_def("action_builder_tag_sync").execute_in_process(
            run_config=ab_config,
            instance=instance,
            tags={"membership/source": "manual"},
            raise_on_error=False,
        )
        print(_registry_summary(registry, sims.registry_churn))
        print(_ab_summary(tags))
        print(_history_summary())
        ok = registry.success and tags.success
    print(f"\nstate directory: {state_dir()}")
    print(f"Dagster runs:    {os.environ['DAGSTER_HOME']} (browse with `dagster dev`)")
    return 0 if ok else 1


def _registry_summary(result, churn) -> str:
    lines = ["", "== Registry -> voting eligibility " + ("(succeeded)" if result.success else "(FAILED)")]
    if churn:
        lines.append(
            # Counts only: the lists hold kennitalas, which stay out of terminal output.
            f"upstream since last demo run: {len(churn['joined'])} joined, {len(churn['left'])} left, "
            f"{len(churn['changed'])} changed email"
        )
    try:
        raw = result.output_for_node("django_members")
        rejects = result.output_for_node("registry_validation", "member_rejects")
        sync = result.output_for_node("membership_sync")
        log = sync.log
        lines.append(
            f"registry listed: {len(raw)} rows, {len(rejects)} quarantined ({', '.join(sorted(set(rejects['reasons'])))})"
        )
        lines.append(
            f"sync {sync.sync_id}: {log.status}, +{log.members_added} added, "
            f"-{log.members_removed} removed, ~{log.members_updated} changed"
        )
        from .registry.definitions import resources as registry_resources

        store = registry_resources("local")["members_db"].store()
        listed, eligible = store.eligibility_counts()
        lines.append(f"member_eligibility: {eligible} eligible, {listed} listed ({store.engine.url})")
    except Exception as exc:  # a failed step leaves some outputs missing; say so, don't crash
        lines.append(f"(incomplete: {exc})")
    return "\n".join(lines)


def _ab_summary(result) -> str:
    lines = ["", "== Action Builder tag hygiene " + ("(succeeded)" if result.success else "(FAILED)")]
    try:
        scan = result.output_for_node("action_builder_campaign", "ab_scan")
        lines.append(
            f"scanned {scan['people']} people ({scan['mode']}), {scan['judged']} judged, "
            f"{scan['requests']} requests ({scan['requests'] / max(scan['people'], 1):.2f}/person), "
            f"{scan['rate_limited_429']} rate-limited, {scan['seconds']:.1f}s, "
            f"read {scan['strategy']} / {scan['connections_strategy']}"
        )
        mismatches = result.output_for_node("membership_mismatches", "membership_mismatches")
        lines.append(
            f"mismatches:      {len(mismatches)} ({int((~mismatches['inactive']).sum())} active members)"
        )
        lines.append(f"report CSV:      {result.output_for_node('mismatch_report')}")
        for event in result.get_asset_materialization_events():
            if event.asset_key == dg_key("mismatch_report_email"):
                meta = event.materialization.metadata
                if "message" in meta:
                    lines.append(f"email (outbox):  {meta['message'].value}")
                elif "reason" in meta:  # e.g. the day's report already went out
                    lines.append(f"email:           not sent ({meta['reason'].value})")
        deletions = result.output_for_node("outdated_tagging_deletions")
        counts = deletions["action"].value_counts().to_dict() if len(deletions) else {}
        lines.append(f"tag cleanup:     {counts or 'nothing to delete'}")
        from .action_builder.repair import repair_counts

        repairs = repair_counts(result.output_for_node("tag_repairs").to_dict("records"))
        lines.append(f"tag repair:      {repairs or 'nothing to repair'} (people)")
    except Exception as exc:  # a failed step leaves some outputs missing; say so, don't crash
        lines.append(f"(incomplete: {exc})")
    return "\n".join(lines)


def _month_window() -> dict[str, str]:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    start = now - timedelta(days=31)
    return {
        "start": start.strftime("%Y-%m-%d %H:%M:%S"),
        "end": (now + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _history_summary() -> str:
    from .warehouse.definitions import resources as warehouse_resources
    from .warehouse.queries import run_analyst_query

    warehouse = warehouse_resources("local")["warehouse"]
    lines = ["", f"== Audit history ({warehouse.path})"]
    try:
        lost = run_analyst_query(warehouse, "lost_eligibility", **_month_window())
        syncs = run_analyst_query(warehouse, "sync_history", **_month_window())
        units = run_analyst_query(warehouse, "mismatches_by_unit")
        lines.append(f"syncs in the last 31 days: {len(syncs)}; members who lost eligibility: {len(lost)}")
        if len(units):
            latest = units[units["run_started_at"] == units["run_started_at"].max()]
            top = latest.sort_values("mismatches", ascending=False).head(3)
            lines.append(
                f"full scans recorded: {units['run_started_at'].nunique()}; most mismatches in the latest: "
                + ", ".join(f"{r.unit_name} ({r.mismatches})" for r in top.itertuples())
            )
        lines.append(
            "ask more: python -m membership_assets query lost_eligibility | mismatches_by_unit | ..."
        )
    except Exception as exc:
        lines.append(f"(history unavailable: {exc})")
    return "\n".join(lines)


def query(args: argparse.Namespace) -> int:
    """Run one of the shipped analyst queries against this environment's warehouse."""
    from .warehouse.definitions import resources as warehouse_resources
    from .warehouse.queries import run_analyst_query

    params = _month_window()
    if args.start:
        params["start"] = args.start
    if args.end:
        params["end"] = args.end
    frame = run_analyst_query(warehouse_resources()["warehouse"], args.name, **params)
    print(frame.to_markdown(index=False) if len(frame) else "(no rows)")
    return 0


def analyst_views(args: argparse.Namespace) -> int:
    """Create or refresh the analysts' views (no kennitala, name or email; member_key instead)."""
    from .warehouse.definitions import resources as warehouse_resources

    for name in warehouse_resources()["warehouse"].publish_analyst_views():
        print(name)
    return 0


def dg_key(name: str):
    import dagster as dg

    return dg.AssetKey(name)


def simulators(args: argparse.Namespace) -> int:
    from .simulators.local import LocalSimulators

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalSimulators() as sims:
        if sims.action_builder:
            print(f"Action Builder simulator: {sims.action_builder.base_url}")
        if sims.django:
            print(f"Django registry (real Django + DRF): {sims.django.base_url}/api/members/eligible/")
        print("serving; Ctrl-C to stop (state is saved on exit)")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def sync_api(args: argparse.Namespace) -> int:
    """Serve the registry webhook receiver and the sync API (see docs/sync-api.md)."""
    from .config import ConfigError
    from .registry.settings import admin_settings, sync_api_settings
    from .registry.webhook import SyncApiConfigError, serve

    try:
        settings = sync_api_settings(host=args.host, port=args.port)
    except (SyncApiConfigError, ConfigError, ValueError) as exc:
        problems = getattr(exc, "problems", [str(exc)])
        print(f"sync-api refuses to start; fix every line below ({len(problems)}):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    from .registry.admin_auth import AdminConfigError

    try:
        serve(settings, admin_settings(host=settings.host))
    except AdminConfigError as exc:  # the admin page's accounts or session secret (docs/admin-page.md)
        print(f"sync-api: {exc}", file=sys.stderr)
        return 2
    return 0


def _members_db_url() -> str:
    from .registry.settings import RegistrySettings

    try:
        return RegistrySettings.load().members_db_connection_url()
    except KeyError:  # production without MEMBERS_DB_URL
        return ""


def migrate(args: argparse.Namespace) -> int:
    """Apply (or print, or check) the members database's Alembic migrations."""
    from .registry import migrate as schema

    if args.sql:
        print(schema.upgrade_sql(args.dialect, args.from_revision))
        return 0
    import sqlalchemy as sa

    from .registry.store import MembersStore

    url = args.url or _members_db_url()
    if not url:
        print("no members database: set MEMBERS_DB_URL or pass --url", file=sys.stderr)
        return 2
    store = MembersStore.from_url(url)
    shown = sa.make_url(url).render_as_string(hide_password=True)
    try:
        if args.check:
            with store.engine.connect() as conn:
                current = schema.current_revision(conn)
            print(f"{shown}: at {current or 'no revision'}, head {schema.head()}")
            return 0 if current == schema.head() else 1
        before, target = store.ensure_schema()
        done = "already at" if before == target else f"upgraded from {before or 'an empty database'} to"
        print(f"{shown}: {done} {target}")
        return 0
    except schema.SchemaMismatchError as exc:
        print(f"{shown}: {exc}", file=sys.stderr)
        return 2
    finally:
        store.engine.dispose()


def admin_hash(args: argparse.Namespace) -> int:
    """Print the hash of an admin page password (for SYNC_ADMIN_USERS_PASSWORD); asks twice on a
    terminal, else reads one line from stdin. The password itself is never printed."""
    import getpass

    from .registry.admin_auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("admin page password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.user}:{hashed}" if args.user else hashed)
    return 0


def preflight(args: argparse.Namespace) -> int:
    """Check every service read-only (docs/going-live.md); exit 1 on any ✗."""
    from .definitions import resources_for
    from .preflight.cli import main as run

    return run(args, resources_for())


def _generated(module: str, args: argparse.Namespace) -> int:
    """Write (or --check) a reference page generated from the code."""
    import importlib

    return importlib.import_module(f"membership_assets.{module}").main(["--check"] if args.check else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m membership_assets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the main jobs once on the embedded default")
    p.add_argument("--mode", choices=["full", "incremental"], default="full")
    p.add_argument(
        "--apply-deletions", action="store_true", help="really delete outdated taggings in the simulator"
    )
    p.add_argument(
        "--apply-repairs", action="store_true", help="really repair membership tags in the simulator"
    )
    p.set_defaults(func=demo)
    p = sub.add_parser("dev", help="open the Dagster UI on the embedded default (simulators + dagster dev)")
    p.add_argument("dagster_args", nargs="*", help="after --, passed to `dagster dev` (e.g. -- -p 3001)")
    p.set_defaults(func=dev)
    p = sub.add_parser("simulators", help="serve the simulated APIs for `dagster dev`")
    p.set_defaults(func=simulators)
    from .warehouse.queries import query_names

    p = sub.add_parser("query", help="run an analyst query against the audit warehouse")
    p.add_argument("name", choices=query_names())
    p.add_argument("--start", help="'YYYY-MM-DD HH:MM:SS' UTC (default: 31 days ago)")
    p.add_argument("--end", help="'YYYY-MM-DD HH:MM:SS' UTC, exclusive (default: now)")
    p.set_defaults(func=query)
    p = sub.add_parser("sync-api", help="serve the registry webhook receiver and sync API")
    p.add_argument("--host", help="listen address (default SYNC_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default SYNC_API_PORT or 8767)")
    p.set_defaults(func=sync_api)
    p = sub.add_parser("migrate", help="apply the members database's schema migrations (Alembic)")
    p.add_argument("--url", help="SQLAlchemy URL (default: this environment's MEMBERS_DB_URL)")
    p.add_argument("--check", action="store_true", help="only report; exit 1 when not at head")
    p.add_argument("--sql", action="store_true", help="print the upgrade SQL instead of applying it")
    p.add_argument("--dialect", default="postgresql", help="dialect of --sql (postgresql | sqlite)")
    p.add_argument("--from", dest="from_revision", help="revision the --sql output starts from")
    p.set_defaults(func=migrate)
    p = sub.add_parser("admin-hash", help="print a password hash for the admin page's accounts")
    p.add_argument("user", nargs="?", help="print name:hash, ready for SYNC_ADMIN_USERS_PASSWORD")
    p.set_defaults(func=admin_hash)
    p = sub.add_parser("preflight", help="check every service's configuration read-only (exit 1 on any ✗)")
    from .preflight.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=preflight)
    p = sub.add_parser("analyst-views", help="publish the audit views without direct identifiers")
    p.set_defaults(func=analyst_views)
    p = sub.add_parser("config-reference", help="write docs/configuration.md (--check: exit 1 if stale)")
    p.add_argument("--check", action="store_true")
    p.set_defaults(func=lambda a: _generated("config_reference", a))
    p = sub.add_parser("openapi", help="write docs/openapi.json (--check: exit 1 if stale)")
    p.add_argument("--check", action="store_true")
    p.set_defaults(func=lambda a: _generated("registry.openapi", a))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
