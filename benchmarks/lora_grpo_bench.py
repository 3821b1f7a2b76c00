"""LoRA GRPO cost: our trainer with LoRA vs our full fine-tuning vs TRL's ``GRPOTrainer`` + peft LoRA, one run.

    nice -n 5 python benchmarks/lora_grpo_bench.py --threads 1         # Qwen3-0.6B shape, CPU -> results/lora_grpo.json
    python benchmarks/lora_grpo_bench.py --shape tiny --steps 2 --rounds 1 --out /tmp/lora_tiny.json   # dry run
    python benchmarks/lora_grpo_bench.py --shape qwen3-1.7b --device cuda --dtype bf16 --sides ours-lora,ours-full

The model is a randomly initialised Qwen3 built from a config with the real shapes (``SHAPES``: hidden, layers,
heads, KV heads, head_dim 128, MLP width, q/k norms, tied embeddings), saved once as a model folder
(``save_pretrained``) that both sides load. Its tokenizer is a byte-level BPE trained here on local text with a
Qwen3-style chat template (``tests/hf_fixture.py``); the local text supports ~11k merges, so the vocabulary is
``--vocab`` (8,192 by default) instead of Qwen3's 151,936: the embedding/LM head is ~8M parameters instead of
~156M and the learner's logits are ~18x smaller. Everything else (the 0.44B non-embedding parameters of the
0.6B shape) is as in the real model.

Configurations (``--sides``), each run as a **fresh process** per round, so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the process's resident-set high-water mark) is its own:
  ours-lora  slowthink GRPO with ``--lora-r/--lora-alpha/--lora-targets`` (peft adapters; the engine samples)
  ours-full  slowthink GRPO training every weight
  trl-lora   TRL ``GRPOTrainer(peft_config=peft.LoraConfig(...))``, HF ``generate`` (no vLLM), ``use_cpu`` on a CPU
Same settings on every side: the same problems in the same order (step s of every side prompts
``sample_problems(task, seed, s, P, levels)``, System-2 prompts through the model's chat template; the script
checks that TRL's prompt ids equal ours), group size, prompts per step, completion limit, temperature 1, lr
(constant), AdamW betas (0.9, 0.99), grad clip 1, clip range 0.2/0.28, token-mean loss, no KL, one optimizer step
per batch; LoRA r, alpha, targets and dropout 0 on both LoRA sides; micro-batch = the whole batch. The reward is
the share of letters in the completion's text (``LetterShare``): a random model's samples differ in it, so no
group has all-equal rewards and both learners run every row (ours skips zero-advantage rows; the number of rows
its learner ran is recorded per step).

Interleaving: rounds; in each round every configuration runs once (``--steps`` steps), in an order rotated by
one per round, so background load on a shared machine hits all alike. Per step: ``rollout_s`` (ours: its
trainer's own metric; TRL: ``_generate_and_score_completions`` timed from outside: generation, rewards,
advantages), ``learner_s`` (ours: its metric; TRL: step minus rollout: forward, backward, optimizer, logging),
``step_s``. The first step of each process is warm-up (lazy setup, the engine's first fused weights) and is
left out of the medians; samples/s = completions per step / median warm step. Peak RSS is read after the last
step's update (before our final save, which writes a merged copy of a LoRA model) and at process exit; on CUDA,
``torch.cuda.max_memory_allocated`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # hf_fixture: the byte-level BPE tokenizer and Qwen3-style template
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trl_grpo_bench import load_avg, machine_info  # noqa: E402

MODE = "system2"
TASK_ARGS = {"op": "mul", "cot": "cells"}
SIDES = ("ours-lora", "ours-full", "trl-lora")
TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
# Qwen3 configs as published (config.json of Qwen/Qwen3-0.6B and -1.7B); "tiny" is for dry runs only.
SHAPES = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
}


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def rss_now_mib() -> float:
    """The current resident set (Linux ``/proc``; no psutil, which the GPU image lacks)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)  # kB
    return float("nan")


