"""The reference pages are generated from the code and stay current with it.

Configuration: every variable the code reads (found by ``config_reference.scan_env_reads`` over
the syntax trees) has an entry in ``config_reference.VARIABLES``, docs/configuration.md is what
``python -m membership_assets config-reference`` writes, and deploy/ names every variable a
production deployment must set.
"""

from __future__ import annotations

import re
from pathlib import Path

from membership_assets import config_reference

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_FILES = [
    ROOT / "deploy" / "helm" / "values.yaml",
    *sorted((ROOT / "deploy" / "k8s").glob("*.yaml")),
    ROOT / "deploy" / "Dockerfile",
    ROOT / "deploy" / "dagster.yaml",
]


def test_every_variable_the_code_reads_is_in_the_table():
    found, unresolved = config_reference.scan_env_reads()
    assert not unresolved, f"environment reads whose variable name cannot be read from the code: {unresolved}"
    missing = {name: sorted(files) for name, files in found.items() if name not in config_reference.VARIABLES}
    assert not missing, f"add these to config_reference.GROUPS: {missing}"
    # The scan sees the reads made through helpers and loops, not only literal getenv calls.
    for name in (
        "MEMBERSHIP_PRIVACY_KEY_PASSWORD",
        "ACTION_BUILDER_UNIT_FIELD",
        "SYNC_API_RATE_LIMIT",
        "ACTION_BUILDER_APPLY_DELETIONS",
        "DJANGO_API_PASSWORD",
        "REGISTRY_EVENTS_QUIET_SECONDS",
    ):
        assert name in found, name


def test_the_table_lists_nothing_the_code_does_not_read():
    found, _ = config_reference.scan_env_reads()
    instance = {
        v.name
        for v in config_reference.GROUPS[
            "Dagster instance (deploy/dagster.yaml, not read by the Python code)"
        ]
    }
    dagster_yaml = (ROOT / "deploy" / "dagster.yaml").read_text()
    assert all(f"env: {name}" in dagster_yaml for name in instance)
    assert set(config_reference.VARIABLES) - instance <= set(found)


def test_the_reference_page_is_current():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == config_reference.render(), "run: python -m membership_assets config-reference"
    for name in config_reference.VARIABLES:
        assert f"| `{name}` |" in page


def test_deploy_names_every_variable_production_requires():
    text = "\n".join(p.read_text() for p in DEPLOY_FILES)
    named = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", text))
    required = [v.name for v in config_reference.VARIABLES.values() if v.required_in_production]
    assert len(required) >= 20
    missing = [name for name in required if name not in named]
    assert not missing, f"deploy/ does not name these production variables: {missing}"


def test_the_command_writes_and_checks_the_page(tmp_path, monkeypatch):
    from membership_assets.__main__ import main

    page = tmp_path / "configuration.md"
    monkeypatch.setattr(config_reference, "PAGE", page)
    assert main(["config-reference", "--check"]) == 1
    assert main(["config-reference"]) == 0
    assert page.read_text() == config_reference.render()
    assert main(["config-reference", "--check"]) == 0


# -- troubleshooting: every message a run or a request can end with has an entry -----------------
#
# Matching rule. The messages are read from the code's syntax trees, not from a hand-kept list:
# in the modules below, the text given to every ``raise SomeError(...)``, to ``dg.Failure(...)``
# (first argument or ``description=``), to ``CatalogMismatch(...)``, and the message of every
# guard ``Violation(code, message, override)``; for the receiver's and the admin page's refusals
# (``Rejected(status, reason)``, ``Refused(status, reason)``) the reason code. A message's *key*
# is its longest piece of literal text (f-string values and concatenated variables cut it into
# pieces), trimmed of spaces and punctuation at both ends; a message passed on in a variable is
# followed to the variable's assignment in the same function. docs/troubleshooting.md must contain
# every key verbatim (case and runs of whitespace ignored, backticks removed). Messages with no
# literal text of their own (re-raising another error's text) have no key: the text they pass on
# is extracted where it is written.

MESSAGE_MODULES = [
    *sorted((ROOT / "membership_assets" / "registry").glob("*.py")),
    *sorted((ROOT / "membership_assets" / "action_builder").glob("*.py")),
    *sorted((ROOT / "membership_assets" / "preflight").glob("*.py")),
    ROOT / "membership_assets" / "connectors" / "http.py",
    ROOT / "membership_assets" / "scratch.py",
    ROOT / "membership_assets" / "privacy.py",
]
MESSAGE_CALLS = {"Failure", "CatalogMismatch"}
SECOND_ARGUMENT_CALLS = {"Rejected", "Refused", "Violation"}  # (status or code, reason or message)


def _pieces(node, assignments) -> list[str]:
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        out, run = [], ""
        for part in node.values:
            if isinstance(part, ast.Constant):
                run += part.value
            else:
                out.append(run)
                run = ""
        return [*out, run]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _pieces(node.left, assignments), _pieces(node.right, assignments)
        if left and right:  # "a" "b" across a + join into one run of text
            return [*left[:-1], left[-1] + right[0], *right[1:]]
        return left + right
    if isinstance(node, ast.IfExp):
        return _pieces(node.body, assignments) + _pieces(node.orelse, assignments)
    if isinstance(node, ast.Name) and node.id in assignments:
        return _pieces(assignments[node.id], assignments)
    return ["", ""]  # text not written here: it breaks the run of literal text


