"""The import-linter contracts catch what they forbid: each is shown failing on a planted import.

CI runs `lint-imports` over the real tree, where every contract holds; a contract that holds
because it names the wrong module would hold just as quietly. Each case copies the packages
and pyproject.toml into a temporary folder, adds one forbidden import to a real module there
and runs `lint-imports --no-cache` on the copy, which must fail naming the broken contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> Path:
    for package in ("image_search_assets", "resources"):
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _plant(tree: Path, module: str, statement: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{statement}  # planted\n")


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        (
            "image_search_assets/core/failures.py",
            "import image_search_assets.settings",
            "core never imports settings",
        ),
        (
            "image_search_assets/core/failures.py",
            "import dagster",
            "core imports neither Dagster nor the wiring above it",
        ),
        (
            "image_search_assets/serving/errors.py",
            "import image_search_assets.definitions",
            "serving imports neither Dagster nor the wiring above core",
        ),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(tmp_path, module, statement, contract):
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is not installed"
    tree = _copy_tree(tmp_path)
    _plant(tree, module, statement)
    result = _lint(tree)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert f"{contract} BROKEN" in out, out[-3000:]
    # The planted line is the one reported, so the contract failed for this import.
    assert module.removesuffix(".py").replace("/", ".") in out, out[-3000:]
