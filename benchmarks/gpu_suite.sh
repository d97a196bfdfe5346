#!/usr/bin/env bash
# The engine's GPU measurements as ONE device call (issue 7): naive vs engine, same run, same
# inputs, for the speed/accuracy choices worth recording; plus profiles of the eager passes.
#
#   on the lent GPU (its python3 holds torch):  bash benchmarks/gpu_suite.sh
#   smoke test on a CPU:  DEVICE=cpu IMAGES=16 PYTHON=.venv/bin/python bash benchmarks/gpu_suite.sh
#
# Writes at most 8 files to $OUT (the device tool brings back 8): one JSON per configuration,
# amp_numerics.json (fp16/bf16 vs fp32 per model, CUDA kernels), profiles.txt (torch.profiler
# tables of the eager SSDlite and RetinaNet engine passes) and suite.log (nvidia-smi, every
# command, its exit code, its stderr, and one JSON line each from decode_race.py and
# workers_check.py).
set -u
OUT=${OUT:-benchmarks/results/gpu}
DEVICE=${DEVICE:-cuda}
IMAGES=${IMAGES:-2048}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
LOG=$OUT/suite.log
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    || echo "no nvidia-smi"; $PY -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)'; } >"$LOG" 2>&1

bench() {  # name, then engine_throughput.py arguments (SCRIPT= picks another benchmark)
  local name=$1; shift
  local script=${SCRIPT:-benchmarks/engine_throughput.py}
  local cmd=("$PY" "$script" --device "$DEVICE" --out "$OUT/$name.json" "$@")
  echo "== $name: ${cmd[*]}" >>"$LOG"
  local started=$SECONDS
  timeout "${LIMIT_S:-170}" "${cmd[@]}" >/dev/null 2>>"$LOG"
  echo "== $name: rc=$? in $((SECONDS - started)) s" | tee -a "$LOG"
}

SSD=(--detector ssdlite320_mobilenet_v3_large --det-size 320)
RETINA=(--detector retinanet_resnet50_fpn_v2 --det-size 512)
R50=(--embedder resnet50 --emb-size 224)
bench ssdlite_resnet50 --images "$IMAGES" --batch 64 "${SSD[@]}" "${R50[@]}" \
  --profile "$OUT/profiles.txt"
bench ssdlite_resnet50_compile --images "$IMAGES" --batch 64 "${SSD[@]}" "${R50[@]}" --compile
bench retinanet_resnet50 --images $((IMAGES / 2)) --batch 32 "${RETINA[@]}" "${R50[@]}" \
  --profile "$OUT/profiles.txt"
bench retinanet_resnet50_compile --images $((IMAGES / 2)) --batch 32 "${RETINA[@]}" "${R50[@]}" --compile
bench demo_models --images "$IMAGES" --batch 64 --weights demo \
  --detector ssdlite320_mobilenet_v3_large --det-size 192 --embedder mobilenet_v3_small --emb-size 112
SCRIPT=benchmarks/amp_numerics.py bench amp_numerics --images $((IMAGES / 8)) --batch 64
# The nvJPEG overwrite hazard, bare torchvision vs the engine's reader: one JSON line in the log.
SCRIPT=benchmarks/decode_race.py bench decode_race --iterations 100 --out "$LOG"
SCRIPT=benchmarks/workers_check.py bench workers --images 512 --out "$LOG"
