"""The project's shape, held by walking its imports (every import, also those inside functions,
so no lint setting can switch this off): no import cycle among its modules, and the Lambda
package (rides.stream, what the images and the zip ship whole) needs nothing of the project
outside itself and no third-party package beyond the functions' runtime requirements."""

from __future__ import annotations

import ast
import functools
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rides", "lambda_function")
LAMBDA_PACKAGE = "rides.stream"
# The handlers the Lambda images run on top of it.
LAMBDA_HANDLERS = ("lambda_function.handler", "lambda_function.decision_handler", "lambda_function.evaluation_handler")
# The local stack (emulator, runner, demo, chaos) is for laptops and tests: production code (what
# runs in AWS or against it: the functions, the web service, the batch job, the operator's
# commands) never imports it. Only the CLI, which starts the local stack, and the stack itself do.
LOCAL_STACK = "rides.local"
MAY_IMPORT_THE_LOCAL_STACK = ("rides.local", "rides.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def optional_nodes(tree: ast.AST) -> set[ast.AST]:
    """Imports under `if TYPE_CHECKING:` or in a `try: … except ImportError` (an extra the
    images leave out on purpose and report clearly when it is needed)."""
    optional: set[ast.AST] = set()
    for node in ast.walk(tree):
        guarded = isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        guarded |= isinstance(node, ast.Try) and any(
            getattr(h.type, "id", None) == "ImportError" for h in node.handlers
        )
        if guarded:
            for statement in node.body:
                optional.update(ast.walk(statement))
    return optional


def imports_of(name: str, path: Path, *, required_only: bool = False) -> set[str]:
    """Every module `name` imports (absolute names; `from a import b` counts a.b when a.b is a module)."""
    tree = ast.parse(path.read_text())
    skip = optional_nodes(tree) if required_only else set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def project_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: {m for m in imports_of(name, path) if m in modules and m != name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_projects_modules():
    graph = project_graph()
    assert len(graph) > 40
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_planted_cycle():
    graph = project_graph()
    graph["rides.stream.features"] = graph["rides.stream.features"] | {"rides.stream.model"}
    assert ["rides.stream.features", "rides.stream.model"] in cycles(graph)


@functools.cache
def runtime_distributions() -> frozenset[str]:
    names = set()
    for lock in ("requirements.lock.txt", "requirements-sklearn.lock.txt"):
        for line in (ROOT / "lambda_function" / lock).read_text().splitlines():
            if match := re.match(r"^([A-Za-z0-9_.-]+)==", line):
                names.add(match.group(1).lower().replace("_", "-"))
    return frozenset(names)


@functools.cache
def installed_distributions() -> dict[str, frozenset[str]]:
    """Top-level import name → the distributions that provide it, names normalized."""
    return {k: frozenset(d.lower().replace("_", "-") for d in v) for k, v in packages_distributions().items()}


def foreign_imports(module: str, path: Path, allowed_project: tuple[str, ...]) -> set[str]:
    """What `module` needs that is neither the standard library, its runtime requirements, nor
    the allowed parts of the project."""
    distributions = installed_distributions()
    runtime = runtime_distributions()
    foreign = set()
    for imported in imports_of(module, path, required_only=True):
        top = imported.split(".")[0]
        if not top or top == "__future__" or top in sys.stdlib_module_names:
            continue
        if top in PACKAGES:
            if imported != "rides" and not imported.startswith(allowed_project) and imported in project_modules():
                foreign.add(imported)
            continue
        if not distributions.get(top, frozenset()) & runtime:
            foreign.add(imported)
    return foreign


def test_the_lambda_package_needs_nothing_outside_itself_but_its_runtime_requirements():
    modules = {m: p for m, p in project_modules().items() if m == LAMBDA_PACKAGE or m.startswith(LAMBDA_PACKAGE + ".")}
    assert len(modules) >= 12
    for module, path in modules.items():
        assert foreign_imports(module, path, (LAMBDA_PACKAGE,)) == set(), module


def test_the_lambda_handlers_need_only_the_lambda_package():
    modules = project_modules()
    for handler in LAMBDA_HANDLERS:
        assert foreign_imports(handler, modules[handler], (LAMBDA_PACKAGE,)) == set(), handler


def test_the_package_check_catches_an_import_from_outside(tmp_path):
    planted = ROOT / "rides" / "stream" / "features.py"
    text = planted.read_text().replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport pandas\nfrom rides.settings import CONSUMERS\n",
        1,
    )
    copy = tmp_path / "features.py"
    copy.write_text(text)
    found = foreign_imports("rides.stream.features", copy, (LAMBDA_PACKAGE,))
    assert {"pandas", "rides.settings"} <= found


def local_stack_imports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Modules outside the local stack and the CLI that import it, with what they import."""
    return {
        module: found
        for module, targets in graph.items()
        if not module.startswith(MAY_IMPORT_THE_LOCAL_STACK)
        and (found := {t for t in targets if t == LOCAL_STACK or t.startswith(LOCAL_STACK + ".")})
    }


def test_production_code_never_imports_the_local_stack():
    assert local_stack_imports(project_graph()) == {}


def test_the_layering_check_finds_a_planted_import():
    graph = project_graph()
    graph["rides.operate.recovery"] = graph["rides.operate.recovery"] | {"rides.local.runner"}
    assert local_stack_imports(graph) == {"rides.operate.recovery": {"rides.local.runner"}}


MAX_MODULE_LINES = 500


def long_modules(modules: dict[str, Path], limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    return {m: n for m, p in modules.items() if (n := len(p.read_text().splitlines())) > limit}


def test_no_module_of_the_project_is_over_500_lines():
    """A room a newcomer can read whole: a module that outgrows it is split by concern."""
    assert long_modules(project_modules()) == {}


def test_the_length_check_finds_a_long_module():
    assert "rides.stream.consumer" in long_modules(project_modules(), limit=200)
