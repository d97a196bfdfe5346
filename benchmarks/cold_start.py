"""A step's cold start: a fresh Python process per measurement, as each step's pod is, timed from
exec to its first and last finished batch through the real engine (detect + embed).

Phases, each in seconds from exec: torch + torchvision + engine imported; models built and
their weights loaded on the device; every chunk's detect + embed finished (a chunk is one
batch, as the step's work chunks are). Compile time is torch's own count (dynamo + inductor);
"first-batch one-off" is what the first batch took beyond compile and a steady batch: cuDNN
plan building, CUDA's lazy initialisation and, with `--amp auto` on CUDA, the precision check.

Modes, per detector: eager; compiled with an empty compile cache (the first pod of its kind,
which then writes the archive); compiled with that archive (every later pod).

    python benchmarks/cold_start.py --device cpu --image-size 256 --det-size 192 --batch 8 \\
        --batches 3 --out benchmarks/results/cold_start_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DETECTORS = {"ssdlite": "ssdlite320_mobilenet_v3_large", "retinanet": "retinanet_resnet50_fpn_v2"}
MODES = ("eager", "compiled_cold", "compiled_warm")


def child(spec: dict) -> dict:
    """One step's process: everything after exec is on the clock (spec["t0"] is time.time()
    just before the parent started it; both clocks are the same host's)."""
    t0 = spec["t0"]
    stamps = {"exec_to_start": time.time() - t0}
    import torch
    import torchvision  # noqa: F401 - what a step imports, timed with torch
    from torch._dynamo.utils import compilation_time_metrics

    from image_search_assets.core.inference import models
    from image_search_assets.core.inference.engine import compile_cache, detect_boxes, embed_crops
    from image_search_assets.core.inference.engine.precision import from_config

    stamps["imported"] = time.time() - t0
    cache = compile_cache.configure(spec["cache"]) if spec["cache"] else None
    device = models.resolve_device(spec["device"])
    if device.type == "cuda":
        torch.cuda.init()
    det_spec = models.ModelSpec(spec["detector"], spec["weights"], spec["det_size"], num_classes=14)
    detector = models.load_detector(det_spec, str(device))
    emb_spec = models.ModelSpec(spec["embedder"], spec["weights"], spec["emb_size"])
    embedder = models.load_embedder(emb_spec, str(device))
    stamps["models_loaded"] = time.time() - t0
    blobs = [p.read_bytes() for p in sorted(Path(spec["images"]).glob("*.jpg"))]
    options = {"compile": spec["compile"], "amp": from_config(spec["amp"])}
    batch, done, compile_s = spec["batch"], [], []
    for start in range(0, len(blobs), batch):
        chunk = blobs[start : start + batch]
        boxes = detect_boxes(
            detector, chunk, class_ids=(1, 2, 3), score_threshold=0.5, batch_size=batch, **options
        )
        embed_crops(
            embedder, chunk, boxes, input_size=spec["emb_size"], batch_size=batch, **options
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        done.append(time.time() - t0)
        compile_s.append(sum(compilation_time_metrics.get("_compile.compile_inner", [])))
    return {
        "stamps": stamps,
        "batches_done": done,
        "compile_seconds_by_batch": compile_s,
        "cache_events": cache.events if cache else [],
    }


def summarise(raw: dict) -> dict:
    """Seconds from exec to each phase, and the first batch taken apart."""
    s, done, comp = raw["stamps"], raw["batches_done"], raw["compile_seconds_by_batch"]
    steps = [b - a for a, b in zip(done, done[1:], strict=False)]
    batch_compile = [b - a for a, b in zip(comp, comp[1:], strict=False)]
    steady = statistics.median([t - c for t, c in zip(steps, batch_compile, strict=True)] or [0.0])
    first = done[0] - s["models_loaded"]
    return {
        "import_s": round(s["imported"], 2),
        "load_s": round(s["models_loaded"] - s["imported"], 2),
        "compile_s": round(comp[-1], 2),
        "compile_first_batch_s": round(comp[0], 2),
        "first_batch_one_off_s": round(max(0.0, first - comp[0] - steady), 2),
        "steady_batch_s": round(steady, 3),
        "exec_to_first_batch_s": round(done[0], 2),
        "exec_to_last_batch_s": round(done[-1], 2),
        "exec_to_start_s": round(s["exec_to_start"], 3),
    }


def measure(spec: dict, limit_s: float) -> dict:
    repo = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    spec = {**spec, "t0": time.time()}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=limit_s,
    )
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    raw = json.loads(out.stdout.splitlines()[-1])
    return {"phases": summarise(raw), **raw}


