"""The package's structure, as the design page describes it: no import
cycles between nbnorm's modules (helpers shared by operations live below
them), and the public API asks backends for capabilities, never for their
names."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "nbnorm"


def _module(path):
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """Modules of nbnorm that ``path`` imports when it is imported (module
    level, including imports placed after definitions; not inside functions)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        nodes = [node]
        if isinstance(node, (ast.If, ast.Try)):
            nodes = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for n in nodes:
            if isinstance(n, ast.Import):
                found |= {a.name for a in n.names if a.name.startswith("nbnorm")}
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (n.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                if not base.startswith("nbnorm"):
                    continue
                for a in n.names:      # `from . import x` imports the module x
                    sub = f"{base}.{a.name}"
                    found.add(sub if (PKG.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                              or (PKG.parent / sub.replace(".", "/")).is_dir() else base)
    return found - {mod}


def _graph():
    return {_module(p): _imports(p) for p in PKG.rglob("*.py")}


def _cycle(graph):
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    graph = _graph()
    assert "nbnorm._cpu.passes" in graph["nbnorm._cpu.ops"]
    cycle = _cycle(graph)
    assert cycle is None, " → ".join(cycle)


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_public_api_asks_backends_for_capabilities_not_names():
    """No ``backend.name == "cpu"`` in the modules above the router: what a
    backend can do is an attribute of the contract (``nbnorm._contract``)."""
    import re
    api = ["_api.py", "_family.py", "_moments.py", "_layers.py", "_layer_base.py", "_fold.py",
           "_calls.py", "_grouped.py", "_standardize.py", "xarray.py", "__init__.py"]
    for name in api:
        text = (PKG / name).read_text()
        assert not re.search(r"\.name\s*(==|!=|\bin\b|\bnot in\b)\s*[\"'(\[]", text), name
