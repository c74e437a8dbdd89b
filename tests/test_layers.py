"""The layers of realfork/ import only downwards (docs/architecture.md, "The
layers, bottom up").

The import graph is read with ``ast`` from the source, not by importing it:
every ``import`` and ``from ... import`` counts, at module level (type-only
imports under ``if TYPE_CHECKING:`` included) and inside functions alike, so
a lazy import that dodges a cycle cannot dodge the layering.  Each module of
realfork/ has the rank of its layer in ``LAYERS``; an import from a module to
a higher rank fails the test, unless it is listed in ``KNOWN_UPWARD``.  Within
one rank anything goes (the tools use each other freely)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent

# Bottom up.  A module's layer is its longest prefix in this table; a module
# under realfork/ that matches none fails the test (give it a layer here and in
# docs/architecture.md).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shm", ("realfork.shm",)),
    ("probes", ("realfork.probes",)),
    ("sync", ("realfork.sync",)),
    ("kernel", ("realfork.kernel",)),
    ("verify", ("realfork.verify",)),
    ("machine", ("realfork.machine",)),
    ("user", ("realfork.user",)),
    ("api", ("realfork.api",)),
    ("tools", ("realfork", "realfork.__main__", "realfork.cli", "realfork.cmdline",
               "realfork.commands", "realfork.bugs_command", "realfork.demo",
               "realfork.pytest_plugin", "realfork.stress", "realfork.top")),
)

# Importable from any layer; a leaf imports only other leaves.
LEAVES = frozenset({"realfork.errors", "realfork.safeio", "realfork.bounds"})

# Upward imports that exist today, each with why and until when (none left).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted((root / "realfork").rglob("*.py"))}


def _targets(mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom,
             known: dict[str, Path]) -> list[str]:
    """The realfork modules an import statement names (its deepest module each)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            full = ".".join(base + ([node.module] if node.module else []))
        else:
            full = node.module or ""
        # "from pkg import sub" imports the submodule; "from mod import name" the module
        names = [f"{full}.{a.name}" if f"{full}.{a.name}" in known else full
                 for a in node.names]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("realfork"):
            out.append(name)
    return out


def import_graph(root: Path) -> dict[str, dict[str, str]]:
    """module -> {imported realfork module: "top" or "function"}."""
    known = modules(root)
    graph: dict[str, dict[str, str]] = {}
    for mod, path in known.items():
        edges: dict[str, str] = {}
        is_pkg = path.name == "__init__.py"

        def walk(node: ast.AST, in_function: bool, mod: str = mod, is_pkg: bool = is_pkg,
                 edges: dict[str, str] = edges) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _targets(mod, is_pkg, child, known):
                        if target != mod and edges.get(target) != "top":
                            edges[target] = "function" if in_function else "top"
                nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                walk(child, in_function or nested)

        walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
        graph[mod] = edges
    return graph


def layer_of(mod: str) -> tuple[int, str] | None:
    """(rank, layer name) of ``mod``; rank -1 for a leaf; None if it has no layer."""
    if mod in LEAVES:
        return -1, "leaf"
    best: tuple[int, int, str] | None = None  # (prefix length, rank, name)
    for rank, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # "realfork" is the package itself (its __init__), not a prefix
            inside = prefix != "realfork" and mod.startswith(prefix + ".")
            if (mod == prefix or inside) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, name)
    return (best[1], best[2]) if best else None


def upward_imports(graph: dict[str, dict[str, str]]) -> list[str]:
    """Every import that points up the layers (or out of a leaf), as text."""
    bad = []
    for mod, edges in sorted(graph.items()):
        here = layer_of(mod)
        for target, kind in sorted(edges.items()):
            there = layer_of(target)
            if here is None or there is None or (mod, target) in KNOWN_UPWARD:
                continue
            leaf_escape = here[0] == -1 and there[0] != -1
            if leaf_escape or there[0] > here[0]:
                bad.append(f"{mod} ({here[1]}) imports {target} ({there[1]}) "
                           f"at {kind} level")
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, str]]:
    return import_graph(ROOT)


def test_every_module_has_a_layer(graph: dict[str, dict[str, str]]) -> None:
    homeless = [m for m in graph if layer_of(m) is None]
    assert not homeless, f"modules with no layer in LAYERS: {homeless}"


def test_imports_point_down(graph: dict[str, dict[str, str]]) -> None:
    bad = upward_imports(graph)
    assert not bad, "imports up the layers:\n  " + "\n  ".join(bad)


def test_known_upward_imports_still_exist(graph: dict[str, dict[str, str]]) -> None:
    gone = [f"{a} -> {b} ({why})" for (a, b), why in KNOWN_UPWARD.items()
            if b not in graph.get(a, {})]
    assert not gone, f"KNOWN_UPWARD lists imports that are gone, delete them: {gone}"


def test_the_kernel_imports_nothing_from_verify(graph: dict[str, dict[str, str]]) -> None:
    into = [f"{m} -> {t}" for m, edges in graph.items() if m.startswith("realfork.kernel")
            for t in edges if t.startswith("realfork.verify")]
    assert not into, into


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The walk sees a lazy import inside a function, and a plain one."""
    for d in ("realfork", "realfork/kernel", "realfork/stress"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "__init__.py").write_text("")
    (tmp_path / "realfork/stress/runner.py").write_text("")
    (tmp_path / "realfork/kernel/lazy.py").write_text(
        "def f():\n    import realfork.stress\n")
    (tmp_path / "realfork/kernel/plain.py").write_text(
        "from ..stress.runner import *\n")
    bad = upward_imports(import_graph(tmp_path))
    assert bad == [
        "realfork.kernel.lazy (kernel) imports realfork.stress (tools) at function level",
        "realfork.kernel.plain (kernel) imports realfork.stress.runner (tools) at top level",
    ]


def test_detector_catalogue_names_the_kernel_assertions() -> None:
    """verify/detectors.py catalogues every assertion of kernel/detect.py, and
    every detector's ``where`` exists."""
    from realfork.kernel import detect
    from realfork.verify.detectors import DETECTORS

    tree = ast.parse(Path(detect.__file__).read_text(encoding="utf-8"))
    public = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)
              and not n.name.startswith("_") and n.name != "fail"}
    catalogued = {d.where.rpartition(".")[2] for d in DETECTORS
                  if d.where.startswith("realfork.kernel.detect.")}
    assert public == catalogued
    for d in DETECTORS:
        try:
            importlib.import_module(d.where)
        except ImportError:
            module, _, attr = d.where.rpartition(".")
            assert hasattr(importlib.import_module(module), attr), d.where
