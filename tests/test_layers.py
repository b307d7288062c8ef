"""The layering (docs/ARCHITECTURE.md, "Layers"): no package imports one above it, and no
import cycle between the project's modules.

    base                      (standard library only)
    golden (torch) | hdl (amaranth)       neither imports the other
    testbench | fpga                      neither imports the other
    kllm                      (the command line; nothing imports it)

Two checks: every import statement in the source, function-local ones included, read
from the syntax tree; and each layer imported in a fresh interpreter, where what it
pulls in (torch, amaranth, a higher package) is seen in ``sys.modules``.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["base", "golden", "hdl", "testbench", "fpga", "kllm"]

#: What each package may import of the project (itself included).
ALLOWED = {
    "base": {"base"},
    "golden": {"base", "golden"},
    "hdl": {"base", "hdl"},
    "testbench": {"base", "golden", "hdl", "testbench"},
    "fpga": {"base", "hdl", "fpga"},
    "kllm": set(PACKAGES),
}

#: Third-party packages a layer must not load when imported (the heavy or foreign ones).
FORBIDDEN_EXTERNAL = {
    "base": {"torch", "amaranth", "numpy", "cocotb"},
    "hdl": {"torch", "cocotb"},
    "golden": {"amaranth", "cocotb"},
    "fpga": {"torch", "cocotb"},
}


def project_imports(path):
    """``[(line, module, top_level)]``: every import of a project module in ``path``;
    ``top_level`` is False for imports inside a function or class."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.ClassDef))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            else:
                names = []
            for name in names:
                if name.split(".")[0] in PACKAGES:
                    out.append((child.lineno, name, not nested))
            visit(child, inner)

    visit(tree, False)
    return out


def sources(package):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_points_up(package):
    bad = []
    for path in sources(package):
        for line, name, _ in project_imports(path):
            if name.split(".")[0] not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(bad)


def _module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_no_import_cycle():
    """Module-level imports between the project's modules form no cycle."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in sources(pkg)}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for _, imported, top in project_imports(path):
            if not top:
                continue
            # ``from pkg import module`` names a module too: take the longest that exists
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                deps.add(imported)
        graph[name] = deps
    state, stack = {}, []

    def dfs(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                dfs(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            dfs(node)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The syntax-tree scan finds a function-local import, which a plain import of the
    module would never execute."""
    f = tmp_path / "m.py"
    f.write_text("import os\n\ndef f():\n    from kllm.cli import main\n    return main\n")
    assert project_imports(f) == [(4, "kllm.cli", False)]


PROBE = """
import importlib, json, pkgutil, sys
pkg = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.parametrize("package", sorted(FORBIDDEN_EXTERNAL))
def test_fresh_import_pulls_in_nothing_above(package):
    """Import every module of the layer in a fresh interpreter; see what got loaded."""
    r = subprocess.run([sys.executable, "-c", PROBE, package], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    above = (set(PACKAGES) - ALLOWED[package]) & loaded
    assert not above, f"importing {package} loaded {sorted(above)}"
    foreign = FORBIDDEN_EXTERNAL[package] & loaded
    assert not foreign, f"importing {package} loaded {sorted(foreign)}"
