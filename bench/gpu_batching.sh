#!/usr/bin/env bash
# Micro-batching on one NVIDIA GPU: SD1.5-class txt2img, 512x512, 20 steps, 8 same-shape jobs
# waiting, each with its own prompt and seed; through ComfyUI's own queue, through Stencil
# without batching and with it (bench/batching.py). Finishes well within 5 minutes.
#
#   bench/gpu_batching.sh            # after `make setup comfyui models`
#
# The checkpoint: the real file from `stencil models fetch` when .stencil/models holds it;
# otherwise a random-weight SD1.5 of the released size (860M-parameter UNet, CLIP-L, VAE:
# the same cost per step; `stencil models synth` writes a tiny UNet, too cheap to measure a
# GPU with), written once to .stencil/models-sd15-full (about 25 s, 2.1 GB) beside links to
# the other models. Targets: >= 3x the jobs per minute of ComfyUI's queue, p50 latency
# <= 1.5x a lone job, every image within 1/255 of its lone run.
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
CKPT=checkpoints/v1-5-pruned-emaonly-fp16.safetensors
MODELS=.stencil/models
if [ ! -f "$MODELS/$CKPT" ] || [ -f "$MODELS/$CKPT.synthetic.json" ]; then
  MODELS=.stencil/models-sd15-full
  for d in .stencil/models/*/; do
    mkdir -p "$MODELS/$(basename "$d")"
    for f in "$d"*; do
      [ -e "$f" ] && [ "$(basename "$d")/$(basename "$f")" != "$CKPT" ] \
        && [ "$(basename "$d")/$(basename "$f")" != "$CKPT.synthetic.json" ] \
        && ln -sfn "$(realpath "$f")" "$MODELS/$(basename "$d")/"
    done
  done
  [ -f "$MODELS/$CKPT" ] || "$PY" -m engine.catalog.synth --comfyui .stencil/comfyui \
    --out "$MODELS/$CKPT" --kind sd15_full
fi
echo "models: $MODELS ($(grep -o '"format": "[^"]*"' "$MODELS/$CKPT.synthetic.json" 2>/dev/null || echo real))"
exec timeout 270 "$PY" bench/batching.py --gpu --jobs 8 --steps 20 --size 512 --rounds 2 \
  --wait-ms 2000 --models "$MODELS" "$@"
