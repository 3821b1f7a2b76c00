#!/usr/bin/env bash
# Every GPU check of the project in one run, for when a GPU machine is at hand for minutes only.
# Run from the repository root; results go to $OUT (default /tmp/gpu_check): log.txt plus the JSON/Markdown
# each check writes. No install step: the GPU image's python3 has torch, transformers, tokenizers, safetensors,
# pyyaml, tqdm, rich, tensorboard and matplotlib, which is all these checks import.
#
#   bash dev/gpu_check.sh                 # on the GPU machine (~6 min on one H200)
#   DEVICE=cpu QUICK=1 bash dev/gpu_check.sh    # a dry run of the script itself on a CPU box (~3 min)
#   ONLY="2 6" bash dev/gpu_check.sh      # just those checks
#
# Checks, each with its own time limit so that one failure does not cost the rest:
#   1. pytest -m gpu: engine greedy output equal to HF generate on CUDA (llama, qwen2, qwen3 through the CUDA
#      graphs, gpt2), seeded sampling reproducible, graph logits equal to the eager step's.
#   2. benchmarks/engine_bench.py --device cuda: engine (CUDA graphs, and its eager step) vs HF generate, batch 64
#      x 96 tokens, presets and a Qwen2.5-0.5B-shaped model in bf16; the eval workload with $TRAINED (carried).
#   3. the quickstart (sft, eval, route, search, report) with --device cuda: wall time and the S1/S2 table.
#   4. a learned PRM trained on CUDA (Math-Shepherd labels) from the quickstart model, then eval with it.
#   5. the RL recipe (recipes/quickstart_rl.yaml: SFT on levels 1-3, then GRPO on level 3) on CUDA.
#   6. a 27M-parameter Qwen3 built from a config (dev/make_hf_model.py: GQA, q/k norms, head_dim 128), not a
#      preset: SFT from scratch by path, then eval through the engine's native path.
#   7. LoRA GRPO on a Qwen3-1.7B-shaped model (random weights) in bf16: ours with LoRA vs full fine-tuning (and TRL
#      GRPOTrainer + peft LoRA when trl is installed): step time, samples/s, peak memory
#      (benchmarks/lora_grpo_bench.py -> lora_grpo_cuda.json). Needs peft: if the image lacks it, carry it, e.g.
#      `pip install --no-deps --target .pydeps peft accelerate` here and PYDEPS=.pydeps there.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-/tmp/gpu_check}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
WORK="$(mktemp -d)"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

quiet() { grep -v "Writing model shards\|Loading weights"; }
# quickstart NAME [options]: one quickstart run on $DEVICE into $WORK/NAME; its results.json -> $OUT/NAME_results.json
quickstart() {
  local name=$1 t=$SECONDS; shift
  timeout "${QS_TIMEOUT:-420}" python3 -m slowthink.cli quickstart --device "$DEVICE" --out "$WORK/$name" --steps "$SFT_STEPS" \
    --progress false "${QS_EXTRA[@]}" "$@" 2>&1 | quiet | tail -40
  echo "$name wall time: $((SECONDS - t)) s"
  cp "$WORK/$name/results.json" "$OUT/${name/qs/quickstart}_results.json" 2>/dev/null
}
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
stamp() { echo; echo "=== $1  [$(date -u +%H:%M:%S), +$((SECONDS))s]"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'tokenizers', tokenizers.__version__, 'cuda', torch.cuda.is_available())"
nproc

if [ "$QUICK" = 1 ]; then
  SFT_STEPS=20; RL_STEPS=3; PRESETS=tiny; BENCH=(--repeats 1 --warmup 1); Q3=(--hidden 64 --layers 2 --heads 4 --kv-heads 2); QS_EXTRA=(--eval-per-level 10 --route-per-level 8 --search-problems 6 --max-new-tokens 40)
else
  SFT_STEPS=900; RL_STEPS=200; PRESETS=tiny,small,large,qwen2-0.5b; BENCH=(--repeats 3 --warmup 1); Q3=(--hidden 512 --layers 8 --heads 8 --kv-heads 2); QS_EXTRA=()
fi

if want 1; then
stamp "1. pytest -m gpu"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_engine.py 2>&1 | tail -60
fi

