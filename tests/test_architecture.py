"""The house's rules, read from the code's imports: no import cycles anywhere in aejax; only
the command modules parse arguments, and no library module imports a command module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aejax"
# `python -m aejax.<command>`: each package's __main__ (docs/architecture.md), and what they
# share (cli).
COMMANDS = {f"aejax.{name}.__main__" for name in ("train", "eval", "score", "export", "data")}
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
    # The convention that tells them apart: a command is a package's __main__, and every
    # __main__ is a command.
    assert {name for name in MODULES if name.endswith(".__main__")} == COMMANDS


def test_no_library_module_imports_a_command_module():
    library = set(MODULES) - COMMAND_SIDE
    offenders = {name: GRAPH[name] & COMMAND_SIDE for name in library if GRAPH[name] & COMMAND_SIDE}
    assert offenders == {}


def test_no_module_reaches_into_jax_internals():
    private = {
        name: sorted(m for m in imports(name) if m.startswith("jax._src")) for name in MODULES
    }
    assert {name: found for name, found in private.items() if found} == {}


IMPORT_EVERYTHING = r"""
import os, sys
import sklearn  # sets its OpenMP variables (KMP_*) on import: the libraries' own, not aejax's
environ, hooks = dict(os.environ), (sys.unraisablehook, sys.excepthook)
import jax
options = {name: getattr(jax.config, name, None) for name in jax.config.values}
import aejax
from aejax import *  # every public name, and the modules behind them
import aejax.train.__main__, aejax.eval.__main__, aejax.score.__main__, aejax.export.__main__
import aejax.data.__main__
after = {name: getattr(jax.config, name, None) for name in jax.config.values}
assert dict(os.environ) == environ, set(os.environ.items()) ^ set(environ.items())
assert (sys.unraisablehook, sys.excepthook) == hooks
assert after == options, {k: (options[k], after[k]) for k in options if options[k] != after[k]}
"""


def test_importing_aejax_changes_no_process_wide_setting():
    """flax, optax and orbax set nothing on import, and neither does aejax: no environment
    variable (XLA_FLAGS: the commands set theirs when they run), no JAX option, no hook."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], env=env, check=True)


def layers() -> list[tuple[str, list[str]]]:
    """docs/architecture.md's layers, top first: ``(name, module prefixes)``."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return [(line.split()[0], line.split()[1:]) for line in block.splitlines() if line.strip()]


def layer_of(module: str) -> int:
    """The layer of ``module`` (0: the top), by its longest prefix in :func:`layers`."""
    found = [
        (len(prefix), -depth)
        for depth, (_, prefixes) in enumerate(layers())
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert found, f"{module} is in no layer of docs/architecture.md"
    return -max(found)[1]


def test_no_import_runs_up_the_layers():
    """No module imports from a layer above its own (models stand below the backend, the
    core below the detectors, the commands on top), as docs/architecture.md draws them."""
    modules = set(MODULES) - {"aejax"}
    upward = sorted(
        f"{a} ({layers()[layer_of(a)][0]}) imports {b} ({layers()[layer_of(b)][0]})"
        for a in modules
        for b in GRAPH[a] - {"aejax"}
        if layer_of(b) < layer_of(a)
    )
    assert upward == []
    assert not any(m.startswith("aejax.backend") for name in MODULES
                   if name.startswith("aejax.models") for m in GRAPH[name])  # fmt: skip