def cuda_peak(device: str) -> dict:
    import torch

    if not device.startswith("cuda"):
        return {}
    return dict(cuda_max_allocated_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                cuda_max_reserved_mib=round(torch.cuda.max_memory_reserved() / 2**20, 1))


def letter_share_task():
    from slowthink.chat import Mode
    from slowthink.tasks import Arithmetic
    from slowthink.tasks.base import Score

    class LetterShare(Arithmetic):
        """Arithmetic prompts, rewarded by the share of ASCII letters in the completion: a reward on which a random
        model's samples differ, so every group has non-zero advantages (a cost benchmark needs every row learned)."""

        def score(self, problem, completion, mode=Mode.SYSTEM2):
            letters = sum(c.isascii() and c.isalpha() for c in completion)
            return Score(reward=letters / max(1, len(completion)), answer=None, well_formed=False)

    return LetterShare(**TASK_ARGS)


# ----------------------------------------------------------------------------- model folder

QWEN3_VOCAB = 151_936  # Qwen3's config vocab_size


def params_at_qwen3_vocab(shape: str) -> int:
    """Parameters of ``shape`` with Qwen3's own vocabulary, counted on the meta device (no memory): checks the
    shape against the published sizes (0.6B: 596M total, 440M without the embedding)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Qwen3Config(vocab_size=QWEN3_VOCAB, tie_word_embeddings=True,
                                                             **SHAPES[shape]))
    return sum(p.numel() for p in model.parameters())


def build_model_folder(shape: str, vocab: int, folder: Path, seed: int = 0) -> dict:
    """A random Qwen3 of ``shape`` with a byte-level BPE tokenizer of ``vocab`` tokens, saved to ``folder`` (cached:
    rebuilt only when the recorded settings differ)."""
    from hf_fixture import build_bpe_tokenizer
    from transformers import Qwen3Config

    from slowthink.models import count_parameters, init_from_config, save

    if shape not in SHAPES:
        raise SystemExit(f"--shape: unknown {shape!r}; choose one of {sorted(SHAPES)}")
    settings = dict(shape=shape, vocab=vocab, seed=seed, **SHAPES[shape])
    stamp = folder / "bench_settings.json"
    if stamp.exists() and json.loads(stamp.read_text())["settings"] == settings:
        return json.loads(stamp.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    tok = build_bpe_tokenizer(vocab_size=vocab)
    config = Qwen3Config(vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=True,
                         rms_norm_eps=1e-6, rope_theta=1_000_000.0, bos_token_id=None, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **SHAPES[shape])
    model = init_from_config(config, tok, seed=seed)
    n = count_parameters(model)
    save(model, tok, folder)
    info = dict(settings=settings, tokenizer_vocab=len(tok), params=n,
                embedding_params=model.get_input_embeddings().weight.numel())
    stamp.write_text(json.dumps(info))
    return info


# ----------------------------------------------------------------------------- one configuration (worker process)

def run_ours(args, side: str, workdir: Path) -> list[dict]:
    from slowthink.rl import grpo
    from slowthink.train.runlog import read_metrics

    run = workdir / f"{side}_r{args.round}"
    shutil.rmtree(run, ignore_errors=True)  # else train() would resume it
    lora = side == "ours-lora"
    cfg = grpo.GRPOConfig(out=str(run), init=args.model_dir, task="arithmetic", task_args=TASK_ARGS,
                          levels=args.levels, mode=MODE, steps=args.steps, prompts_per_step=args.prompts_per_step,
                          group_size=args.group_size, max_new_tokens=args.max_new_tokens, temperature=1.0, lr=args.lr,
                          format_reward=0.0, clip_high=0.28, eval_every=0, eval_per_level=0,
                          checkpoint_every=10**9, seed=args.seed, threads=args.threads, progress=False,
                          device=args.device, dtype=args.dtype, lora_r=args.lora_r if lora else 0,
                          lora_alpha=args.lora_alpha if lora else 0.0,
                          lora_targets=args.lora_targets.split(",") if lora else [])
    peaks = []
    learn = grpo.learn

    def learn_and_read_peak(*a, **kw):  # instrumentation only: the memory high-water mark after each update
        out = learn(*a, **kw)
        peaks.append(dict(peak_rss_mib=peak_rss_mib(), **cuda_peak(args.device)))
        return out

    grpo.learn = learn_and_read_peak
    grpo.train(cfg, task=letter_share_task())
    rows = [r for r in read_metrics(run) if "rollout_s" in r]
    return [dict(step=r["step"], step_s=round(r["step_s"], 3), rollout_s=round(r["rollout_s"], 3),
                 learner_s=round(r.get("learner_s", 0.0), 3), learner_rows=r.get("learner_rows"),
                 reward_mean=round(r["reward_mean"], 4), **p) for r, p in zip(rows, peaks, strict=True)]


def run_trl(args, workdir: Path) -> tuple[list[dict], dict]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    from slowthink.rl.batch import sample_problems
    from slowthink.rl.rewards import RewardFn
    from slowthink.tokenizer import end_of_turn_ids, render_prompt

    P, G, bf16 = args.prompts_per_step, args.group_size, args.dtype == "bf16"
    task = letter_share_task()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    problems = [p for s in range(args.steps) for p in sample_problems(task, args.seed, s, P, args.levels)]
    # our System-2 prompt as text: the template's generation prompt plus the opened think block that we append
    # (Qwen3's template with enable_thinking=True opens none); TRL tokenises a text prompt as it is
    prompt_ids = [render_prompt(tok, task.prompt(p, MODE), MODE) for p in problems]
    data = Dataset.from_dict({"prompt": [tok.decode(ids) for ids in prompt_ids], "pid": list(range(len(problems)))})
    reward_fn, eos = RewardFn(format_bonus=0.0), set(end_of_turn_ids(tok))
    rewards = []

    def task_reward(prompts, completions, completion_ids, pid, **_):
        out = []
        for ids, i in zip(completion_ids, pid, strict=True):
            ids = list(ids)
            body = ids[:-1] if ids and ids[-1] in eos else ids  # as our engine: text without the eos token
            out.append(reward_fn(task, problems[i], tok.decode(body, skip_special_tokens=False), len(ids), MODE).total)
        rewards.append(sum(out) / len(out))
        return out

    targs = TRLGRPOConfig(
        output_dir=str(workdir / f"trl_r{args.round}"), use_cpu=args.device == "cpu", bf16=bf16, fp16=False,
        per_device_train_batch_size=P * G, gradient_accumulation_steps=1, num_generations=G,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.99, max_grad_norm=1.0, beta=0.0, num_iterations=1, epsilon=0.2,
        epsilon_high=0.28, loss_type="dapo", scale_rewards="group", gradient_checkpointing=False,
        max_steps=args.steps, logging_steps=1, save_strategy="no", report_to="none", shuffle_dataset=False,
        seed=args.seed, chat_template_kwargs={"enable_thinking": True}, dataloader_num_workers=0,
        disable_tqdm=True, use_vllm=False)
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                      target_modules=args.lora_targets.split(","), task_type="CAUSAL_LM", bias="none")
    steps, state = [], dict(t=0.0)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            state["t"] = time.perf_counter()

        def on_step_end(self, *a, **kw):
            steps.append(dict(step_s=time.perf_counter() - state["t"], peak_rss_mib=peak_rss_mib(),
                              **cuda_peak(args.device)))

    trainer = GRPOTrainer(model=model, reward_funcs=task_reward, args=targs, train_dataset=data,
                          processing_class=tok, peft_config=lora, callbacks=[StepTimer()])
    theirs = trainer._tokenize_prompts([data[i]["prompt"] for i in range(P)])[0]
    ours = prompt_ids[:P]
    if [list(x) for x in theirs] != ours:
        raise SystemExit(f"TRL's prompt ids differ from ours:\n{list(theirs[0])}\n{ours[0]}")
    rollout_s, generate_and_score = [], trainer._generate_and_score_completions

    def timed_generate_and_score(inputs):  # timing only: generation, rewards, advantages of one step
        t = time.perf_counter()
        out = generate_and_score(inputs)
        rollout_s.append(time.perf_counter() - t)
        return out

    trainer._generate_and_score_completions = timed_generate_and_score
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    rows = [dict(step=i + 1, step_s=round(s["step_s"], 3), rollout_s=round(g, 3),
                 learner_s=round(s["step_s"] - g, 3), learner_rows=P * G, reward_mean=round(r, 4),
                 **{k: v for k, v in s.items() if k != "step_s"})
            for i, (s, g, r) in enumerate(zip(steps, rollout_s, rewards, strict=True))]
    return rows, dict(prompt_ids_equal_ours=True, trainable_params=trainable, optimizer=str(targs.optim),
                      torch_threads_in_train=torch.get_num_threads())


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    t0, workdir = time.perf_counter(), Path(args.workdir)
    load1 = load_avg()
    extra = {}
    if args.worker == "trl-lora":
        rows, extra = run_trl(args, workdir)
    else:
        rows = run_ours(args, args.worker, workdir)
    result = dict(side=args.worker, round=args.round, steps=rows, peak_rss_after_steps_mib=rows[-1]["peak_rss_mib"],
                  peak_rss_process_mib=peak_rss_mib(), rss_at_exit_mib=rss_now_mib(), **cuda_peak(args.device),
                  process_s=round(time.perf_counter() - t0, 1), load_avg_start=load1, load_avg_end=load_avg(), **extra)
    Path(args.result).write_text(json.dumps(result, indent=1))


# ----------------------------------------------------------------------------- orchestration

def spawn(args, side: str, rnd: int, result: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--round", str(rnd), "--result", str(result)]
    for name in ("model_dir", "steps", "prompts_per_step", "group_size", "max_new_tokens", "lr", "lora_r",
                 "lora_alpha", "lora_targets", "threads", "seed", "device", "dtype", "workdir"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--levels", ",".join(map(str, args.levels))]
    print(f"round {rnd}: {side} ...", flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, timeout=args.worker_timeout_s)
    if proc.returncode != 0:
        raise SystemExit(f"{side} (round {rnd}) failed with exit code {proc.returncode}: {' '.join(cmd)}")
    out = json.loads(result.read_text())
    warm = [s["step_s"] for s in out["steps"][1:]] or [out["steps"][0]["step_s"]]
    print(f"  {side}: {time.perf_counter() - t:.0f} s, warm steps {warm}, peak RSS {out['peak_rss_after_steps_mib']}"
          f" MiB, load {out['load_avg_end'][0]}", flush=True)
    return out


def summarize(runs: list[dict], batch: int) -> dict:
    warm = [s for r in runs for s in r["steps"][1:]] or [s for r in runs for s in r["steps"]]
    med = {k: round(statistics.median(s[k] for s in warm), 3) for k in ("step_s", "rollout_s", "learner_s")}
    out = dict(warm_steps=len(warm), median_step_s=med["step_s"], median_rollout_s=med["rollout_s"],
               median_learner_s=med["learner_s"], samples_per_s=round(batch / med["step_s"], 3),
               rollout_share=round(med["rollout_s"] / med["step_s"], 3),
               first_step_s=[r["steps"][0]["step_s"] for r in runs],
               peak_rss_after_steps_mib=max(r["peak_rss_after_steps_mib"] for r in runs),
               peak_rss_process_mib=max(r["peak_rss_process_mib"] for r in runs),
               learner_rows=sorted({s["learner_rows"] for r in runs for s in r["steps"]}, key=str))
    for key in ("cuda_max_allocated_mib", "cuda_max_reserved_mib"):
        if key in runs[0]:
            out[key] = max(r[key] for r in runs)
    return out


def plot(result: dict, path: Path) -> None:
    """Per configuration: median step split into rollout and learner (left), peak RSS (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, st = result["summary"], result["settings"]
    names = list(summary)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    roll = [summary[n]["median_rollout_s"] for n in names]
    learn = [summary[n]["median_learner_s"] for n in names]
    a.bar(names, roll, color="tab:blue", label="rollout (generate + reward)")
    a.bar(names, learn, bottom=roll, color="tab:orange", label="learner (forward, backward, step)")
    for i, n in enumerate(names):
        a.text(i, roll[i] + learn[i], f"{summary[n]['samples_per_s']:.2f} samples/s", ha="center", va="bottom",
               fontsize=8)
    a.set_ylabel("median step (s)")
    a.legend(fontsize=8)
    key = "cuda_max_allocated_mib" if "cuda_max_allocated_mib" in summary[names[0]] else "peak_rss_after_steps_mib"
    b.bar(names, [summary[n][key] / 1024 for n in names], color="tab:gray")
    b.set_ylabel("peak GPU memory allocated (GiB)" if key.startswith("cuda") else "peak RSS (GiB)")
    m = result["model"]
    fig.suptitle(f"GRPO, {m['shape']} shape ({m['params'] / 1e6:.0f}M params, vocab {m['tokenizer_vocab']}), "
                 f"{st['prompts_per_step']}x{st['group_size']} x {st['max_new_tokens']} tokens, LoRA r "
                 f"{st['lora_r']}; {result['machine']['cpu']}, {st['threads']} threads, {st['device']} {st['dtype']}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES))
    ap.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary trained locally (the local text "
                    "supports ~11k; Qwen3's is 151,936)")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {','.join(SIDES)}")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per configuration (order rotated)")
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps per process (the first is warm-up)")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--levels", default="2")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32.0)
    ap.add_argument("--lora-targets", default=TARGETS)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bf16"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker-timeout-s", type=float, default=3600)
    ap.add_argument("--workdir", default="runs/lora_grpo_bench")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lora_grpo.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw --out's PNG from its JSON, run nothing")
    # worker mode (one configuration in this process; the orchestrator passes these)
    ap.add_argument("--worker", default="", choices=("", *SIDES), help=argparse.SUPPRESS)
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    sides = args.sides.split(",")
    bad = [s for s in sides if s not in SIDES]
    if bad or not sides:
        ap.error(f"--sides: unknown {bad}; choose from {','.join(SIDES)}")
    args.sides = sides
    if args.dtype == "bf16" and args.device == "cpu":
        ap.error("--dtype bf16 needs --device cuda (our trainers hold the CPU model in float32)")
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        return worker(args)
    if args.plot_only:
        return plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".png"))
    t_all = time.perf_counter()
    info = machine_info(args.threads)
    info.update(load_average_at_start=load_avg(), nice=os.nice(0), device=args.device)
    if args.device.startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["peft"] = __import__("peft").__version__
    except ImportError:
        raise SystemExit("peft is not installed: LoRA on both sides needs it (pip install peft)") from None
    workdir = Path(args.workdir) / args.shape
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = str(workdir)
    args.model_dir = str(workdir / "model")
    t = time.perf_counter()
    model = dict(build_model_folder(args.shape, args.vocab, Path(args.model_dir), args.seed),
                 params_with_qwen3_vocab=params_at_qwen3_vocab(args.shape))
    print(f"model: {args.shape}, {model['params'] / 1e6:.1f}M parameters, vocab {model['tokenizer_vocab']} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    runs = {side: [] for side in args.sides}
    for rnd in range(args.rounds):
        k = rnd % len(args.sides)
        for side in args.sides[k:] + args.sides[:k]:
            runs[side].append(spawn(args, side, rnd, workdir / f"result_{side}_r{rnd}.json"))
    info["load_average_at_end"] = load_avg()
    batch = args.prompts_per_step * args.group_size
    summary = {side: summarize(r, batch) for side, r in runs.items()}
    ratios = {}
    if "ours-lora" in summary and "trl-lora" in summary:
        a, b = summary["ours-lora"], summary["trl-lora"]
        ratios["samples_per_s_ours_lora_over_trl_lora"] = round(a["samples_per_s"] / b["samples_per_s"], 2)
        ratios["rollout_trl_over_ours"] = round(b["median_rollout_s"] / a["median_rollout_s"], 2)
        ratios["learner_trl_over_ours"] = round(b["median_learner_s"] / a["median_learner_s"], 2)
        ratios["peak_rss_ours_lora_over_trl_lora"] = round(a["peak_rss_after_steps_mib"]
                                                           / b["peak_rss_after_steps_mib"], 2)
    if "ours-lora" in summary and "ours-full" in summary:
        a, b = summary["ours-lora"], summary["ours-full"]
        ratios["samples_per_s_lora_over_full"] = round(a["samples_per_s"] / b["samples_per_s"], 2)
        ratios["peak_rss_lora_over_full"] = round(a["peak_rss_after_steps_mib"] / b["peak_rss_after_steps_mib"], 2)
    result = dict(
        command="python " + " ".join([str(Path(__file__).relative_to(ROOT))] + (argv or sys.argv[1:])),
        machine=info,
        model=dict(model, shape=args.shape, note="random weights from a config (no download); tokenizer: byte-level "
                   "BPE trained locally, vocab far below Qwen3's 151,936 (the local text supports ~11k)"),
        settings=dict(sides=args.sides, rounds=args.rounds, steps_per_process=args.steps,
                      prompts_per_step=args.prompts_per_step, group_size=args.group_size, completions_per_step=batch,
                      max_new_tokens=args.max_new_tokens, temperature=1.0, lr=args.lr, lr_schedule="constant",
                      adam_betas=[0.9, 0.99], grad_clip=1.0, clip=[0.2, 0.28], loss="token mean (DAPO)", kl=0.0,
                      lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_targets=args.lora_targets.split(","),
                      lora_dropout=0.0, micro_batch="whole batch", task="arithmetic prompts " + json.dumps(TASK_ARGS)
                      + f" levels {args.levels}, {MODE}", reward="share of ASCII letters in the completion",
                      device=args.device, dtype=args.dtype, threads=args.threads, seed=args.seed,
                      memory="peak RSS = ru_maxrss of each configuration's own fresh process, read after its last "
                             "update (peak_rss_after_steps_mib) and at exit (peak_rss_process_mib: ours includes "
                             "its final save, for LoRA a merged copy of the model)",
                      schedule="rounds of fresh processes, order rotated by one each round; first step of each "
                               "process left out of the medians"),
        summary=summary, ratios=ratios, runs=runs, total_s=round(time.perf_counter() - t_all, 1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'':10}{'step s':>9}{'rollout s':>11}{'learner s':>11}{'samples/s':>11}{'peak RSS MiB':>14}")
    for side, s in summary.items():
        print(f"{side:10}{s['median_step_s']:>9.2f}{s['median_rollout_s']:>11.2f}{s['median_learner_s']:>11.2f}"
              f"{s['samples_per_s']:>11.2f}{s['peak_rss_after_steps_mib']:>14.0f}")
    print(json.dumps(ratios))
    try:
        plot(result, out.with_suffix(".png"))
    except Exception as e:  # the plot is a convenience; the JSON is the result
        print(f"plot skipped: {e}")
    print(f"wrote {out} ({result['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
