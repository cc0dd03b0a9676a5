"""The house's rules, read from the code's imports: no import cycles anywhere in aejax; only
the command modules parse arguments, and no library module imports a command module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aejax"
# `python -m aejax.<command>` (and `python -m aejax.data`), and what they share (cli).
COMMANDS = {"aejax.train", "aejax.eval", "aejax.score", "aejax.export", "aejax.data.__main__"}
COMMAND_SIDE = COMMANDS | {"aejax.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The modules ``name`` imports, anywhere in it (inside functions too): for ``from X
    import Y``, X.Y where that is a module, else X."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


GRAPH = {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_whole_package():
    assert {"aejax.core.steps", "aejax.ood.knn", "aejax.data.sources.npy"} <= set(MODULES)
    assert "aejax.ood.registry" in GRAPH["aejax.ood.knn"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_only_command_modules_parse_arguments():
    parsing = sorted(name for name in MODULES if "argparse" in imports(name))
    assert set(parsing) <= COMMAND_SIDE, parsing
    assert set(parsing) >= COMMANDS - {"aejax.data.__main__"} | {"aejax.cli"}


def test_no_library_module_imports_a_command_module():
    library = set(MODULES) - COMMAND_SIDE
    offenders = {name: GRAPH[name] & COMMAND_SIDE for name in library if GRAPH[name] & COMMAND_SIDE}
    assert offenders == {}
