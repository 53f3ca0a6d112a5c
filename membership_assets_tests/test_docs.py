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