def _key(pieces: list[str]) -> str | None:
    trimmed = [p.strip(" \t\n:;,.()[]{}'\"=") for p in pieces]
    longest = max(trimmed, key=len, default="")
    return longest if len(longest.split()) >= 2 or re.fullmatch(r"[a-z_]+", longest or "-") else None


def code_messages() -> dict[str, str]:
    """Key -> where it is written, for every message of MESSAGE_MODULES."""
    import ast

    found: dict[str, str] = {}
    for path in MESSAGE_MODULES:
        tree = ast.parse(path.read_text())
        for func in [
            tree,
            *[n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)],
        ]:
            assignments = {
                t.id: n.value
                for n in ast.walk(func)
                if isinstance(n, ast.Assign)
                for t in n.targets
                if isinstance(t, ast.Name)
            }
            raised = {
                id(n.exc) for n in ast.walk(func) if isinstance(n, ast.Raise) and isinstance(n.exc, ast.Call)
            }
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                name = (
                    call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                )
                if name in SECOND_ARGUMENT_CALLS and len(call.args) >= 2:
                    message = call.args[1]
                elif name in MESSAGE_CALLS or id(call) in raised:
                    described = [k.value for k in call.keywords if k.arg == "description"]
                    message = call.args[0] if call.args else (described[0] if described else None)
                else:
                    continue
                key = _key(_pieces(message, assignments)) if message is not None else None
                if key:
                    found.setdefault(key, f"{path.relative_to(ROOT)}:{call.lineno}")
    return found


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("`", "")).lower()


def test_every_failure_message_has_a_troubleshooting_entry():
    guide = _normal((ROOT / "docs" / "troubleshooting.md").read_text())
    messages = code_messages()
    assert len(messages) >= 80, "the extraction finds the messages (guards, failures, refusals)"
    for known in (
        "sync stopped before writing anything",
        "rate_limited",
        "would be removed",
        "compared nothing",
    ):
        assert any(known in key for key in messages), known
    missing = {key: where for key, where in messages.items() if _normal(key) not in guide}
    assert not missing, (
        "add an entry (message -> cause -> fix) to docs/troubleshooting.md for:\n"
        + "\n".join(f"  {where}: {key!r}" for key, where in sorted(missing.items(), key=lambda kv: kv[1]))
    )


# -- the API reference ----------------------------------------------------------------------------


def _app_operations(routes, prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route of a Starlette app, mounted ones included (HEAD is GET's)."""
    from starlette.routing import Mount, Route

    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            found |= _app_operations(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            found |= {(m.lower(), prefix + route.path) for m in (route.methods or {"GET"}) if m != "HEAD"}
    return found


def test_every_route_of_the_sync_service_is_in_the_openapi_document(tmp_path):
    from membership_assets.registry import openapi
    from membership_assets.registry.admin import admin_page
    from membership_assets.registry.settings import admin_settings
    from membership_assets.registry.webhook import SyncApiSettings, create_app

    url = f"sqlite:///{tmp_path / 'members.sqlite'}"
    app = create_app(
        SyncApiSettings(members_db_url=url, webhook_secret="s" * 32),
        extra_routes=admin_page(url, admin_settings("local")),
    )
    served = _app_operations(app.routes)
    documented = {(method, path) for path, ops in openapi.spec()["paths"].items() for method in ops}
    assert served == documented, f"undocumented: {served - documented}; gone: {documented - served}"
    for path, ops in openapi.spec()["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (method, path)


def test_the_served_document_equals_docs_openapi_json(tmp_path):
    import json

    import requests

    from membership_assets.registry import openapi
    from membership_assets_tests.test_registry_webhook import receiver

    written = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert (ROOT / "docs" / "openapi.json").read_text() == openapi.render(), (
        "run: python -m membership_assets openapi"
    )
    with receiver(f"sqlite:///{tmp_path / 'members.sqlite'}") as base:
        response = requests.get(f"{base}/api/openapi.json", timeout=10)  # no key, no signature
    assert response.status_code == 200
    assert response.json() == written
    assert written["openapi"].startswith("3.")
    # Every reason code the receiver answers with is documented on some response.
    text = json.dumps(written)
    for code in (
        "bad_signature",
        "stale_timestamp",
        "too_many_pending_events",
        "limit_out_of_range",
        "rate_limited",
    ):
        assert f'"{code}"' in text, code


# -- the pages hold together ----------------------------------------------------------------------


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_in_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", resolved.read_text(), flags=re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_readme_is_a_front_page_that_leads_to_the_guides():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh", "python -m membership_assets dev"):
        assert command in readme
    # The newcomer's three questions each have a page linked from the front page.
    for page in ("docs/admin-guide.md", "docs/troubleshooting.md", "docs/configuration.md"):
        assert f"]({page})" in readme
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"pages no one can find from the README: {pages - linked}"
    adrs = (ROOT / "docs" / "adr" / "README.md").read_text()
    for record in sorted((ROOT / "docs" / "adr").glob("0*.md")):
        assert f"]({record.name})" in adrs
        assert all(f"## {part}" in record.read_text() for part in ("Context", "Decision", "Consequences"))
