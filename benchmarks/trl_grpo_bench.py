"""Our GRPO trainer vs TRL's ``GRPOTrainer``: samples/s and held-out pass@1 at equal wall time, one run.

    pip install -e '.[bench]'                            # TRL (benchmark-only dependency)
    python benchmarks/trl_grpo_bench.py --threads 1      # ~8.5 min on 2 cores; writes results/trl_grpo.json + .png
    python benchmarks/trl_grpo_bench.py --schedule sequential --order trl,ours --budget-s 120

Both sides start from the same model folder (``--init``; by default a ``tiny`` model trained here with our
SFT on 1x1 and 2x2 digit multiplication, cached under ``runs/trl_grpo_bench/``), do RL on 2x2 digit
multiplication (``--levels 2``; 1x1 is solved already, so its groups would carry no signal) and train on
the same problems in the same order (step s of both sees ``sample_problems(task, seed, s, P, levels)``), with the
same group size, prompts per step, completion limit, temperature 1, learning rate (constant), AdamW betas,
gradient clipping, clip range (0.2 / 0.28), token-mean loss, no KL, one optimizer step per rollout batch
of P x G completions, and the same reward: our task verifier plus the 0.1 format bonus (``RewardFn``).
TRL gets its prompts as conversations rendered by our chat template with ``enable_thinking=True``; the
script checks that its prompt token ids equal ours. TRL runs on the CPU (``use_cpu=True, bf16=False``,
``gradient_checkpointing=False``, no vLLM) with HF ``generate``; we run our engine.

Each side trains for the same wall-time budget (``--budget-s``) on a *training clock* that is paused while
the held-out set is evaluated; a side stops after the step at which the next step would overshoot the
budget by more than half a step. By default the two take turns (``--schedule interleaved``): TRL trains up
to the next evaluation point (every budget/``--evals`` seconds of its clock), then ours up to the same point
on its clock, and so on, so background load on a shared machine hits both alike; ``sequential`` runs one
whole budget after the other. Both are evaluated by the same code (``slowthink.evaluate.heldout_metrics``:
greedy, our engine, same held-out problems, same token limit) at the same clock times and at the end.
What the clock includes: ours, every ``grpo.train`` call (rollout, rewards, learner step, logging, and
per call: run-folder setup, optimizer creation, checkpoint write and reload, final model save); TRL, the
whole ``trainer.train()`` call (its setup, generation, rewards, loss, optimizer, logging). Model loading,
``GRPOTrainer`` construction and evaluation are outside both clocks. Ours runs in chunks of steps through
its own resume (a resumed run equals an uninterrupted one), not with its ``time_budget_s``, so that
evaluation stays off its clock and it can hand the CPU to TRL between chunks.
samples/s = completions generated / training clock. Per step, "rollout" is generation + rewards (+ advantages):
ours ``rollout_s`` as our trainer logs it, TRL's ``_generate_and_score_completions`` timed from outside; the
rest of a step is the learner (forward, backward, optimizer step) and bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slowthink.engine import Engine  # noqa: E402
from slowthink.evaluate import heldout_metrics  # noqa: E402
from slowthink.models import count_parameters, is_model_dir, load_model  # noqa: E402
from slowthink.train.runlog import cpu_model
from slowthink.rl.batch import sample_problems  # noqa: E402
from slowthink.rl.grpo import GRPOConfig  # noqa: E402
from slowthink.rl.rewards import RewardFn  # noqa: E402
from slowthink.train.runlog import read_metrics, rng_state, set_rng_state
from slowthink.tasks import get_task  # noqa: E402
from slowthink.tokenizer import end_of_turn_ids, render_prompt  # noqa: E402

MODE = "system2"
FORMAT_BONUS = 0.1  # GRPOConfig.format_reward default, used by both sides


def load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine_info(threads: int) -> dict:
    cpu = cpu_model()
    info = dict(cpu=cpu, cores=len(os.sched_getaffinity(0)), torch_threads=threads, torch=torch.__version__,
                transformers=transformers.__version__, python=platform.python_version())
    for name in ("trl", "accelerate", "datasets"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


# ----------------------------------------------------------------------------- start checkpoint

def sft_settings(args) -> dict:
    """Our SFT for the default start checkpoint: tiny preset, worked solutions only (System-2)."""
    return dict(task="arithmetic", task_args=task_args(args), levels=args.sft_levels,
                level_weights=[1.0, 3.0] if args.sft_levels == [1, 2] else [], system2_fraction=1.0, model="tiny",
                steps=args.sft_steps, batch_size=64, lr=1e-3, optimizer="adamw", warmup_steps=30, eval_every=50,
                eval_per_level=32, max_new_tokens=64, checkpoint_every=1000, seed=0)


def ensure_init(args) -> tuple[str, dict | None]:
    """``--init`` as given, or a tiny model trained with our SFT (cached: reused while its settings match)."""
    if args.init:
        return args.init, None
    from slowthink.train import sft

    settings = sft_settings(args)
    run = Path(args.workdir) / "sft"
    stamp = run / "bench_settings.json"
    if is_model_dir(run / "model") and stamp.exists() and json.loads(stamp.read_text()) == settings:
        print(f"start checkpoint: cached {run / 'model'}")
        return str(run / "model"), dict(settings, cached=True)
    shutil.rmtree(run, ignore_errors=True)
    print(f"start checkpoint: training {run} with our SFT ({settings['steps']} steps)...", flush=True)
    t = time.perf_counter()
    sft.train(sft.SFTConfig(out=str(run), threads=args.threads, progress=False, **settings))
    stamp.write_text(json.dumps(settings))
    return str(run / "model"), dict(settings, cached=False, train_s=round(time.perf_counter() - t, 1))


def task_args(args) -> dict:
    return {"op": args.op, "cot": args.cot}


# ----------------------------------------------------------------------------- shared evaluation / stop rule

class Evaluator:
    """Greedy held-out System-2 pass@1 with our engine (the same function our trainer calls)."""

    def __init__(self, task, tok, problems, max_tokens: int):
        self.task, self.tok, self.problems, self.max_tokens = task, tok, problems, max_tokens
        self.seconds = 0.0

    def __call__(self, model) -> dict:
        t = time.perf_counter()
        m = heldout_metrics(Engine(model, self.tok), self.task, self.tok, self.problems, (MODE,), self.max_tokens)
        self.seconds += time.perf_counter() - t
        return {k.split("/", 1)[1].replace(f"{MODE}_", ""): round(v, 4) for k, v in m.items()}


class Schedule:
    """Same stop and evaluation rule for both sides, on each side's training clock: stop once the next
    step would end more than half a step past the budget; evaluate at every multiple of ``every`` seconds
    (the first step ending within half a step of it) and at the stop."""

    def __init__(self, budget: float, every: float):
        self.budget, self.every, self.next_eval = budget, every, every

    def should_stop(self, clock: float, step_s: float) -> bool:
        return clock + step_s / 2 > self.budget

    def should_eval(self, clock: float, step_s: float) -> bool:
        if clock + step_s / 2 < self.next_eval:
            return False
        while self.next_eval <= clock + step_s / 2:
            self.next_eval += self.every
        return True


# ----------------------------------------------------------------------------- ours

class OursRun:
    """Our trainer in chunks of steps (through its resume), so that it can stop at a wall-time budget and be
    evaluated, or hand the CPU to TRL, between chunks with its clock stopped."""

    def __init__(self, args, init: str, task, evaluator: Evaluator, sched: Schedule):
        self.args, self.init, self.evaluator, self.sched = args, init, evaluator, sched
        self.run = Path(args.workdir) / "ours"
        shutil.rmtree(self.run, ignore_errors=True)  # else train() would resume an old run
        self.model, self.tok = load_model(init)
        self.clock, self.steps, self.step_s, self.chunks, self.evals = 0.0, 0, None, [], []
        self.done = False

    def advance(self) -> bool:
        """Train until the next evaluation point (evaluated) or the stop; returns True once stopped."""
        from slowthink.rl import grpo

        args, sched = self.args, self.sched
        while not self.done:
            if self.step_s is None:
                k = 2  # calibration chunk
            else:
                target = min(sched.next_eval, sched.budget)
                k = max(1, round((target - self.clock) / self.step_s))
            cfg = grpo.GRPOConfig(out=str(self.run), init=self.init, task="arithmetic", task_args=task_args(args),
                                  levels=args.levels, mode=MODE, steps=self.steps + k,
                                  prompts_per_step=args.prompts_per_step, group_size=args.group_size,
                                  max_new_tokens=args.max_new_tokens, temperature=1.0, lr=args.lr,
                                  format_reward=FORMAT_BONUS, eval_every=0, eval_per_level=0,
                                  checkpoint_every=10**9, seed=args.seed, threads=args.threads, progress=False,
                                  async_rollout=args.async_rollout, sampler_share=args.sampler_share)
            wall0, t = time.time(), time.perf_counter()
            grpo.train(cfg, model=self.model, tok=self.tok)
            dt = time.perf_counter() - t
            self.chunks.append(dict(first_step=self.steps + 1, last_step=self.steps + k, wall_start=wall0,
                                    clock_start=self.clock, s=dt))
            self.steps, self.clock, self.step_s = self.steps + k, self.clock + dt, dt / k
            self.done = sched.should_stop(self.clock, self.step_s)
            if sched.should_eval(self.clock, self.step_s) or self.done:
                self.evals.append(dict(step=self.steps, clock_s=round(self.clock, 2), **self.evaluator(self.model),
                                       load1=load_avg()[0]))
                print(f"  ours  step {self.steps:4d}  clock {self.clock:6.1f}s  held-out pass@1 "
                      f"{self.evals[-1]['pass@1']:.3f}  (load {self.evals[-1]['load1']})", flush=True)
                return self.done
        return True

    def result(self) -> dict:
        args = self.args
        rows = [r for r in read_metrics(self.run) if "reward_mean" in r]
        curve = []
        for r in rows:
            c = next(c for c in self.chunks if c["first_step"] <= r["step"] <= c["last_step"])
            curve.append(dict(step=r["step"], clock_s=round(c["clock_start"] + r["time"] - c["wall_start"], 2),
                              reward_mean=round(r["reward_mean"], 4), pass_rate=round(r["pass_rate"], 4),
                              response_len=round(r["response_len"], 1), step_s=round(r["step_s"], 3),
                              rollout_s=round(r["rollout_s"], 3)))
        per_step = [r["step_s"] for r in rows]
        rollout = statistics.median(r["rollout_s"] for r in rows)
        batch = args.prompts_per_step * args.group_size
        n, clock = self.steps * batch, self.clock
        return dict(steps=self.steps, completions=n, train_clock_s=round(clock, 2),
                    samples_per_s=round(n / clock, 1), median_step_s=round(statistics.median(per_step), 3),
                    samples_per_s_median_step=round(batch / statistics.median(per_step), 1),
                    median_rollout_s=round(rollout, 3),
                    median_rest_of_step_s=round(statistics.median(per_step) - rollout, 3),
                    outside_steps_s=round(clock - sum(per_step), 2), chunks=len(self.chunks), evals=self.evals,
                    final=self.evals[-1], curve=curve,
                    clock_includes="grpo.train() calls: rollout (engine), rewards, learner step, logging; per call "
                                   "also run setup, optimizer creation, checkpoint write/reload and model save")


def run_ours(args, init: str, task, evaluator: Evaluator, sched: Schedule) -> dict:
    ours = OursRun(args, init, task, evaluator, sched)
    while not ours.advance():
        pass
    return ours.result()


# ----------------------------------------------------------------------------- TRL

def run_trl(args, init: str, task, evaluator: Evaluator, sched: Schedule, after_eval=None) -> dict:
    """TRL's trainer for the budget; ``after_eval()`` (if given) runs after each of its evaluations with its
    clock stopped (interleaving: our trainer trains up to the same clock time there)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    P, G = args.prompts_per_step, args.group_size
    tok = AutoTokenizer.from_pretrained(init)
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    max_steps = args.trl_max_steps
    problems = [p for s in range(max_steps) for p in sample_problems(task, args.seed, s, P, args.levels)]
    data = Dataset.from_dict({"prompt": [task.prompt(p, MODE) for p in problems], "pid": list(range(len(problems)))})

    reward_fn, eos = RewardFn(format_bonus=FORMAT_BONUS), set(end_of_turn_ids(tok))
    batches = []  # per generation batch (= per step): reward mean, pass rate, mean length

    def task_reward(prompts, completions, completion_ids, pid, **_):
        out, correct, lens = [], 0, []
        for ids, i in zip(completion_ids, pid, strict=True):
            ids = list(ids)
            body = ids[:-1] if ids and ids[-1] in eos else ids  # as our engine: text without the eos token
            r = reward_fn(task, problems[i], tok.decode(body, skip_special_tokens=False), len(ids), MODE)
            out.append(r.total)
            correct += r.score.correct
            lens.append(len(ids))
        batches.append(dict(reward_mean=sum(out) / len(out), pass_rate=correct / len(out),
                            response_len=sum(lens) / len(lens)))
        return out

    targs = TRLGRPOConfig(
        output_dir=str(Path(args.workdir) / "trl"), use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=P * G, gradient_accumulation_steps=1, num_generations=G,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.99, max_grad_norm=1.0, beta=0.0, num_iterations=1, epsilon=0.2,
        epsilon_high=0.28, loss_type="dapo", scale_rewards="group", gradient_checkpointing=False,
        max_steps=max_steps, logging_steps=1, save_strategy="no", report_to="none", shuffle_dataset=False,
        seed=args.seed, chat_template_kwargs={"enable_thinking": True}, dataloader_num_workers=0,
        disable_tqdm=True, use_vllm=False)

    state = dict(t0=0.0, paused=0.0, last=0.0, steps=[], evals=[])

    def clock() -> float:
        return time.perf_counter() - state["t0"] - state["paused"]

    class BudgetAndEval(TrainerCallback):
        def on_step_end(self, a, st, control, model=None, **kw):
            c = clock()
            step_s, state["last"] = c - state["last"], c
            state["steps"].append((st.global_step, c, step_s))
            stop = sched.should_stop(c, step_s)
            if sched.should_eval(c, step_s) or stop:
                t = time.perf_counter()
                state["evals"].append(dict(step=st.global_step, clock_s=round(c, 2), **evaluator(model),
                                           load1=load_avg()[0]))
                model.train()
                print(f"  TRL   step {st.global_step:4d}  clock {c:6.1f}s  held-out pass@1 "
                      f"{state['evals'][-1]['pass@1']:.3f}  (load {state['evals'][-1]['load1']})", flush=True)
                if after_eval is not None:
                    after_eval()
                state["paused"] += time.perf_counter() - t
            if stop:
                control.should_training_stop = True
            return control

    trainer = GRPOTrainer(model=model, reward_funcs=task_reward, args=targs, train_dataset=data,
                          processing_class=tok, callbacks=[BudgetAndEval()])
    # TRL must see exactly our prompt tokens
    theirs = trainer._tokenize_prompts([data[i]["prompt"] for i in range(P)])[0]
    ours = [render_prompt(tok, task.prompt(p, MODE), MODE) for p in problems[:P]]
    same_prompts = [list(x) for x in theirs] == ours
    if not same_prompts:
        raise SystemExit(f"TRL's prompt ids differ from ours:\n{list(theirs[0])}\n{ours[0]}")
    threads_in_train, rollout_s = [], []
    generate_and_score = trainer._generate_and_score_completions

    def timed_generate_and_score(inputs):  # timing only: generation, rewards, advantages of one step
        t = time.perf_counter()
        out = generate_and_score(inputs)
        rollout_s.append(time.perf_counter() - t)
        return out

    trainer._generate_and_score_completions = timed_generate_and_score

    class Threads(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            threads_in_train.append(torch.get_num_threads())

    trainer.add_callback(Threads())
    state["t0"] = time.perf_counter()
    trainer.train()
    total = clock()
    steps = len(state["steps"])
    if steps >= max_steps:
        print(f"warning: TRL hit max_steps={max_steps} before the budget; raise --trl-max-steps")
    logged = {h["step"]: h for h in trainer.state.log_history if "reward" in h}
    curve = []
    for (step, c, s), b, g in zip(state["steps"], batches, rollout_s, strict=False):  # lengths recorded below
        h = logged.get(step, {})
        curve.append(dict(step=step, clock_s=round(c, 2), reward_mean=round(b["reward_mean"], 4),
                          pass_rate=round(b["pass_rate"], 4), response_len=round(b["response_len"], 1),
                          step_s=round(s, 3), rollout_s=round(g, 3), trl_reward=h.get("reward"),
                          trl_step_time=h.get("step_time")))
    per_step = [s for _, _, s in state["steps"]]
    n = steps * P * G
    return dict(steps=steps, completions=n, train_clock_s=round(total, 2), samples_per_s=round(n / total, 1),
                median_step_s=round(statistics.median(per_step), 3),
                samples_per_s_median_step=round(P * G / statistics.median(per_step), 1),
                median_rollout_s=round(statistics.median(rollout_s), 3),
                median_rest_of_step_s=round(statistics.median(per_step) - statistics.median(rollout_s), 3),
                outside_steps_s=round(total - sum(per_step), 2), prompt_ids_equal_ours=same_prompts,
                torch_threads_in_train=threads_in_train, optimizer=str(targs.optim),
                counts=dict(steps=steps, reward_calls=len(batches), rollouts_timed=len(rollout_s)),
                evals=state["evals"], final=state["evals"][-1], curve=curve,
                clock_includes="trainer.train(): dataloader/optimizer setup, HF generate, rewards, advantages, "
                               "learner forward (log-probs, entropy) and backward, optimizer step, logging "
                               "(evaluation and our turns subtracted)")


# ----------------------------------------------------------------------------- plot

def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    start = result["start"]["pass@1"]
    for name, color in (("ours", "tab:blue"), ("trl", "tab:orange")):
        side = result[name]
        ours = "ours (slowthink GRPO, async rollout)" if result["settings"].get("ours_async_rollout") else \
            "ours (slowthink GRPO)"
        label = ours if name == "ours" else "TRL GRPOTrainer"
        a.plot([0] + [e["clock_s"] for e in side["evals"]], [start] + [e["pass@1"] for e in side["evals"]],
               "o-", color=color, label=label)
        xs, ys = [c["clock_s"] for c in side["curve"]], [c["reward_mean"] for c in side["curve"]]
        w = max(1, len(ys) // 25)
        smooth = [sum(ys[max(0, i - w + 1):i + 1]) / len(ys[max(0, i - w + 1):i + 1]) for i in range(len(ys))]
        b.plot(xs, smooth, color=color, label=f"{label} ({side['steps']} steps)")
    a.set_xlabel("training wall time (s, evaluation excluded)")
    a.set_ylabel("held-out System-2 pass@1 (greedy)")
    a.set_ylim(0, 1)
    a.grid(alpha=0.3)
    a.legend()
    b.set_xlabel("training wall time (s)")
    b.set_ylabel("rollout reward mean (moving average)")
    b.grid(alpha=0.3)
    b.legend()
    s = result["settings"]
    fig.suptitle(f"GRPO, {s['model_params']:,}-param model, arithmetic {s['task_args']} levels {s['levels']}, "
                 f"{s['prompts_per_step']}x{s['group_size']} per step, lr {s['lr']}, "
                 f"{s['budget_s']:.0f} s each; {result['machine']['cpu']}, "
                 f"{result['machine']['torch_threads']} threads",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", default="", help="model folder to start from (default: train/cache a tiny SFT model)")
    ap.add_argument("--op", default="mul", choices=("mul", "add"))
    ap.add_argument("--cot", default="cells")
    ap.add_argument("--levels", default="2", help="RL training and held-out levels, comma-separated")
    ap.add_argument("--sft-levels", default="1,2", help="SFT levels for the start checkpoint (no --init)")
    ap.add_argument("--sft-steps", type=int, default=400, help="SFT steps for the start checkpoint (no --init)")
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64, help="completion limit (2x2 worked solutions: <= 56)")
    ap.add_argument("--lr", type=float, default=2e-5, help="3e-5 and up made our held-out pass@1 fall here")
    ap.add_argument("--budget-s", type=float, default=240.0, help="training wall seconds per side")
    ap.add_argument("--evals", type=int, default=6, help="held-out evaluations per side (evenly in time)")
    ap.add_argument("--eval-per-level", type=int, default=64, help="held-out problems per level (level 1 has ~11)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--async-rollout", action="store_true",
                    help="ours samples step s+1 in a background thread while learning on step s (GRPOConfig."
                         "async_rollout: one step off-policy, --threads split between the two); TRL as always")
    ap.add_argument("--sampler-share", type=float, default=GRPOConfig.sampler_share,
                    help="with --async-rollout: share of our learner's rows that the sampler's thread computes once "
                         "its rollout is done (GRPOConfig.sampler_share)")
    ap.add_argument("--schedule", default="interleaved", choices=("interleaved", "sequential"),
                    help="interleaved: the two take turns at every evaluation point (same background load for "
                         "both); sequential: one whole run, then the other (--order)")
    ap.add_argument("--order", default="ours,trl", choices=("ours,trl", "trl,ours"), help="for --schedule sequential")
    ap.add_argument("--trl-max-steps", type=int, default=0, help="dataset size in steps for TRL (0: from budget)")
    ap.add_argument("--workdir", default="runs/trl_grpo_bench")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "trl_grpo.json"))
    args = ap.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    args.sft_levels = [int(x) for x in args.sft_levels.split(",")]
    args.trl_max_steps = args.trl_max_steps or max(50, int(args.budget_s * 4))
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    info = machine_info(args.threads)
    info["load_average_at_start"] = load_avg()

    init, sft_info = ensure_init(args)
    task = get_task("arithmetic", **task_args(args))
    model, tok = load_model(init)
    heldout = task.heldout_set(args.eval_per_level, tuple(args.levels))
    evaluator = Evaluator(task, tok, heldout, args.max_new_tokens)
    start = evaluator(model)
    params = count_parameters(model)
    del model
    print(f"start: held-out {MODE} pass@1 {start['pass@1']:.3f} ({len(heldout)} problems)", flush=True)

    info["load_average_before_runs"] = load_avg()
    every = args.budget_s / max(1, args.evals)
    if args.schedule == "interleaved":
        print(f"interleaved: TRL and ours take turns every {every:.0f} s of training clock, "
              f"{args.budget_s:.0f} s each", flush=True)
        runner = OursRun(args, init, task, evaluator, Schedule(args.budget_s, every))

        def ours_turn():  # our resume restores the RNG state of its checkpoint: give TRL its own back
            state, threads = rng_state(), torch.get_num_threads()
            runner.advance()
            set_rng_state(state)
            torch.set_num_threads(threads)  # and its thread count (our trainer sets its own from its config)

        trl = run_trl(args, init, task, evaluator, Schedule(args.budget_s, every), after_eval=ours_turn)
        while not runner.advance():
            pass
        sides = {"ours": runner.result(), "trl": trl}
    else:
        sides, runners = {}, {"ours": run_ours, "trl": run_trl}
        for name in args.order.split(","):
            print(f"{name}: {args.budget_s:.0f} s of training", flush=True)
            sides[name] = runners[name](args, init, task, evaluator, Schedule(args.budget_s, every))
            info[f"load_average_after_{name}"] = load_avg()
    info["load_average_at_end"] = load_avg()

    ours, trl = sides["ours"], sides["trl"]
    result = dict(
        machine=info,
        settings=dict(init=init, model_params=params, task="arithmetic", task_args=task_args(args), levels=args.levels,
                      mode=MODE, prompts_per_step=args.prompts_per_step, group_size=args.group_size,
                      completions_per_step=args.prompts_per_step * args.group_size,
                      max_new_tokens=args.max_new_tokens, temperature=1.0, lr=args.lr, lr_schedule="constant",
                      adam_betas=[0.9, 0.99], grad_clip=1.0, clip=[0.2, 0.28], loss="token mean (DAPO)", kl=0.0,
                      format_bonus=FORMAT_BONUS, budget_s=args.budget_s, heldout_problems=len(heldout),
                      eval_per_level=args.eval_per_level, schedule=args.schedule, ours_async_rollout=args.async_rollout,
                      ours_sampler_share=args.sampler_share,
                      order=args.order if args.schedule == "sequential" else "turns, TRL first in each",
                      seed=args.seed),
        sft=sft_info,
        start=start,
        ours=ours,
        trl=trl,
        ratio=dict(samples_per_s=round(ours["samples_per_s"] / trl["samples_per_s"], 2),
                   samples_per_s_median_step=round(ours["samples_per_s_median_step"]
                                                   / trl["samples_per_s_median_step"], 2),
                   steps=round(ours["steps"] / trl["steps"], 2),
                   # async: our "rollout" is the wait for a batch sampled during the previous step, not its cost
                   rollout_trl_over_ours=None if args.async_rollout else
                   round(trl["median_rollout_s"] / ours["median_rollout_s"], 2),
                   rest_of_step_trl_over_ours=round(trl["median_rest_of_step_s"] / ours["median_rest_of_step_s"], 2),
                   pass_at_1_final_ours_minus_trl=round(ours["final"]["pass@1"] - trl["final"]["pass@1"], 4)),
        evaluation_s=round(evaluator.seconds, 1),
        total_s=round(time.perf_counter() - t_all, 1),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    png = out.with_suffix(".png")
    try:
        plot(result, png)
    except Exception as e:  # the plot is a convenience; the JSON is the result
        print(f"plot skipped: {e}")
        png = None

    print(f"{info['cpu']}, {info['cores']} cores, {args.threads} threads, torch {info['torch']}, "
          f"transformers {info['transformers']}, trl {info['trl']}, load {info['load_average_at_start']} -> "
          f"{info['load_average_at_end']}")
    print(f"start pass@1 {start['pass@1']:.3f}; budget {args.budget_s:.0f} s of training each")
    print(f"{'':6}{'steps':>7}{'clock s':>9}{'samples/s':>11}{'median step s':>15}{'rollout s':>11}"
          f"{'final pass@1':>14}")
    for name, s in (("ours", ours), ("TRL", trl)):
        print(f"{name:6}{s['steps']:>7}{s['train_clock_s']:>9.1f}{s['samples_per_s']:>11.1f}"
              f"{s['median_step_s']:>15.3f}{s['median_rollout_s']:>11.3f}{s['final']['pass@1']:>14.3f}")
    print(f"ours/TRL samples/s: {result['ratio']['samples_per_s']:.2f}x (median step: "
          f"{result['ratio']['samples_per_s_median_step']:.2f}x); total {result['total_s']:.0f} s")
    print(f"wrote {out}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
