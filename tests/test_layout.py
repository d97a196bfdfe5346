"""The layout's stated rules, as checks: small folders, no import circles, declared imports.

Each rule reads the source tree itself (ast), so it holds for code no test happens to import.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("image_search_assets", "resources")
FIRST_PARTY = {*PACKAGES, "tests"}
CORE_TOP_LEVEL_MAX = 8


def _modules(package_dir: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _imports(path: Path, module: str) -> Iterator[tuple[str, ...]]:
    """What `path` imports, at any depth (lazy and TYPE_CHECKING imports too).

    Each item lists the candidates most specific first: `from a.b import c` is an import of the
    module a.b.c when that is a module, else of a.b (as import-linter's grimp counts it).
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield from ((f"{base}.{alias.name}", base) for alias in node.names)


def _graph() -> dict[str, set[str]]:
    modules = {m: p for pkg in PACKAGES for m, p in _modules(ROOT / pkg)}
    graph: dict[str, set[str]] = {}
    for m, p in modules.items():
        found = (next((c for c in cands if c in modules), None) for cands in _imports(p, m))
        graph[m] = {i for i in found if i is not None and i != m}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_lies_in_an_import_circle():
    graph = _graph()
    assert len(graph) > 50
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_circle():
    graph = _graph()
    graph["image_search_assets.core.storage"].add("image_search_assets.core.records")
    assert ["image_search_assets.core.records", "image_search_assets.core.storage"] in _cycles(
        graph
    )


def test_core_top_level_holds_at_most_eight_modules():
    core = ROOT / "image_search_assets" / "core"
    modules = [p.name for p in core.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= CORE_TOP_LEVEL_MAX, modules


def _declared(*groups: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for group in groups:
        specs += project["optional-dependencies"][group]
    return {re.split(r"[\[<>=!~; ]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


# Namespace packages that several distributions share: the distribution by import prefix.
NAMESPACED = {
    "google.cloud.storage": "google-cloud-storage",
    "google.cloud.exceptions": "google-cloud-core",
    "google.api_core": "google-api-core",
    "google.auth": "google-auth",
    "google.protobuf": "protobuf",
}


def _distribution(name: str, distributions: dict[str, list[str]]) -> str:
    for prefix, dist in NAMESPACED.items():
        if name == prefix or name.startswith(prefix + "."):
            return dist
    found = distributions.get(name.split(".")[0], [name.split(".")[0]])
    assert len(set(found)) == 1, f"{name} is in several distributions {found}: add it to NAMESPACED"
    return found[0].lower().replace("_", "-")


def _third_party(paths: list[Path]) -> dict[str, set[str]]:
    """Distribution -> files that import it, for every import that is not stdlib or ours."""
    files = [f for d in paths for f in ([d] if d.is_file() else sorted(d.rglob("*.py")))]
    local = {f.stem for f in files}  # scripts beside each other (benchmarks/report.py)
    distributions = packages_distributions()
    used: dict[str, set[str]] = {}
    for path in files:
        for candidates in _imports(path, ""):
            name = candidates[0]
            top = name.split(".")[0]
            if not top or top in sys.stdlib_module_names or top in FIRST_PARTY | local:
                continue
            if top == "google" and not any(name.startswith(p) for p in NAMESPACED):
                continue  # `from google.cloud import storage` also yields `google.cloud`
            used.setdefault(_distribution(name, distributions), set()).add(str(path))
    return used


@pytest.mark.parametrize(
    ("dirs", "groups"),
    [(PACKAGES, ()), (("tests", "benchmarks"), ("dev",))],
    ids=["package", "tests-and-benchmarks"],
)
def test_every_directly_imported_package_is_declared(dirs, groups):
    used = _third_party([ROOT / d for d in dirs])
    missing = {
        dist: sorted(files)[:3] for dist, files in used.items() if dist not in _declared(*groups)
    }
    assert missing == {}


MAX_LINES = 320  # STYLE.md's "about 300"


def test_every_python_file_stays_under_the_size_a_reader_can_hold():
    files = [p for d in (*PACKAGES, "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    long = {
        str(p.relative_to(ROOT)): n
        for p in files
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_file_holds_lines_the_formatter_would_write_otherwise():
    """STYLE.md: a file that must turn the formatter off (skip or off) to fit holds two things."""
    files = [p for d in (*PACKAGES, "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    held = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"#\s*fmt:\s*(skip|off)\b", line)
    ]
    assert held == []


def test_every_test_folder_is_a_concern_the_development_page_names():
    # docs/development.md tells a reader where each kind of test lives: a new folder joins it.
    page = (ROOT / "docs" / "development.md").read_text()
    folders = sorted(
        d.name for d in (ROOT / "tests").iterdir() if d.is_dir() and any(d.rglob("test_*.py"))
    )
    assert folders and [f for f in folders if f"`tests/{f}/`" not in page] == []
