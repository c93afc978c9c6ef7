"""Issue 9.1: the layers import only downward, nothing imports in a cycle, `import pv.models` stays light.

Read from the source with `ast` (every import statement, also those inside functions, except under
`if TYPE_CHECKING:`), so a lazy import cannot hide an upward dependency or a cycle.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PV = Path(__file__).resolve().parents[2] / "pv"

# bottom to top; a module may import its own layer and those below
LAYERS = {
    "pv": 0, "pv.errors": 0, "pv.atomic": 0,
    "pv.models": 1, "pv.losses": 1,
    "pv.data": 2,
    "pv.explain": 3,
    "pv.lit": 4,
    "pv.cli": 5, "pv.commands": 5, "pv.analysis": 5,
    "pv.survey": 6,
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PV.rglob("*.py"):
        parts = path.relative_to(PV.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def layer_of(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            if prefix == "pv" and module != "pv":
                break
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add its package to LAYERS in {__file__}")


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The pv modules `path` imports (a `from pv.x import y` names pv.x.y when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "pv"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "pv":
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}


def test_no_module_imports_a_layer_above_it():
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports against the layers (models < data < explain < lit < commands < survey):\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, "modules that import each other (directly or around a loop): " + "; ".join(map(str, cycles))


def test_the_checker_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pv.lit import DecoderModule\n    import pv.explain.pv\n")
    assert imports_of(source, {"pv.lit", "pv.explain.pv", "pv.explain"}) == {"pv.lit", "pv.explain.pv"}


def test_importing_models_and_explain_does_not_load_lightning():
    # pv.data holds LightningDataModules; the models and the explanation methods must not need Lightning
    code = (
        "import sys, pv.models, pv.explain\n"
        "loaded = [m for m in ('pytorch_lightning', 'lightning') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import pv\n"
        "assert pv.DecoderModule.__name__ == 'DecoderModule' and pv.ClassifierModule.__name__ == 'ClassifierModule'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
