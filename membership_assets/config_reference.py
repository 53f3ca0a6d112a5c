"""Every environment variable the code reads, in one table, and the reference page built from it.

``python -m membership_assets config-reference`` writes ``docs/configuration.md`` from
``VARIABLES``; ``scan_env_reads`` finds what the code really reads (``os.getenv``,
``os.environ``, ``dg.EnvVar``) by walking its syntax trees, so a test can require one entry per
variable and keep the page current.
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
PAGE = ROOT / "docs" / "configuration.md"

# -- what the code reads ---------------------------------------------------------------------------

NAME_PATTERN = r"[A-Z][A-Z0-9_]*"


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _env_argument(node: ast.AST) -> ast.AST | None:
    """The variable-name expression of an environment read (``os.getenv(X)``, ``os.environ[X]``,
    ``os.environ.get/setdefault/pop(X)``, ``X in os.environ``, ``EnvVar(X)``), else None."""
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("getenv", "EnvVar"):
            return node.args[0]
        if name in ("get", "setdefault", "pop") and _is_environ(getattr(func, "value", None)):
            return node.args[0]
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        return node.slice
    if (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In | ast.NotIn)
        and _is_environ(node.comparators[0])
    ):
        return node.left
    return None


def _module_constants(trees: dict[Path, ast.Module]) -> tuple[dict[str, str], dict[str, ast.AST]]:
    """Module-level ``NAME = "text"`` strings and collection literals of every module."""
    strings: dict[str, str] = {}
    collections: dict[str, ast.AST] = {}
    for tree in trees.values():
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign | ast.AnnAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name) and isinstance(stmt.value, ast.Constant):
                        if isinstance(stmt.value.value, str):
                            strings[target.id] = stmt.value.value
                    elif isinstance(target, ast.Name) and isinstance(
                        stmt.value, ast.Dict | ast.Tuple | ast.List
                    ):
                        collections[target.id] = stmt.value
    return strings, collections


class _Reads(ast.NodeVisitor):
    """Environment reads of one module, resolved to variable names where the syntax allows."""

    def __init__(self, strings: dict[str, str], collections: dict[str, ast.AST]):
        self.strings, self.collections = strings, collections
        self.names: set[str] = set()
        self.helpers: list[tuple[str, int, str]] = []  # (function, argument index, parameter)
        self.unresolved: list[str] = []
        self.functions: list[ast.FunctionDef] = []
        self.loop_targets: list[dict[str, tuple[ast.AST, ast.AST]]] = []

    def visit_FunctionDef(self, node):  # noqa: N802 (ast's naming)
        self.functions.append(node)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _visit_comprehension(self, node):
        targets = {}
        for gen in node.generators:
            for name in ast.walk(gen.target):
                if isinstance(name, ast.Name):
                    targets[name.id] = (gen.target, gen.iter)
        self.loop_targets.append(targets)
        self.generic_visit(node)
        self.loop_targets.pop()

    visit_DictComp = visit_ListComp = visit_SetComp = visit_GeneratorExp = _visit_comprehension

    def generic_visit(self, node):
        argument = _env_argument(node)
        if argument is not None:
            self._resolve(argument, node)
        super().generic_visit(node)

    def _resolve(self, expr: ast.AST, at: ast.AST) -> None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            self.names.add(expr.value)
        elif isinstance(expr, ast.Name) and self._loop_values(expr.id) is not None:
            self.names.update(self._loop_values(expr.id))
        elif isinstance(expr, ast.Name) and self.functions and expr.id in self._params(self.functions[-1]):
            func = self.functions[-1]
            self.helpers.append((func.name, self._params(func).index(expr.id), expr.id))
        elif isinstance(expr, ast.Name) and expr.id in self.strings:
            self.names.add(self.strings[expr.id])
        else:
            self.unresolved.append(f"line {at.lineno}: {ast.unparse(at)}")

    @staticmethod
    def _params(func: ast.FunctionDef) -> list[str]:
        names = [a.arg for a in func.args.posonlyargs + func.args.args]
        return names[1:] if names[:1] in (["self"], ["cls"]) else names

    def _loop_values(self, name: str) -> list[str] | None:
        """Strings a comprehension variable takes over a module-level literal collection."""
        for targets in reversed(self.loop_targets):
            if name not in targets:
                continue
            target, source = targets[name]
            method = None
            if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute) and not source.args:
                method, source = source.func.attr, source.func.value
            literal = self.collections.get(getattr(source, "id", None))
            if literal is None:
                return None
            if isinstance(literal, ast.Dict):
                second = isinstance(target, ast.Tuple) and getattr(target.elts[1], "id", None) == name
                values = (
                    literal.values if method == "values" or (method == "items" and second) else literal.keys
                )
            else:
                values = literal.elts
            return [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        return None


def _helper_calls(tree: ast.Module, helpers, strings: dict[str, str], names: set[str], unresolved: list[str]):
    """Names passed to a module's own reading helpers (``_secret("X")``, ``num.get("X", ...)``)."""
    import re

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        for function, index, param in helpers:
            if called != function:
                continue
            given = node.args[index] if index < len(node.args) else None
            given = next((k.value for k in node.keywords if k.arg == param), given)
            if isinstance(given, ast.Constant) and isinstance(given.value, str):
                if re.fullmatch(NAME_PATTERN, given.value):
                    names.add(given.value)
            elif isinstance(given, ast.Name) and given.id in strings:
                names.add(strings[given.id])
            elif given is not None and not (isinstance(given, ast.Name) and given.id == param):
                unresolved.append(f"line {node.lineno}: {ast.unparse(node)}")


