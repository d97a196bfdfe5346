"""The engine and its benchmark run on a bare GPU machine (torch, torchvision, Pillow, numpy,
tqdm): importing them must not pull in Dagster, Annoy, pandas or the cloud clients."""

import subprocess
import sys

HEAVY = ("dagster", "annoy", "pandas", "pyarrow", "google.cloud", "yaml")
MODULES = ("engine", "inference", "models", "synthetic")


def test_the_engine_imports_nothing_beyond_torch_and_pillow():
    code = "; ".join(
        [f"import image_search_assets.core.{m}" for m in MODULES]
        + ["import sys", f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
