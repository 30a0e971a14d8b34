"""The layering the README's Architecture section draws, checked over the import graph of every module.

Lower layers never import higher ones (at module level or inside a function), there are no import
circles, and the model layer imports neither Prefect nor FastAPI nor uvicorn.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "demos", "tasks", "flows", "deployments", "service", "distill_slm", "bench")
# Bottom to top; a module may import its own layer or a lower one.
LAYERS = [
    ("core.errors", "core.settings", "demos"),
    ("core.common",),
    ("core.model", "core.sandbox"),
    ("core.evaluation", "core.teachers", "core.training", "core.registry", "core.drift"),
    ("core.kinds",),
    ("core.methods", "core.scorecard"),
    ("core.serving",),
    ("tasks",),
    ("flows",),
    ("deployments", "service"),
    ("distill_slm", "bench"),
]
WEB_AND_ORCHESTRATION = ("prefect", "fastapi", "uvicorn", "starlette")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    if module == "core":
        return 0
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to the README's Architecture section)")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import statement of a file."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, nested))
                # `from core import kinds` imports the submodule core.kinds
                found.extend((f"{child.module}.{alias.name}", nested) for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


def graph() -> dict[str, list[tuple[str, bool]]]:
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        edges[name] = [(target, nested) for target, nested in imports(path) if target in modules and target != name]
    return edges


EDGES = graph()


def test_every_module_sits_in_a_layer():
    for module in EDGES:
        layer(module)


def test_no_module_imports_a_higher_layer():
    reversed_edges = [f"{src} -> {dst}" for src, targets in EDGES.items() for dst, _ in targets if layer(dst) > layer(src)]
    assert not reversed_edges, "imports that climb a layer:\n" + "\n".join(reversed_edges)


def test_no_import_circles():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module):
        state[module] = 1
        path.append(module)
        for target, _ in EDGES.get(module, []):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(EDGES):
        if module not in state:
            visit(module)


def test_the_model_layer_has_no_function_level_imports_of_project_code():
    hidden = [
        f"{src} imports {dst} inside a function"
        for src, targets in EDGES.items()
        if src.startswith("core")
        for dst, nested in targets
        if nested
    ]
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize("package", ["core", "demos"])
def test_the_model_layer_knows_no_web_server_or_orchestrator(package):
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for target, _ in imports(path):
            if target.split(".")[0] in WEB_AND_ORCHESTRATION:
                offenders.append(f"{module_name(path)} imports {target}")
    assert not offenders, "\n".join(offenders)


def test_the_model_layer_is_handed_the_operators_settings_and_never_builds_them():
    """`ModelSettings()` / `ServiceSettings()` read the environment: only entry points (tasks, the CLI, the service, the
    benchmarks) build them; `core/` takes them as arguments (docstrings may show how an entry point does it)."""
    built = []
    for path in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("ModelSettings", "ServiceSettings"):
                given = [k for k in node.keywords if k.arg is None]  # `ModelSettings(**spec["settings"])`: a DDP rank's, as handed on
                if not (path.name == "launch.py" and given):
                    built.append(f"{module_name(path)}:{node.lineno}")
    assert not built, "the model layer builds settings (read them from the environment) at " + ", ".join(built)


def test_nothing_outside_the_demos_names_a_demo():
    """The model layer, the Prefect tasks, the flows and the service reach demo data only through `demos.for_type`/`demos.get`."""
    names = ("creditmix", "invoices", "pyfuncs")
    offenders = []
    for package in ("core", "tasks", "flows", "service", "deployments"):
        for path in (ROOT / package).rglob("*.py"):
            code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
            tree = ast.parse(code)
            for node in ast.walk(tree):
                if isinstance(node, ast.Name | ast.Attribute | ast.alias):
                    ident = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", "")
                    if any(n in ident for n in names):
                        offenders.append(f"{module_name(path)}: {ident}")
    assert not offenders, "\n".join(offenders)


def test_the_serving_layer_routes_by_what_a_decoder_answers_never_by_its_class():
    from core.model.calibrated import CalibratedDecoder
    from core.model.code_decoder import CodeDecoder
    from core.model.schema import SchemaDecoder

    assert (CalibratedDecoder.answers, SchemaDecoder.answers, CodeDecoder.answers) == ("labels", "json", "code")
    from core.model.decoders import Decoder

    shared = {n for n in vars(Decoder) if not n.startswith("_")} | set(Decoder.__annotations__)
    for decoder in (CalibratedDecoder, SchemaDecoder, CodeDecoder):  # the Protocol's methods, on every decoder class
        assert all(callable(getattr(decoder, n)) for n in shared if callable(getattr(Decoder, n, None))), decoder
    for path in (ROOT / "core" / "serving").glob("*.py"):
        tree = ast.parse(path.read_text())
        checks = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "isinstance"]
        named = [ast.unparse(c) for c in checks if "Decoder" in ast.unparse(c)]
        assert not named, f"{path.name}: {named}"