def write_images(directory: Path, n: int, size: int) -> None:
    from engine_throughput import synthetic_jpegs  # beside this script

    directory.mkdir(parents=True, exist_ok=True)
    for i, blob in enumerate(synthetic_jpegs(n, size)):
        (directory / f"{i:05d}.jpg").write_bytes(blob)


def hardware(device: str) -> dict:
    import torch
    from engine_throughput import hardware as engine_hardware  # beside this script

    from image_search_assets.core.inference import models

    info = engine_hardware(models.resolve_device(device))
    smi = shutil.which("nvidia-smi")
    query = [smi or "", "--query-gpu=driver_version", "--format=csv,noheader"]
    driver = subprocess.run(query, capture_output=True, text=True).stdout if smi else ""
    return {**info, "driver": driver.strip().splitlines()[0] if driver.strip() else None} | {
        "cuda": torch.version.cuda if info["gpu"] else None
    }


def table(rows: list[dict]) -> str:
    cols = ("import_s", "load_s", "compile_s", "first_batch_one_off_s", "steady_batch_s")
    cols += ("exec_to_first_batch_s", "exec_to_last_batch_s")
    lines = ["| detector | mode | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        cells = [str(r["phases"][c]) for c in cols] if "phases" in r else ["failed"] * len(cols)
        lines.append(f"| {r['detector']} | {r['mode']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(args: argparse.Namespace, images: Path, rows: list[dict]) -> None:
    result = {
        "hardware": hardware(args.device),
        "inputs": {k: v for k, v in vars(args).items() if k not in ("child", "out") and v}
        | {"images": len(list(images.glob("*.jpg")))},
        "targets": {"exec_to_first_batch_compiled_warm_s": 15, "exec_to_first_batch_eager_s": 10},
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    every = [f"{d}:{m}" for d in DETECTORS for m in MODES]
    parser.add_argument("--runs", default=",".join(every), help="in order, of " + ",".join(every))
    parser.add_argument("--det-size", type=int, default=320)
    parser.add_argument("--embedder", default="resnet50")
    parser.add_argument("--emb-size", type=int, default=224)
    parser.add_argument("--weights", default="random", help="random | demo (ssdlite only)")
    parser.add_argument("--amp", default="auto", help="as the models' `precision` setting")
    parser.add_argument("--image-size", type=int, default=320, help="synthetic JPEGs' side")
    parser.add_argument("--images-dir", type=Path, help="*.jpg to use instead of synthetic ones")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--cache", help="compile cache location (default: a fresh temp dir)")
    parser.add_argument("--limit-s", type=float, default=600, help="per measurement")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    work = Path(tempfile.mkdtemp(prefix="cold-start-"))
    images = args.images_dir or work / "images"
    if not args.images_dir:
        write_images(images, args.batch * args.batches, args.image_size)
    rows = []
    for run in args.runs.split(","):
        name, mode = run.split(":")
        cache = f"{args.cache or work / 'cache'}/{name}"  # cold is cold: one per detector
        if mode == "compiled_cold":
            from image_search_assets.core.storage import open_storage

            open_storage(cache).delete_prefix("")
        spec = {
            "device": args.device,
            "detector": DETECTORS[name],
            "det_size": args.det_size,
            "embedder": args.embedder,
            "emb_size": args.emb_size,
            "weights": args.weights,
            "amp": args.amp,
            "images": str(images),
            "batch": args.batch,
            "compile": mode != "eager",
            "cache": cache if mode != "eager" else None,
        }
        rows.append({"detector": name, "mode": mode, **measure(spec, args.limit_s)})
        print(f"{name} {mode}: {rows[-1].get('phases') or rows[-1]['error']}", file=sys.stderr)
        if args.out:  # after each run: a time limit that cuts the rest short keeps these
            write(args, images, rows)
    print(table(rows))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
