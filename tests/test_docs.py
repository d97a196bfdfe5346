"""Docs name only paths that exist, and the README is a front door with both commands up top."""

from __future__ import annotations

import re
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


def test_readme_is_a_front_door_with_both_commands_in_its_first_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 120
    first = "\n".join(lines[:40])
    assert 'pip install -e ".[dev]"' in first and "image-search demo" in first
    assert "python -m pytest" in first


def test_no_dated_work_log_remains():
    assert not (ROOT / "docs" / "notes").exists()
    dated = [p for p in ROOT.rglob("*.md") if re.search(r"\d{4}-\d{2}-\d{2}", p.name)]
    assert [p for p in dated if ".venv" not in p.parts] == []
