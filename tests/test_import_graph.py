"""The import graph among asr_s2s's modules, read from the source with `ast`: no module imports, directly or
through others, a module that imports it back.

Module-level imports are what Python runs at import time, where a circle fails outright or hands out
half-initialised modules: there must be none. Imports inside functions run later and only defer the problem:
a circle through them still ties the two modules together, so those are held to the same rule, less the
pairs in KNOWN_CYCLES."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asr_s2s"

# Circles through function-level imports that are known and owned elsewhere. Any circle not listed here fails.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (before its imported names)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]  # a package's "." is itself, a module's is its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package that `name` imports at module level, those it imports inside functions).
    ``from pkg import sub`` counts as importing pkg.sub where sub is a module, else as importing pkg."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    top: set[str] = set()
    inner: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: set[str] = set()
            if isinstance(child, ast.Import):
                targets = {alias.name for alias in child.names}
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(name, is_package, child)
                targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in child.names}
            hits = {t for t in targets if t in known and t != name}
            (inner if nested else top).update(hits)
            visit(child, nested)

    visit(tree, False)
    return top, inner - top


def graph(function_level: bool) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    out = {}
    for name, path in mods.items():
        top, inner = imports(name, path, known)
        out[name] = top | inner if function_level else top
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
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

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


def test_the_parser_sees_the_imports_it_should():
    """The graph is read right: known edges of each kind are there (a parser that saw nothing would pass the
    tests below), and a planted circle is found."""
    top, inner = graph(False), graph(True)
    assert "asr_s2s.accel.packed" in top["asr_s2s.accel.encoder"]  # from .packed import ...
    assert "asr_s2s.accel.cpu_kernels" in top["asr_s2s.accel.decoder"]  # from . import cpu_kernels
    assert "asr_s2s.seq2seq.search" in top["asr_s2s.seq2seq.model"]  # from . import search
    assert "asr_s2s.train" in inner["asr_s2s.bench"]  # inside train_bench
    assert "asr_s2s.train" not in top["asr_s2s.bench"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_at_module_level():
    assert cycles(graph(False)) == []


def test_no_import_cycles_through_function_level_imports_but_the_known_ones():
    found = cycles(graph(True))
    new = [c for c in found if frozenset(c) not in KNOWN_CYCLES]
    assert new == [], f"import cycles (module or function level): {new}"
    stale = KNOWN_CYCLES - {frozenset(c) for c in found}
    assert not stale, f"KNOWN_CYCLES lists circles that are gone (remove them): {stale}"


def test_the_core_does_not_import_the_acceleration_package():
    """seq2seq/ is plain PyTorch: accel wraps it, never the other way round (not even inside functions)."""
    inner = graph(True)
    core = [m for m in inner if m.startswith("asr_s2s.seq2seq")]
    assert core and not [(m, t) for m in core for t in inner[m] if t.startswith("asr_s2s.accel")]
