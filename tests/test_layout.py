"""The import graph of the repository runs one way: entry points -> a run (engine.pipeline, with args) -> engine ->
model / data -> common, as docs/layout.md draws it. Read from the source with `ast` (function-level imports
included), so nothing is imported to check it."""
import ast
import os

import pytest

from scale_helpers import ROOT

ENTRY = ("main", "args", "visualize", "tools", "experiments", "benchmarks", "timemae", "encode", "examples")
ENGINE = ("process", "engine")
# what each layer must never import (a module's own entry first, else its top package's; a dependency by its full
# dotted name or its first part): engine.pipeline, a run end to end, reads the flags (args) and is read by the entry
# points alone
FORBIDDEN = {
    "common": ENTRY + ENGINE + ("model", "data", "datautils", "dataset", "loss", "classification"),
    "model": ENTRY + ENGINE + ("data", "datautils", "dataset"),
    "data": ENTRY + ENGINE + ("model",),
    "engine": ENTRY + ("engine.pipeline",),
    "engine.pipeline": tuple(e for e in ENTRY if e != "args"),
    "process": ENTRY + ("engine.pipeline",),
}
for base in ("datautils", "dataset", "loss", "classification"):
    FORBIDDEN[base] = ENTRY + ENGINE + ("model",)


def modules():
    """Dotted module name -> path of every Python file of the project (tests aside)."""
    found = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__")) and d not in ("tests", "exp")]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = os.path.join(folder, f)
    return found


def imports(path, known):
    """The project modules a file imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out.update(n for n in names if n in known)
    return out


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_only_downwards(graph):
    assert {"engine.checkpoint", "engine.record", "model"} <= graph["process"]   # the graph is read at all
    assert "args" in graph["engine.pipeline"] and "engine.pipeline" in graph["timemae.estimators"]

    def forbidden(mod):
        return FORBIDDEN.get(mod, FORBIDDEN.get(mod.split(".")[0], ()))
    wrong = [f"{mod} imports {dep}" for mod, deps in graph.items() for dep in deps
             if (dep in forbidden(mod) or dep.split(".")[0] in forbidden(mod)) and dep != mod]
    assert not wrong, wrong
    # main.py is an entry point only: the others reach a run through engine.pipeline, not through it
    assert [mod for mod, deps in graph.items() if "main" in deps] == []


def test_the_model_is_usable_without_the_command_line(graph):
    """model/ imports neither the CLI (args, main) nor the engine, and its errors name settings, not --flags."""
    model_files = [p for m, p in modules().items() if m.split(".")[0] == "model"]
    assert model_files
    for path in model_files:
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith("Error"):
                text = ast.unparse(node.args[0]) if node.args else ""
                assert "--" not in text.replace("--no-deps", ""), f"{path}: {text[:80]}"
