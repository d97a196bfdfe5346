"""The engine and its benchmark run on a bare GPU machine (torch, torchvision, Pillow, numpy,
tqdm): importing them must not pull in Dagster, Annoy, pandas or the cloud clients."""

import re
import subprocess
import sys
from pathlib import Path

HEAVY = ("dagster", "annoy", "pandas", "pyarrow", "google.cloud", "yaml")
MODULES = (
    "core.inference.engine",
    "core.inference.naive",
    "core.inference.models",
    "demo.synthetic",
)
SUITE = "benchmarks/gpu_suite.sh"


def test_the_engine_imports_nothing_beyond_torch_and_pillow():
    code = "; ".join(
        [f"import image_search_assets.{m}" for m in MODULES]
        + ["import sys", f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


GPU_SUITE_SCRIPTS = sorted(set(re.findall(r"benchmarks/(\w+)\.py", Path(SUITE).read_text())))


def test_the_gpu_suite_scripts_start_without_the_platform_packages():
    """benchmarks/gpu_suite.sh runs on a GPU host's own python3 (torch, torchvision,
    Pillow, numpy; no Dagster, Annoy, pandas): each script must get through its imports and
    argument parsing with those packages made unimportable."""
    assert len(GPU_SUITE_SCRIPTS) >= 5, GPU_SUITE_SCRIPTS
    for script in GPU_SUITE_SCRIPTS:
        code = "; ".join(
            [
                "import sys, runpy",
                f"sys.modules.update(dict.fromkeys({HEAVY!r}))",  # None: ImportError on import
                "sys.path.insert(0, 'benchmarks')",
                f"sys.argv = ['{script}.py', '--help']",
                f"runpy.run_path('benchmarks/{script}.py', run_name='__main__')",
            ]
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, (script, out.stderr[-2000:])
        assert "usage:" in out.stdout
