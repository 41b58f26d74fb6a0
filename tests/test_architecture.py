"""The package's shape (docs/architecture.md): no import cycles, no layer importing upward, no private names
imported across modules, no module over 400 lines. Imports inside functions count like any other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "android_bench")

# Lowest first. A module may import its own package and the packages of lower layers, nothing else.
LAYERS = (
    ("edge.core",),
    ("edge.config", "edge.model", "edge.fixture"),
    ("edge.checkpoint",),
    ("edge.spinquant",),
    ("edge.quant",),
    ("edge.finetune", "edge.formats"),
    ("edge.evaluate",),
    ("edge.export", "edge.generate"),
    ("edge.api",),
    ("android_bench",),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*roots: str) -> dict[str, Path]:
    return {module_name(p): p for r in roots for p in sorted((ROOT / r).rglob("*.py"))}


ALL = modules(*PACKAGES)


def imports(path: Path, name: str) -> list[tuple[str, str, int]]:
    """-> (imported module, imported name or "", line) for every import of edge or android_bench in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, "", node.lineno) if sub in ALL else (base, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in imports(p, m) if target in ALL and target != m} for m, p in ALL.items()}


def layer_of(module: str) -> tuple[int, str]:
    for i, group in enumerate(LAYERS):
        for package in group:
            if module == package or module.startswith(package + "."):
                return i, package
    return -1, module  # edge/__init__.py and edge.model: handled by their entries above


def test_every_module_has_a_layer():
    missing = [m for m in ALL if layer_of(m)[0] < 0 and m != "edge"]
    assert not missing, f"modules outside every layer of LAYERS: {missing}"


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Depth-first search -> every back edge's cycle, as the list of modules around it."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return cycles


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    """-> "importer -> imported" for every import of a package that is not in a layer below the importer's."""
    bad = []
    for m, targets in g.items():
        if m == "edge":
            continue
        mine, own = layer_of(m)
        for t in targets:
            theirs, package = layer_of(t)
            if package != own and theirs >= mine:
                bad.append(f"{m} -> {t}")
    return sorted(bad)


def test_no_import_cycles():
    cycles = find_cycles(graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_layer_imports_upward():
    bad = upward_imports(graph())
    assert not bad, "imports of a layer not below the importer's (see LAYERS): " + ", ".join(bad)


def test_no_private_names_across_modules():
    files = ALL | modules("tests", "benchmarks")
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {name} from {target}"
        for m, p in files.items()
        for target, name, line in imports(p, m)
        if name.startswith("_") and not name.startswith("__") and target != m
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("root", PACKAGES)
def test_modules_stay_short(root):
    long = {m: n for m, p in modules(root).items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_the_checks_can_fail():
    """A quant module importing the export is both upward and (the export imports quant) a cycle."""
    g = graph()
    g["edge.quant.scheme"] = g["edge.quant.scheme"] | {"edge.export.pipeline"}
    assert "edge.quant.scheme -> edge.export.pipeline" in upward_imports(g)
    assert any(c[0] == "edge.quant.scheme" or "edge.quant.scheme" in c for c in find_cycles(g))


def test_readme_layout_and_architecture_doc_match_the_tree():
    """Every path the README's layout table names exists, and every package of edge is in it and in the doc."""
    import re

    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.find("\n## ", 3)] if "\n## " in layout[3:] else layout
    named = re.findall(r"^\| `([^`]+)` \|", layout, re.M)
    assert named and all((ROOT / p).exists() for p in named), [p for p in named if not (ROOT / p).exists()]
    packages = sorted(p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "edge").glob("*/__init__.py"))
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert all(f"{pkg}/" in named for pkg in packages), [pkg for pkg in packages if f"{pkg}/" not in named]
    assert all(pkg.replace("/", ".") in doc for pkg in packages), [
        pkg for pkg in packages if pkg.replace("/", ".") not in doc
    ]
    assert {layer for group in LAYERS for layer in group} == {pkg.replace("/", ".") for pkg in packages} | {
        "edge.model",
        "edge.api",
        "android_bench",
    }


@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").rglob("*.py")), ids=lambda p: p.name)
def test_benchmark_scripts_import_names_that_exist(script):
    """A benchmark imports edge's modules inside its functions, so a moved or renamed name fails only when it runs:
    every `from edge... import name` in it must resolve now."""
    import importlib

    missing = []
    for target, name, line in imports(script, "benchmarks." + script.stem):
        module = importlib.import_module(target)
        if name and not hasattr(module, name) and f"{target}.{name}" not in ALL:
            missing.append(f"{script.name}:{line} {target}.{name}")
    assert not missing, missing
