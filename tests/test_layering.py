"""The house map: ld's modules import downwards only.

Layers, lowest first: config and data (with environments) -> models, diffusion -> stages -> planning,
evaluation -> pipeline -> distributed, analysis, report, cli. A module may import its own layer and the ones
below it, at module level or lazily inside a function; an arrow back up (a stage importing the planner, data
generation importing evaluation) is what makes a newcomer lost, so it fails here. Module-level import
cycles fail too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ld"

# top-level package/module of ld -> its layer; a module may import layers <= its own
LAYERS = {
    "ld": 0, "ld.config": 0, "ld.data": 0, "ld.envs": 0, "ld.results": 0, "ld.storage": 0,
    "ld.models": 1, "ld.diffusion": 1,
    "ld.stages": 2,
    "ld.planning": 3, "ld.evaluation": 3,
    "ld.pipeline": 4, "ld.suite": 4,
    "ld.distributed": 5, "ld.analysis": 5, "ld.report": 6, "ld.cli": 7, "ld.__main__": 7,
}


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def layer(name: str) -> int:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    raise KeyError(f"{name}: add its package to LAYERS in tests/test_layering.py")


def imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported ld module, at module level?, line) for every import in the file; TYPE_CHECKING blocks skipped."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[str, bool, int]] = []

    def visit(body, top: bool) -> None:
        for n in body:
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, ast.Import):
                found.extend((a.name, top, n.lineno) for a in n.names if a.name.split(".")[0] == "ld")
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    keep = pkg.split(".")[: len(pkg.split(".")) - n.level + 1]
                    base = ".".join(keep + ([n.module] if n.module else []))
                if base.split(".")[0] != "ld":
                    continue
                for a in n.names:
                    target = f"{base}.{a.name}"
                    found.append((target if target in mods else base, top, n.lineno))
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(n, field, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    visit(sub, top and not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))
            for h in getattr(n, "handlers", []):
                visit(h.body, top)

    visit(tree.body, True)
    return [(m, top, line) for m, top, line in found if m in mods and m != name]


def test_imports_point_down_the_layers():
    mods = modules()
    bad = [f"{name} (layer {layer(name)}) line {line} imports {m} (layer {layer(m)})"
           for name, path in sorted(mods.items()) for m, _, line in imports(name, path, mods)
           if layer(m) > layer(name)]
    assert not bad, "arrows running back up:\n" + "\n".join(bad)


def test_no_module_level_import_cycles():
    mods = modules()
    graph = {n: {m for m, top, _ in imports(n, p, mods) if top} for n, p in mods.items()}
    cycles, done = [], set()

    def walk(u: str, stack: list[str]) -> None:
        for v in sorted(graph[u]):
            if v in stack:
                cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in done:
                walk(v, stack + [v])
        done.add(u)

    for u in sorted(graph):
        if u not in done:
            walk(u, [u])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_module_level_and_lazy_imports():
    mods = modules()
    planner = imports("ld.planning.planner", mods["ld.planning.planner"], mods)
    assert ("ld.planning.fast", True) in {(m, top) for m, top, _ in planner}
    trial = imports("ld.distributed.trial", mods["ld.distributed.trial"], mods)
    assert ("ld.pipeline", False) in {(m, top) for m, top, _ in trial}  # inside execute_trial
    assert layer("ld.data.builtin.maze") < layer("ld.evaluation.rollout")
