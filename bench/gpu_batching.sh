#!/usr/bin/env bash
# Micro-batching on one NVIDIA GPU: SD1.5-class txt2img, 512x512, 20 steps, 8 same-shape jobs
# waiting, each with its own prompt and seed; through ComfyUI's own queue, through Stencil
# without batching and with it (bench/batching.py). Finishes well within 5 minutes.
#
#   bench/gpu_batching.sh            # after `make setup comfyui models`
#
# The checkpoint is whatever .stencil/models holds under the catalog's name: the random-weight
# stand-in from `stencil models synth` (same architecture and cost) or the real file from
# `stencil models fetch`. Targets (issue #11): >= 3x the jobs per minute of ComfyUI's queue,
# p50 latency <= 1.5x a lone job, every image within 1/255 of its lone run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" - <<'PY'
import torch

assert torch.cuda.is_available(), "no CUDA GPU visible to torch"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
"$PY" -c "from engine.comfy.install import comfyui_version; print('ComfyUI', comfyui_version('.stencil/comfyui'))"
exec timeout 290 "$PY" bench/batching.py --gpu --jobs 8 --steps 20 --size 512 --rounds 2 \
  --wait-ms 2000 "$@"
