"""The public API's docstrings: numpydoc sections that match the signatures,
and Examples that run.

Every public name of ``nbnorm`` (``__all__`` but ``__version__`` and
``AxisError``, NumPy's) and every public method and property of the public
classes is checked:

- its docstring parses with ``numpydoc.docscrape`` without a warning (an
  unknown section, a malformed one) and has a summary;
- the ``Parameters`` it documents are the signature's parameters, by name
  and in order (``self``/``cls`` and private ``_``-prefixed keyword-only
  parameters such as ``Moments``' ``_backend`` left out); a class documents
  its constructor's;
- a function or method with a ``return <value>`` documents ``Returns``;
- it has ``Examples``, and they pass as doctests (with ``np`` and
  ``nbnorm`` in their globals).
"""
from __future__ import annotations

import ast
import doctest
import inspect
import textwrap
import warnings

import numpy as np
import pytest

import nbnorm

docscrape = pytest.importorskip("numpydoc.docscrape")

_NOT_OURS = {"__version__", "AxisError"}
_PUBLIC_DUNDERS = {"__call__"}


def _public_names():
    return [n for n in nbnorm.__all__ if n not in _NOT_OURS]


def _members(cls):
    """``(name, raw attribute)`` of the public methods and properties of
    ``cls`` defined by nbnorm's classes (inherited ones included)."""
    out = []
    for name in sorted(dir(cls)):
        if name.startswith("_") and name not in _PUBLIC_DUNDERS:
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("nbnorm"):
            continue
        raw = vars(owner)[name]
        if isinstance(raw, (staticmethod, classmethod, property)) or inspect.isfunction(raw):
            out.append((name, raw))
    return out


def _documented():
    """``(test id, object, kind)`` of every documented public object, each
    underlying function once (a method that several layers inherit is
    tested under the first of them)."""
    items, seen = [], set()
    for name in _public_names():
        obj = getattr(nbnorm, name)
        if inspect.isclass(obj):
            items.append((name, obj, "class"))
            for mname, raw in _members(obj):
                if id(raw) in seen:
                    continue
                seen.add(id(raw))
                kind = "property" if isinstance(raw, property) else "method"
                items.append((f"{name}.{mname}", raw, kind))
        else:
            items.append((name, obj, "function"))
    return items


DOCUMENTED = _documented()
IDS = [i for i, _, _ in DOCUMENTED]


def _function(raw):
    """The plain function behind a method, classmethod or staticmethod."""
    return raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw


def _parse(obj, kind):
    """The numpydoc parse of ``obj``'s docstring; a docscrape warning fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if kind == "class":
            return docscrape.ClassDoc(obj, config={"show_class_members": False})
        if kind == "property":
            return docscrape.NumpyDocString(inspect.getdoc(obj) or "")
        return docscrape.FunctionDoc(_function(obj))


def _signature_params(obj, kind):
    """Parameter names a docstring must document, in signature order."""
    sig = inspect.signature(obj if kind == "class" else _function(obj))
    names = []
    for i, p in enumerate(sig.parameters.values()):
        if kind != "class" and i == 0 and p.name in ("self", "cls"):
            continue
        if p.name.startswith("_"):
            continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def _documented_params(doc):
    """Names in ``Parameters`` and ``Other Parameters`` (``a, b : t`` is two)."""
    names = []
    for section in ("Parameters", "Other Parameters"):
        for param in doc[section]:
            names += [n.strip() for n in param.name.split(",") if n.strip()]
    return names


def _returns_value(func):
    """Whether ``func``'s own body has a ``return <value>`` (not nested functions')."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    fdef = tree.body[0]

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                  ast.ClassDef)):
                continue
            if isinstance(child, ast.Return) and child.value is not None and not (
                    isinstance(child.value, ast.Constant) and child.value.value is None):
                return True
            if walk(child):
                return True
        return False
    return walk(fdef)


def test_every_public_name_is_covered():
    """The list this file checks is the public API (a new public name or
    method is checked without editing this file)."""
    ids = set(IDS)
    assert set(_public_names()) <= ids
    for must in ("Moments.of", "Moments.empty", "Moments.merge", "Moments.var", "Moments.std",
                 "Moments.count", "Moments.mean", "Moments.m2", "BatchNorm.__call__",
                 "BatchNorm.backward", "BatchNorm.load_state_dict", "BatchNorm.fold_into"):
        assert must in ids


@pytest.mark.parametrize("name,obj,kind", DOCUMENTED, ids=IDS)
def test_numpydoc_sections(name, obj, kind):
    doc = _parse(obj, kind)
    assert doc["Summary"] and "".join(doc["Summary"]).strip(), f"{name}: no summary"
    if kind == "property":
        assert not doc["Parameters"], f"{name}: a property takes no parameters"
    else:
        want = _signature_params(obj, kind)
        got = _documented_params(doc)
        assert got == want, (f"{name}: Parameters documents {got}, the signature has {want}")
        for param in doc["Parameters"] + doc["Other Parameters"]:
            assert param.type.strip(), f"{name}: {param.name} has no type"
            assert "".join(param.desc).strip(), f"{name}: {param.name} has no description"
    if kind in ("function", "method") and _returns_value(_function(obj)):
        assert doc["Returns"], f"{name}: returns a value but has no Returns section"
        for ret in doc["Returns"]:
            assert "".join(ret.desc).strip(), f"{name}: a return value has no description"
    assert doc["Examples"], f"{name}: no Examples section"


@pytest.mark.parametrize("name,obj,kind", DOCUMENTED, ids=IDS)
def test_examples_run(name, obj, kind):
    finder = doctest.DocTestFinder(recurse=False, exclude_empty=False)
    tests = finder.find(obj, name, module=False, globs={"np": np, "nbnorm": nbnorm})
    assert tests and sum(len(t.examples) for t in tests) > 0, f"{name}: no doctest examples"
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    report, failed = [], 0
    for test in tests:
        failed += runner.run(test, out=report.append).failed
    assert failed == 0, f"{name}: {failed} failing example(s):\n" + "".join(report)
