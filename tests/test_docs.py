"""Docs name only paths that exist, list the environment the code reads, and the README is a
front door with both commands and both test tiers up top."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "k8s" / "README.md"])
DOCS += sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "benchmarks").rglob("README.md"))
# Short forms the pages use: `engine/fold.py` on the engine page, `core/failures.py` elsewhere.
BASES = [
    "",
    "image_search_assets",
    "image_search_assets/core",
    "image_search_assets/core/inference",
    "benchmarks/results",
]
EXTENSIONS = (".py", ".md", ".yaml", ".yml", ".json", ".sh", ".png", ".txt", ".toml", ".log")
# Written at run time or by the operator, never committed.
GENERATED = ("var/", "artifacts/", "$OUT", "/tmp/", "dagster.yaml", "~")
LINK = re.compile(r"\]\(([^)#\s]+)")
CODE = re.compile(r"`([^`\n]+)`")


def _candidates(text: str) -> set[str]:
    found = set(LINK.findall(text))
    for span in CODE.findall(text):
        found |= set(span.replace(",", " ").split())
    out = set()
    for token in found:
        token = token.strip("()[]'\"").rstrip(".,;:")
        if "://" in token or any(c in token for c in "<>*{}=$|") or token.startswith(("-", "/")):
            continue
        # A bare file name (`values.yaml`) is a mention, not a path: only paths are checked.
        if "/" in token and (token.endswith(EXTENSIONS) or token.endswith("/")):
            out.add(token)
    return out


def _exists(doc: Path, token: str) -> bool:
    if token.startswith(GENERATED) or any(g in token for g in GENERATED[:3]):
        return True
    bases = [doc.parent, *(ROOT / b for b in BASES)]
    return any((base / token.rstrip("/")).exists() for base in bases)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_path_a_doc_names_exists(doc):
    missing = sorted(t for t in _candidates(doc.read_text()) if not _exists(doc, t))
    assert missing == []


def test_the_path_check_catches_a_stale_path(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("See `image_search_assets/core/pipeline.py` and [x](nowhere/else.md).")
    assert sorted(_candidates(doc.read_text())) == [
        "image_search_assets/core/pipeline.py",
        "nowhere/else.md",
    ]
    assert not any(_exists(doc, t) for t in _candidates(doc.read_text()))


def test_readme_is_a_front_door_with_both_commands_and_both_tiers_in_its_first_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 120
    first = "\n".join(lines[:40])
    assert 'pip install -e ".[dev]"' in first and "image-search demo" in first
    assert 'python -m pytest -m "not e2e"' in first  # the fast tier
    assert "python -m pytest -m e2e" in first  # the end-to-end tier


def test_no_dated_work_log_remains():
    assert not (ROOT / "docs" / "notes").exists()
    dated = [p for p in ROOT.rglob("*.md") if re.search(r"\d{4}-\d{2}-\d{2}", p.name)]
    assert [p for p in dated if ".venv" not in p.parts] == []


ENV_DOC = ROOT / "docs" / "configuration.md"
ENV_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.M)


def _module_strings(tree: ast.Module) -> dict[str, set[str]]:
    """Names bound to strings: module constants, dict literals' keys, loop variables over them."""
    names: dict[str, set[str]] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if not isinstance(target, ast.Name):
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            names[target.id] = {value.value}
        elif isinstance(value, ast.Dict) and all(
            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in value.keys
        ):
            names[target.id] = {k.value for k in value.keys}  # type: ignore[union-attr]
    for node in ast.walk(tree):
        if not isinstance(node, ast.For):
            continue
        it, var = node.iter, node.target
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute):
            it = it.func.value if it.func.attr in ("items", "keys") else it
        var = var.elts[0] if isinstance(var, ast.Tuple) else var
        if isinstance(it, ast.Name) and it.id in names and isinstance(var, ast.Name):
            names[var.id] = names[it.id]
    return names


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _env_key(node: ast.AST) -> ast.AST | None:
    """The key expression of an environment read: environ.get/[], getenv, Dagster's EnvVar."""
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and _is_environ(node.value)
    ):
        return node.slice
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name in ("getenv", "EnvVar"):
        return node.args[0]
    if (
        name in ("get", "setdefault")
        and isinstance(func, ast.Attribute)
        and _is_environ(func.value)
    ):
        return node.args[0]
    return None


def env_reads(paths: list[Path]) -> tuple[set[str], list[str]]:
    """The variables the code reads, and the reads whose key no constant names."""
    found: set[str] = set()
    unresolved: list[str] = []
    for path in paths:
        tree = ast.parse(path.read_text())
        names = _module_strings(tree)
        for node in ast.walk(tree):
            key = _env_key(node)
            if key is None:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.add(key.value)
            elif isinstance(key, ast.Name) and key.id in names:
                found |= names[key.id]
            else:
                unresolved.append(f"{path}:{node.lineno}")
    return found, unresolved


def test_the_environment_table_lists_exactly_the_variables_the_code_reads():
    code = sorted((ROOT / "image_search_assets").rglob("*.py"))
    code += sorted((ROOT / "resources").rglob("*.py"))
    read, unresolved = env_reads(code)
    assert unresolved == []  # a key built at run time: name it in a constant the test can see
    assert set(ENV_ROW.findall(ENV_DOC.read_text())) == read


def test_the_environment_reader_finds_each_form_of_read(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import os\nimport dagster as dg\nNAME = 'B'\nTABLE = {'C': 1, 'D': 2}\n"
        "os.environ.get('A')\nos.getenv(NAME)\nfor k, v in TABLE.items():\n    os.environ[k]\n"
        "dg.EnvVar('E')\nos.environ['W'] = 'written, not read'\nos.environ.get(f'X{1}')\n"
    )
    assert env_reads([src]) == ({"A", "B", "C", "D", "E"}, [f"{src}:11"])


def _private_dagster_importers() -> set[str]:
    """Package files that import a private Dagster module (`dagster._core`, ...)."""
    found = set()
    for path in sorted((ROOT / "image_search_assets").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.startswith("dagster._") for n in names):
                found.add(str(path.relative_to(ROOT)))
    return found


def test_the_modules_allowed_dagster_internals_are_exactly_those_that_use_them():
    # docs/development.md: the list lives once, in pyproject.toml; a stale entry is a hole.
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    allowed = {f for f, rules in lint["per-file-ignores"].items() if "TID251" in rules}
    assert allowed - {"tests/**"} == _private_dagster_importers()
    page = (ROOT / "docs" / "development.md").read_text()
    assert "the list lives once, in `pyproject.toml`'s per-file-ignores" in page