if want 2; then
stamp "2. engine vs HF generate ($PRESETS)"
timeout 300 python3 benchmarks/engine_bench.py --device "$DEVICE" --models "$PRESETS" "${BENCH[@]}" \
  --trained-model "${TRAINED:-runs/quickstart/model}" --out "$OUT/engine_cuda.json"
fi

if want 3; then
stamp "3. quickstart --device $DEVICE"
quickstart qs
cp "$WORK/qs/report.md" "$OUT/quickstart_report.md" 2>/dev/null
fi

if want 4; then
stamp "4. PRM on $DEVICE from the quickstart model, then best-of-8 with it"
t=$SECONDS
timeout 240 python3 -m slowthink.cli train prm --init "$WORK/qs/model" --levels 2 --problems 64 \
  --samples-per-problem 4 --rollouts 4 --epochs 2 --device "$DEVICE" --out "$WORK/prm" 2>&1 | quiet | tail -8
timeout 120 python3 -m slowthink.cli eval --model "$WORK/qs/model" --levels 2 --per-level 40 --strategy best_of_n \
  --modes system2 --n 8 --verifier "$WORK/prm/critic" --device "$DEVICE" --json-out "$OUT/prm_best_of_8.json" 2>&1 | tail -8
echo "prm + eval wall time: $((SECONDS - t)) s"
fi

if want 5; then
stamp "5. RL recipe on $DEVICE (SFT levels 1-3, GRPO on level 3)"
quickstart qs_rl --config recipes/quickstart_rl.yaml --rl-steps "$RL_STEPS" --rl-time-budget-s "${RL_BUDGET:-150}"
cp "$WORK/qs_rl/rl.json" "$OUT/quickstart_rl_rl.json" 2>/dev/null
fi

if want 6; then
stamp "6. a Qwen3 built from a config (not a preset): SFT by path, eval through the native engine path"
t=$SECONDS
python3 dev/make_hf_model.py --arch qwen3 "${Q3[@]}" --out "$WORK/qwen3_init"
timeout 300 python3 -m slowthink.cli train sft --model "$WORK/qwen3_init" --task-args op=mul,cot=cells \
  --levels 1,2 --level-weights 1,3 --steps "$SFT_STEPS" --lr 3e-4 --eval-every 300 --device "$DEVICE" \
  --out "$WORK/qwen3_sft" --progress false 2>&1 | quiet | tail -6
timeout 120 python3 -m slowthink.cli eval --model "$WORK/qwen3_sft/model" --task-args op=mul,cot=cells --levels 1,2 \
  --per-level 100 --device "$DEVICE" --json-out "$OUT/qwen3_eval.json" 2>&1 | tail -9
echo "qwen3 wall time: $((SECONDS - t)) s"
fi

if want 7; then
stamp "7. LoRA GRPO, Qwen3-1.7B shape, bf16: ours LoRA vs ours full fine-tuning (vs TRL + peft if installed)"
[ -n "${PYDEPS:-}" ] && export PYTHONPATH="$PWD/$PYDEPS:$PYTHONPATH"
if python3 -c "import peft" 2>/dev/null; then
  LORA_SIDES=ours-lora,ours-full; python3 -c "import trl" 2>/dev/null && LORA_SIDES=$LORA_SIDES,trl-lora
  if [ "$QUICK" = 1 ]; then  # the script's own path on a tiny shape (bf16 needs CUDA; the CPU trains in float32)
    LORA=(--shape tiny --steps 2 --rounds 1 --dtype "$([ "$DEVICE" = cpu ] && echo float32 || echo bf16)")
  else
    LORA=(--shape qwen3-1.7b --dtype bf16 --steps 4 --rounds 1 --prompts-per-step 8 --group-size 8 --max-new-tokens 128)
  fi
  timeout 420 python3 benchmarks/lora_grpo_bench.py --device "$DEVICE" --sides "$LORA_SIDES" "${LORA[@]}" \
    --workdir "$WORK/lora_bench" --out "$OUT/lora_grpo_cuda.json" 2>&1 | quiet | grep -v "Warning\|warn" | tail -20
else
  echo "skipped: peft is not installed (see check 7 above: PYDEPS)"
fi
fi

stamp "done"
