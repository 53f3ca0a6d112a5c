"""Every environment variable the code reads, and the reference page built from them.

The domains' typed settings classes (``SETTINGS``) name most variables with their type, default
and meaning; ``OTHER`` lists the few read below them (the environment switch, the privacy key)
or outside Python. ``python -m membership_assets config-reference`` writes
``docs/configuration.md``; ``scan_env_reads`` finds what the code really reads (``os.getenv``,
``os.environ``, ``dg.EnvVar`` and the settings classes' fields), so a test can require one entry
per variable and keep the page current.
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .action_builder.settings import ActionBuilderSettings
from .notify.settings import EmailSettings
from .preflight.settings import PreflightEnv
from .registry.settings import ReceiverSettings, RegistrySettings
from .scratch import ScratchSettings
from .warehouse.settings import WarehouseSettings

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
    # config.py reads whatever variable a settings class names: those come from SETTINGS below.
    paths = [p for p in sorted(package.rglob("*.py")) if p != package / "config.py"]
    trees = {p: ast.parse(p.read_text(), str(p)) for p in paths}
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
    for cls in SETTINGS:
        where = cls.__module__.replace(".", "/") + ".py"
        for field in cls.model_fields.values():
            found.setdefault(str(field.validation_alias), set()).add(where)
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
# Read below the settings classes (the environment switch, the privacy key, the simulators) or
# outside Python (the Dagster instance file); everything else is a settings class's field.
OTHER: dict[str, tuple[Variable, ...]] = {
    "Environment and state": (
        _V(
            "MEMBERSHIP_ENV",
            "`local` or `production`",
            "`local`",
            "switches every resource between the embedded simulators and the real services (`membership_assets/settings.py` is the only place that decides)",
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
INSTANCE_GROUP = "Dagster instance (deploy/dagster.yaml, not read by the Python code)"
SETTINGS = (
    ScratchSettings,
    ActionBuilderSettings,
    RegistrySettings,
    ReceiverSettings,
    EmailSettings,
    WarehouseSettings,
    PreflightEnv,
)


def _shown(value: Any) -> str:
    if value is None or value == () or value == "":
        return "unset" if value is None else "empty"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def from_field(field: Any) -> Variable:
    """A settings field as the reference page shows it."""
    extra = field.json_schema_extra or {}
    default = extra.get("shown_default")
    if default is None:
        default = _shown(field.default)
        if "local" in extra:
            default += f" (local: {_shown(extra['local'])})"
    return Variable(
        str(field.validation_alias), extra["kind"], default, field.description, extra["production"]
    )


def _groups() -> dict[str, tuple[Variable, ...]]:
    groups: dict[str, list[Variable]] = {
        title: list(vs) for title, vs in OTHER.items() if title != INSTANCE_GROUP
    }
    for cls in SETTINGS:
        groups.setdefault(cls.GROUP, []).extend(from_field(f) for f in cls.model_fields.values())
    groups[INSTANCE_GROUP] = list(OTHER[INSTANCE_GROUP])
    # The simulators' group after the services', as a reader meets them.
    local = groups.pop("Local simulators and demo")
    instance = groups.pop(INSTANCE_GROUP)
    return {
        **{t: tuple(v) for t, v in groups.items()},
        "Local simulators and demo": tuple(local),
        INSTANCE_GROUP: tuple(instance),
    }


GROUPS: dict[str, tuple[Variable, ...]] = _groups()
VARIABLES: dict[str, Variable] = {v.name: v for group in GROUPS.values() for v in group}


def render() -> str:
    """The reference page (docs/configuration.md)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m membership_assets config-reference` from the settings",
        "     classes (membership_assets/*/settings.py) and config_reference.OTHER; edit those -->",
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