def scan_env_reads(package: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """Every variable the package's code reads -> the files reading it, and the reads whose name
    could not be worked out from the syntax (a test requires none).

    A name is resolved when it is a string literal, a module-level string constant, a variable
    of a comprehension over a module-level literal dict/tuple/list, or a parameter of a helper
    function whose calls in the same module pass one of those."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in sorted(package.rglob("*.py"))}
    strings, collections = _module_constants(trees)
    found: dict[str, set[str]] = {}
    unresolved: list[str] = []
    for path, tree in trees.items():
        reads = _Reads(strings, collections)
        reads.visit(tree)
        _helper_calls(tree, reads.helpers, strings, reads.names, reads.unresolved)
        where = str(path.relative_to(package.parent))
        for name in reads.names:
            found.setdefault(name, set()).add(where)
        unresolved += [f"{where} {u}" for u in reads.unresolved]
    return found, unresolved


# -- the table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One environment variable: its type, default (as a reader sees it), meaning, and whether a
    production deployment must set it (then deploy/ must name it)."""

    name: str
    type: str
    default: str
    meaning: str
    required_in_production: bool = False


_V = Variable
# Grouped as the reference page shows them. Defaults say "local:" where only the embedded default has one.
GROUPS: dict[str, tuple[Variable, ...]] = {
    "Environment and state": (
        _V(
            "MEMBERSHIP_ENV",
            "`local` or `production`",
            "`local`",
            "switches every resource between the embedded simulators and the real services (`environment.py` is the only place that decides)",
            True,
        ),
        _V(
            "MEMBERSHIP_STATE_DIR",
            "path",
            "`./.local`",
            "scan checkpoints, report CSVs, the .eml outbox and the local databases; in production the mounted `membership-assets-state` volume, else runs refuse to start",
            True,
        ),
        _V(
            "MEMBERSHIP_SCRATCH_URL",
            "`gs://bucket/prefix` or path",
            "local: `$DAGSTER_HOME/storage/scratch`",
            "encrypted step outputs every run worker sees (required in production: each run pod reads its parent's outputs on a retry)",
            True,
        ),
        _V(
            "MEMBERSHIP_PRIVACY_KEY_PASSWORD",
            "secret",
            "local: a random key kept in `$MEMBERSHIP_STATE_DIR/keys/privacy.key`",
            "secret behind member pseudonyms (`member_key`) and scratch/checkpoint encryption (required in production)",
            True,
        ),
        _V(
            "MEMBERSHIP_SCHEDULE_STATUS",
            "`running` or `stopped`",
            "`stopped`",
            "`running` starts every schedule when the code location loads; a schedule started or stopped in the UI keeps that state",
            True,
        ),
        _V(
            "DAGSTER_HOME",
            "path",
            "`./.dagster_home` (`dev`, `demo`)",
            "Dagster's instance directory; `dev`/`demo` write the project's `dagster.yaml` there; `preflight` reads the instance from it when set",
            True,
        ),
        _V(
            "STORAGE_EMULATOR_HOST",
            "URL",
            "unset",
            "tests only: a Cloud Storage emulator instead of storage.googleapis.com (then no credentials are sent)",
        ),
    ),
    "Action Builder (tag hygiene)": (
        _V(
            "ACTION_BUILDER_CREDENTIALS_PASSWORD",
            "JSON secret",
            "local: the simulator's token",
            '`{"api_token": "...", "subdomain": "yourorg"}`',
            True,
        ),
        _V(
            "ACTION_BUILDER_BASE_URL",
            "URL",
            "local: `http://127.0.0.1:$ACTION_BUILDER_SIM_PORT/api/rest/v1`",
            "the API root the local resources call (production builds it from the credentials' subdomain)",
        ),
        _V(
            "ACTION_BUILDER_CAMPAIGN_ID",
            "string",
            "empty",
            "campaign to scan (optional if the token sees one campaign; with several the run fails naming them)",
        ),
        _V(
            "ACTION_BUILDER_RATE_LIMIT",
            "requests/second (float)",
            "`4` (production), `100` (local simulator)",
            "the shared pacing of every Action Builder request",
        ),
        _V(
            "ACTION_BUILDER_APPLY_DELETIONS",
            "boolean (`true`/`1`/`yes`)",
            "false",
            "lets the schedules delete outdated taggings for real (otherwise their cleanup is a dry run)",
        ),
        _V(
            "ACTION_BUILDER_APPLY_REPAIRS",
            "boolean (`true`/`1`/`yes`)",
            "false",
            "lets the schedules repair tags for real (docs/tag-repair.md)",
        ),
        _V(
            "ACTION_BUILDER_UNIT_FIELD",
            "string",
            "`Bargaining Unit`",
            "the campaign's tag field naming a person's unit (checked against the tag catalog)",
        ),
        _V(
            "ACTION_BUILDER_TYPE_FIELD", "string", "`Membership Type`", "the tag field of the membership type"
        ),
        _V(
            "ACTION_BUILDER_STATUS_FIELD",
            "string",
            "`Membership Status`",
            "the tag field of the membership status (empty: status not used)",
        ),
        _V(
            "ACTION_BUILDER_CONNECTION_TYPE",
            "string",
            "`People + Units`",
            "the unit connection type (confirmed by `connection_types` or by the connections read)",
        ),
        _V(
            "ACTION_BUILDER_UNIT_ENTITY_TYPE",
            "string",
            "`Unit`",
            "the unit entity type (confirmed by `entity_types` or by the entities read)",
        ),
    ),
    "Django registry and the sync": (
        _V(
            "DJANGO_API_URL",
            "URL",
            "local: the Django stand-in",
            "the registry's base URL (shown by its variable name in the UI; a user name in it pairs with `DJANGO_API_PASSWORD`)",
            True,
        ),
        _V(
            "DJANGO_API_KEY_PASSWORD",
            "secret",
            "local: the stand-in's token",
            "the registry's API token",
            True,
        ),
        _V(
            "DJANGO_API_PASSWORD",
            "secret",
            "unset",
            "the registry's API token by the `{NAME}_PASSWORD` convention (sent as `Authorization: Token …`, "
            "wins over `DJANGO_API_KEY_PASSWORD`); if `DJANGO_API_URL` names a user, that user's basic-auth password",
        ),
        _V(
            "DJANGO_AUTH_SCHEME",
            "`Token` or `Bearer`",
            "`Token`",
            "the `Authorization` scheme of the registry",
        ),
        _V(
            "DJANGO_MEMBERS_PATH",
            "path",
            "`api/members/eligible`",
            "the members listing under `DJANGO_API_URL`",
        ),
        _V(
            "DJANGO_WHOLE_LIST_ETAG",
            "boolean (`true`)",
            "false",
            "`true` when the listing's ETag changes with any member (polling: 1 request per tick)",
        ),
        _V(
            "MEMBERS_DB_URL",
            "SQLAlchemy URL without password",
            "local: SQLite under the state dir",
            "the eligibility (members) database, e.g. `postgresql+psycopg://sync@host/ekklesia`; migrate it with `python -m membership_assets migrate` before deploying new code",
            True,
        ),
        _V(
            "MEMBERS_DB_PASSWORD",
            "secret",
            "unset",
            "the members database's password (merged into the URL at use, never shown)",
            True,
        ),
        _V(
            "REGISTRY_MAX_REMOVALS",
            "integer",
            "`500`",
            "guard: most members one sync (or rollback) may remove or take eligibility from (Entra's default)",
        ),
        _V(
            "REGISTRY_MAX_REMOVAL_FRACTION",
            "fraction",
            "`0.2`",
            "guard: most active/eligible members one sync may remove or take eligibility from, from 100 members (Okta's default)",
        ),
        _V(
            "REGISTRY_MAX_SHRINK_FRACTION",
            "fraction",
            "`0.2`",
            "guard: how much smaller than at the last successful sync the listing (or, for a rollback, the roll) may get",
        ),
        _V(
            "REGISTRY_MAX_REJECT_FRACTION",
            "fraction",
            "`0.1`",
            "guard: share of listed rows that may fail validation",
        ),
        _V(
            "REGISTRY_STATUS_MAP",
            "JSON object",
            "`active`; `suspended`/`unpaid` → suspended; `inactive`/`deleted` → removed",
            "maps the registry's statuses to `active` / `suspended` / `removed`; any other status is rejected",
        ),
        _V(
            "REGISTRY_MISSING_STATUS",
            "`reject` or `active`",
            "`reject`",
            "rows with no status field: quarantined (a listing where no row has one fails the run), or all members in good standing (only for an endpoint that lists nobody else)",
        ),
        _V("REGISTRY_SYNC_CRON", "cron", "`0 * * * *`", "when `registry_hourly` runs (Atlantic/Reykjavik)"),
        _V(
            "REGISTRY_EVENTS_QUIET_SECONDS",
            "seconds",
            "`5`",
            "debounce: a webhook-started sync waits until no event arrived for this long",
        ),
        _V(
            "REGISTRY_EVENTS_MAX_WAIT_SECONDS",
            "seconds",
            "`45`",
            "debounce: ... or until the oldest pending event waited this long",
        ),
    ),
    "Webhook receiver and sync API (`sync-api`)": (
        _V(
            "REGISTRY_WEBHOOK_SECRET_PASSWORD",
            "secret (32+ bytes)",
            "local: `simulated-webhook-secret`",
            "shared secret of Django's signed webhooks and signed API calls (required by `sync-api` in production)",
            True,
        ),
        _V(
            "REGISTRY_WEBHOOK_SECRET_PREVIOUS_PASSWORD",
            "secret",
            "unset",
            "also accepted during a secret rotation",
        ),
        _V(
            "SYNC_API_KEY_PASSWORD",
            "secret",
            "local: `simulated-sync-api-key`",
            "API key of `/api/sync/*` (`X-Api-Key`; production: optional, only signed calls without it)",
        ),
        _V("SYNC_API_KEY_PREVIOUS_PASSWORD", "secret", "unset", "also accepted during a key rotation"),
        _V("SYNC_API_HOST", "address", "`127.0.0.1`", "listen address (`--host` overrides)"),
        _V("SYNC_API_PORT", "port", "`8767`", "listen port (`--port` overrides)"),
        _V(
            "SYNC_API_ALLOWED_IPS",
            "comma-separated addresses/CIDRs",
            "any",
            "clients allowed to call (others get 403)",
        ),
        _V(
            "SYNC_API_TRUSTED_PROXIES",
            "comma-separated CIDRs",
            "none",
            "proxies whose `X-Forwarded-For` is believed",
        ),
        _V("SYNC_API_RATE_LIMIT", "requests/second", "`50`", "per-client token bucket rate"),
        _V(
            "SYNC_API_RATE_BURST",
            "integer",
            "`600`",
            "per-client token bucket size (a Django bulk save passes)",
        ),
        _V("SYNC_API_MAX_CONNECTIONS", "integer", "`1000`", "open connections (kept below the file limit)"),
        _V("SYNC_API_HEADER_TIMEOUT", "seconds", "`10`", "from connection to full headers"),
        _V("SYNC_API_BODY_TIMEOUT", "seconds", "`20`", "from a request's first byte to its last"),
        _V("SYNC_API_KEEPALIVE_TIMEOUT", "seconds", "`5`", "idle keep-alive connections"),
        _V("SYNC_API_DB_TIMEOUT", "seconds", "`5`", "longest wait for the members database (then 503)"),
        _V("SYNC_API_MAX_PENDING_EVENTS", "integer", "`100000`", "unconsumed events before webhooks get 429"),
        _V("SYNC_API_STATS_SECONDS", "seconds", "`30`", "how often refusal counts are written"),
        _V(
            "SYNC_ADMIN_USERS_PASSWORD",
            "`name:hash` pairs",
            "local on loopback: `admin` / `simulated-admin-password`",
            "the admin page's accounts (hashes from `python -m membership_assets admin-hash`)",
        ),
        _V(
            "SYNC_ADMIN_SESSION_SECRET_PASSWORD",
            "secret (32+ characters)",
            "random per process",
            "signs admin sessions; required in production when accounts exist, so every replica accepts a session",
        ),
        _V("SYNC_ADMIN_SESSION_HOURS", "hours", "`8`", "admin session length (0.02 to 168)"),
        _V(
            "SYNC_ADMIN_ORIGIN",
            "URL",
            "the Host header",
            "the admin page's public origin behind a proxy, e.g. `https://sync.example.org`",
        ),
    ),
    "Email": (
        _V(
            "SENDGRID_API_KEY_PASSWORD",
            "secret",
            "local: .eml outbox instead",
            "SendGrid key for the report and alert email",
            True,
        ),
        _V("EMAIL_FROM", "address", "`membership-sync@example.org`", "sender of every email", True),
        _V(
            "REPORT_RECIPIENTS",
            "comma-separated addresses",
            "local: `organizers@example.org`",
            "recipients of the organizers' tag report",
            True,
        ),
        _V(
            "ADMIN_EMAILS",
            "comma-separated addresses",
            "local: `admins@example.org`",
            "recipients of failure and staleness alerts",
            True,
        ),
    ),
    "Audit warehouse": (
        _V(
            "BIGQUERY_PROJECT",
            "string",
            "ADC's project",
            "the audit warehouse's project (production uses BigQuery; local uses DuckDB)",
            True,
        ),
        _V(
            "BIGQUERY_DATASET",
            "string",
            "`membership_audit`",
            "the audit dataset (`membership_audit_analyst` holds the analyst views)",
            True,
        ),
        _V("BIGQUERY_LOCATION", "string", "BigQuery's default", "dataset location"),
        _V(
            "BIGQUERY_CREDENTIALS_PASSWORD",
            "JSON secret",
            "Application Default Credentials",
            "service-account JSON for BigQuery (and scratch in Cloud Storage)",
        ),
        _V(
            "BIGQUERY_ANALYST_READERS",
            "comma-separated members",
            "none",
            "who may read the analyst views, e.g. `group:analysts@example.org`",
        ),
    ),
    "Preflight": (
        _V("SENDGRID_API_URL", "URL", "`https://api.sendgrid.com`", "SendGrid API root the preflight checks"),
        _V(
            "SYNC_API_URL",
            "URL",
            "unset",
            "the webhook receiver's base URL as Django reaches it (the preflight sends a signed ping)",
        ),
    ),
    "Local simulators and demo": (
        _V("ACTION_BUILDER_SIM_PORT", "port", "`8765`", "the Action Builder simulator's loopback port"),
        _V("DJANGO_SIM_PORT", "port", "`8766`", "the Django stand-in's loopback port"),
        _V("ACTION_BUILDER_SIM_PEOPLE", "integer", "`3000`", "people in the simulated campaign"),
        _V("DJANGO_SIM_MEMBERS", "integer", "`2000`", "members in the simulated registry"),
        _V(
            "REGISTRY_WEBHOOK_URL",
            "URL",
            "unset",
            "where the Django stand-in (and a real Django's `signals.py`) sends member-change webhooks",
        ),
    ),
    "Dagster instance (deploy/dagster.yaml, not read by the Python code)": (
        _V("DAGSTER_PG_HOST", "host", "none", "Dagster's own Postgres (runs, events, schedules)", True),
        _V("DAGSTER_PG_PORT", "port", "none", "Dagster's Postgres port", True),
        _V("DAGSTER_PG_DB", "string", "none", "Dagster's Postgres database", True),
        _V("DAGSTER_PG_USERNAME", "string", "none", "Dagster's Postgres user", True),
        _V("DAGSTER_PG_PASSWORD", "secret", "none", "Dagster's Postgres password", True),
        _V(
            "DAGSTER_COMPUTE_LOG_BUCKET",
            "bucket name",
            "none",
            "run stdout/stderr in Cloud Storage (the chart takes it in `computeLogManager`)",
            True,
        ),
    ),
}
VARIABLES: dict[str, Variable] = {v.name: v for group in GROUPS.values() for v in group}


def render() -> str:
    """The reference page (docs/configuration.md)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m membership_assets config-reference` from",
        "     membership_assets/config_reference.py; edit the table there, not this page -->",
        "",
        "Every environment variable the code reads. `MEMBERSHIP_ENV=production` switches every",
        "resource to the real services; secrets follow the `{NAME}_PASSWORD` convention (read at run",
        "launch, never shown in the UI, redacted in errors). **Production** marks what a production",
        "deployment must set; `deploy/` (Helm values, Kubernetes manifests, Dockerfile,",
        "`deploy/dagster.yaml`) names each of those (checked by `membership_assets_tests/test_docs.py`).",
        "",
    ]
    for title, variables in GROUPS.items():
        lines += [
            f"## {title}",
            "",
            "| variable | type | default | meaning | production |",
            "|---|---|---|---|---|",
        ]
        for v in variables:
            needed = "required" if v.required_in_production else ""
            lines.append(
                f"| `{v.name}` | {cell(v.type)} | {cell(v.default)} | {cell(v.meaning)} | {needed} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with --check exit 1 when it is not current."""
    parser = argparse.ArgumentParser(prog="config-reference", description=main.__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        current = PAGE.exists() and PAGE.read_text() == render()
        print(
            f"{PAGE} is {'current' if current else 'out of date: run python -m membership_assets config-reference'}"
        )
        return 0 if current else 1
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
    return 0
