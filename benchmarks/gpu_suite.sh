#!/usr/bin/env bash
# The engine's GPU measurements in one script: naive vs engine, same run, same inputs, for the
# speed/accuracy choices worth recording; plus profiles of the eager passes.
#
#   on a GPU host (H100/H200) whose python3 holds torch:  bash benchmarks/gpu_suite.sh
#   in parts:  SUITE=core ..., SUITE=cold_start ..., then SUITE=compiled ...
#   smoke test on a CPU:  DEVICE=cpu IMAGES=16 PYTHON=.venv/bin/python bash benchmarks/gpu_suite.sh
#
# Writes at most 10 files to $OUT: one JSON per configuration, cold_start_<detector>.json (a
# fresh process per measurement: exec to first and last batch, eager and compiled on a cold
# then a warm compile cache), amp_numerics.json (fp16/bf16 vs
# fp32 per model, CUDA kernels), profiles.txt (torch.profiler tables of the eager SSDlite and
# RetinaNet engine passes) and suite.log (nvidia-smi, every command, its exit code, its stderr,
# and one JSON line each from decode_race.py, workers_check.py and fold_speed.py).
set -u
OUT=${OUT:-benchmarks/results/gpu}
DEVICE=${DEVICE:-cuda}
IMAGES=${IMAGES:-1024}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
LOG=$OUT/suite.log
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    || echo "no nvidia-smi"; $PY -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)'; } >"$LOG" 2>&1

bench() {  # limit (s), name, then engine_throughput.py arguments (SCRIPT= picks another script)
  local limit=$1 name=$2; shift 2
  local script=${SCRIPT:-benchmarks/engine_throughput.py}
  local cmd=("$PY" "$script" --device "$DEVICE" --out "$OUT/$name.json" "$@")
  echo "== $name: ${cmd[*]}" >>"$LOG"
  local started=$SECONDS
  timeout "$limit" "${cmd[@]}" >/dev/null 2>>"$LOG"
  echo "== $name: rc=$? in $((SECONDS - started)) s" | tee -a "$LOG"
}

# Cheapest and most telling first, compiled runs last: if a time limit cuts the suite short,
# what ran is already under $OUT. Per-step limits: LIMIT_S (eager), LIMIT_COMPILE_S.
EAGER=${LIMIT_S:-100}
COMPILED=${LIMIT_COMPILE_S:-150}
SSD=(--detector ssdlite320_mobilenet_v3_large --det-size 320)
RETINA=(--detector retinanet_resnet50_fpn_v2 --det-size 512)
R50=(--embedder resnet50 --emb-size 224)
COLD=${LIMIT_COLD_S:-180}  # one detector's cold-start runs: eager, compile cold, compile warm
SUITE=${SUITE:-all}  # core (eager + checks, ~4 min expected) | cold_start | compiled | all
if [[ $SUITE == all || $SUITE == core ]]; then
  bench "$EAGER" ssdlite_resnet50 --images "$IMAGES" --batch 64 "${SSD[@]}" "${R50[@]}" \
    --profile "$OUT/profiles.txt"
  bench "$EAGER" retinanet_resnet50 --images $((IMAGES / 2)) --batch 32 "${RETINA[@]}" "${R50[@]}" \
    --profile "$OUT/profiles.txt"
  bench "$EAGER" demo_models --images "$IMAGES" --batch 64 --weights demo \
    --detector ssdlite320_mobilenet_v3_large --det-size 192 --embedder mobilenet_v3_small --emb-size 112
  # The nvJPEG overwrite hazard, bare torchvision vs the engine's reader: one JSON line in the log.
  SCRIPT=benchmarks/decode_race.py bench 60 decode_race --iterations 100 --out "$LOG"
  SCRIPT=benchmarks/workers_check.py bench 60 workers --images 512 --out "$LOG"
  SCRIPT=benchmarks/amp_numerics.py bench "$EAGER" amp_numerics --images $((IMAGES / 8)) --batch 64
  fold_amp=fp16; [[ $DEVICE == cuda ]] || fold_amp=fp32  # fp16 is emulated (slow) on a CPU
  SCRIPT=benchmarks/fold_speed.py bench 60 fold_speed --amp $fold_amp \
    --batch $((IMAGES < 64 ? IMAGES : 64)) --out "$LOG"
fi
if [[ $SUITE == all || $SUITE == cold_start ]]; then
  # Fresh processes, as a step's pod is; each writes its JSON after every run it finishes.
  COLD_ARGS=(--batch 64 --batches 4 --embedder resnet50 --emb-size 224 --limit-s 150)
  SCRIPT=benchmarks/cold_start.py bench "$COLD" cold_start_ssdlite --det-size 320 \
    --runs ssdlite:eager,ssdlite:compiled_cold,ssdlite:compiled_warm "${COLD_ARGS[@]}"
  SCRIPT=benchmarks/cold_start.py bench "$COLD" cold_start_retinanet --det-size 512 \
    --runs retinanet:eager,retinanet:compiled_cold,retinanet:compiled_warm "${COLD_ARGS[@]}"
fi
if [[ $SUITE == all || $SUITE == compiled ]]; then
  bench "$COMPILED" ssdlite_resnet50_compile --images "$IMAGES" --batch 64 "${SSD[@]}" "${R50[@]}" \
    --compile
  bench "$COMPILED" retinanet_resnet50_compile --images $((IMAGES / 2)) --batch 32 "${RETINA[@]}" \
    "${R50[@]}" --compile
fi
