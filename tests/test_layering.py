"""The package's layering: lifelong modules import each other in one direction only (no cycle, counting
imports inside functions too), and the light entry points do not pull in torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lifelong"
# cli.py is the entry point nothing imports; the package __init__ only imports lazily (module __getattr__)
EXEMPT = {"lifelong.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lifelong_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def lazy_getattr_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside a module-level `def __getattr__` (the package's lazy imports)."""
    return {
        id(node)
        for fn in tree.body
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
        for node in ast.walk(fn)
    }


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every lifelong module `name` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text())
    lazy = lazy_getattr_nodes(tree) if path.name == "__init__.py" else set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.add(target if target in known else base)
    return {m for m in out if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = lifelong_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items() if name not in EXEMPT}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "lifelong.data.sources" in graph["lifelong.data.packing"]  # imported inside functions
    assert "lifelong.train" in graph["lifelong.parallel"]


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_point_one_way():
    graph = import_graph()
    data = [m for m in graph if m == "lifelong.data" or m.startswith("lifelong.data.")]
    assert not [m for m in data if graph[m] & {"lifelong.config", "lifelong.train", "lifelong.models"}]
    assert graph["lifelong.data.spec"] <= {"lifelong.errors", "lifelong.data.task"}  # the schemas: a leaf
    assert "lifelong.train" not in graph["lifelong.pretrain"]
    assert "lifelong.pretrain" not in graph["lifelong.models.cache"]


def test_find_cycle_reports_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    return set(out.stdout.split())


HEAVY = {"torch", "transformers", "peft", "accelerate"}


def test_light_entry_points_do_not_import_torch():
    loaded = modules_after("import lifelong, lifelong.cli, lifelong.data, lifelong.data.scenarios")
    assert not HEAVY & loaded, f"imported {sorted(HEAVY & loaded)}"


def test_the_config_does_not_import_torch():
    # the method registry (lifelong/methods/registry.py, base.py) is read without importing a method
    loaded = modules_after("import lifelong, lifelong.cli, lifelong.config, lifelong.data")
    assert not HEAVY & loaded, f"imported {sorted(HEAVY & loaded)}"


STEP_CODE = re.compile(r"\.backward\(|clip_grad_norm_\(|\.zero_grad\(|optim\.AdamW\(|optimizer\.step\(")


def test_only_the_loop_core_has_optimizer_and_backward_code():
    """train.py and pretrain.py share lifelong/loop.py: neither (nor any other module) has its own."""
    owners = {module_name(p) for p in PACKAGE.rglob("*.py") if STEP_CODE.search(p.read_text())}
    assert owners == {"lifelong.loop"}
    pretrain = (PACKAGE / "pretrain.py").read_text()
    assert "def lr_factor" not in pretrain and "lifelong.train" not in pretrain
