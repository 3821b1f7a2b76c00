"""Train an ORM or a PRM on the policy's own samples, with labels that no person wrote.

Phases: sample the policy on training problems → label (ORM: the task's answer check; PRM: Math-Shepherd
Monte-Carlo rollouts, ``mc_labels``) → fit the critic with BCE → save ``critic/``.

Departures from Math-Shepherd (Wang et al. 2023) and the ORM of Cobbe et al. (2021):
- The critic is a causal-LM backbone plus a linear head read at each step's delimiter (PRM) or the last
  token (ORM); Math-Shepherd fine-tunes an LLM to predict a special token. The backbone is the policy
  by default (``backbone`` names another model folder).
- The completer that rolls out step prefixes is the policy by default; ``completer`` names a stronger
  model. With a weak policy that matters more than anything else: its own rollouts label a right step
  "bad" whenever it cannot finish the solution (benchmarks/prm_quality.py, dev/LOG.md).
- PRM targets are the soft labels by default (``label: hard`` for the paper's other estimator); the loss
  is the mean BCE over every step of every sample.
- A slice of the training *problems* is kept apart to report validation loss and AUROC against the
  automatic labels while training; ground-truth step labels are never used here.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import AdamWConfig, ModeConfig, RunConfig, SamplingConfig, arg, require
from ..train.optimizers import clip_grad, make_optimizer, set_lr, warmup_cosine_lr
from .mc_labels import Sample, StepLabels
from .metrics import auroc
from .model import KINDS, Critic
from ..chat import Mode


@dataclass
class CriticConfig(AdamWConfig, SamplingConfig, ModeConfig, RunConfig):
    kind: str = arg("prm", "prm (one score per step, Monte-Carlo labels) or orm (one score per completion)")
    out: str = arg("runs/critic", "run folder (config.json, metrics.jsonl, samples.jsonl, critic/)")
    init: str = arg("runs/quickstart/model", "policy model folder: the samples to judge come from it")
    backbone: str = arg("", "model folder the critic starts from (empty: the policy, init)")
    completer: str = arg("", "PRM: model folder that rolls out the step prefixes (Math-Shepherd's completer; "
                             "empty: the policy, init)")
    mode: str = arg(Mode.SYSTEM2, "prompt mode of the policy (a PRM needs system2: steps live in the think block)")
    problems: int = arg(256, "training problems (train split; held-out problems are never sampled)")
    samples_per_problem: int = arg(4, "policy samples per problem")
    rollouts: int = arg(8, "PRM: Monte-Carlo completions per distinct step prefix (Math-Shepherd's N)")
    reuse_samples: bool = arg(True, "PRM: count each sample as a rollout of the prefixes it starts with (only when "
                                    "rollout_temperature equals temperature: else they are other draws)")
    label: str = arg("soft", "PRM target: soft (fraction of rollouts right) or hard (any rollout right)")
    temperature: float = arg(1.0, "policy sampling temperature of the samples")
    rollout_temperature: float = arg(1.0, "PRM: temperature of the Monte-Carlo completions (the completer)")
    max_new_tokens: int = arg(160, "longest sample or rollout")
    epochs: int = arg(4, "passes over the labelled samples")
    batch_size: int = arg(32, "samples per optimizer step")
    lr: float = arg(3e-4, "peak learning rate (AdamW; linear warm-up over a tenth of the steps, cosine decay to lr/10)")
    betas: list[float] = arg([0.9, 0.98])
    val_fraction: float = arg(0.1, "share of training problems kept apart for validation (automatic labels)")

    def __post_init__(self):
        super().__post_init__()
        require(self.kind in KINDS, "kind", f"must be one of {KINDS}")
        require(self.kind == "orm" or self.mode == Mode.SYSTEM2, "mode", "a PRM scores reasoning steps: use system2")
        require(self.problems > 0 and self.samples_per_problem > 0, "problems", "problems and samples must be > 0")
        require(self.rollouts >= 0, "rollouts", "must be >= 0")
        require(self.rollouts > 0 or self.reuse_samples, "rollouts", "0 rollouts needs reuse_samples")
        require(self.rollout_temperature >= 0, "rollout_temperature", "must be >= 0")
        require(self.label in ("soft", "hard"), "label", "must be soft or hard")
        require(self.epochs > 0 and self.batch_size > 0, "epochs", "epochs and batch_size must be > 0")
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")


@dataclass
class CriticExample:
    ids: list[int]
    positions: list[int]
    targets: list[float]
    group: str  # problem key: validation is split by problem


def prm_examples(critic, samples: list[Sample], labels: list[StepLabels], label: str = "soft") -> list[CriticExample]:
    out = []
    for s, lab in zip(samples, labels):
        if not s.steps:
            continue
        ids, ends = critic.encode_sample(s.problem, s.steps)
        targets = lab.soft if label == "soft" else [float(h) for h in lab.hard]
        out.append(CriticExample(ids, ends, list(targets), s.problem.key))
    return out


def orm_examples(critic, samples: list[Sample]) -> list[CriticExample]:
    out = []
    for s in samples:
        ids, last = critic.encode_sample(s.problem, s.completion)
        out.append(CriticExample(ids, last, [float(s.correct)], s.problem.key))
    return out


def split_by_group(examples: list[CriticExample], val_fraction: float, seed: int):
    groups = sorted({e.group for e in examples})
    random.Random(f"critic-val-{seed}").shuffle(groups)
    val = set(groups[:int(round(len(groups) * val_fraction))])
    return [e for e in examples if e.group not in val], [e for e in examples if e.group in val]


def bce_loss(critic: Critic, batch: list[CriticExample]) -> torch.Tensor:
    """Mean binary cross-entropy over every scored position of the batch (soft targets allowed)."""
    logits = torch.cat(critic.logits_at([e.ids for e in batch], [e.positions for e in batch]))
    targets = torch.tensor([t for e in batch for t in e.targets], device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets)


@torch.no_grad()
def evaluate_examples(critic: Critic, examples: list[CriticExample], batch_size: int = 64) -> dict[str, float]:
    """Loss and AUROC (positives: targets > 0, i.e. some rollout reached the answer) on labelled examples."""
    if not examples:
        return {}
    critic.eval()
    losses, scores, ys = [], [], []
    for lo in range(0, len(examples), batch_size):
        batch = examples[lo:lo + batch_size]
        logits = critic.logits_at([e.ids for e in batch], [e.positions for e in batch])
        for e, lg in zip(batch, logits):
            t = torch.tensor(e.targets)
            losses.append(float(F.binary_cross_entropy_with_logits(lg.cpu(), t, reduction="sum")))
            scores += lg.tolist()
            ys += [x > 0 for x in e.targets]
    critic.train()
    return {"loss": sum(losses) / len(ys), "auroc": auroc(scores, ys)}


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over a tenth of the steps, then cosine decay to a tenth of ``peak``."""
    return warmup_cosine_lr(step, peak, max(1, total // 10), total, 0.1)


def fit(critic: Critic, train: list[CriticExample], val: list[CriticExample], cfg: CriticConfig, log=None,
        desc: str | None = None) -> list[dict]:
    """AdamW on the BCE loss for ``cfg.epochs`` epochs; logs train loss and validation loss/AUROC per epoch.
    Returns the logged rows."""
    from tqdm.auto import tqdm

    if not train:
        raise ValueError("no training examples (every sample was empty?)")
    opt = make_optimizer(critic, cfg)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    rng = random.Random(f"critic-fit-{cfg.seed}")
    rows = [{"step": 0, **{f"val_{k}": v for k, v in evaluate_examples(critic, val).items()}}]
    if log is not None:
        log.log(0, **{k: v for k, v in rows[0].items() if k != "step"})
    critic.train()
    step, t0 = 0, time.time()
    bar = tqdm(total=total, desc=desc or f"train {critic.kind}", disable=not cfg.progress, dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        order = list(train)
        rng.shuffle(order)
        losses = []
        for lo in range(0, len(order), cfg.batch_size):
            set_lr(opt, lr_at(step, total, cfg.lr))
            loss = bce_loss(critic, order[lo:lo + cfg.batch_size])
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"non-finite critic loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad(critic, 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        row = {"step": step, "epoch": epoch + 1, "train_loss": sum(losses) / len(losses),
               "elapsed_s": round(time.time() - t0, 1),
               **{f"val_{k}": v for k, v in evaluate_examples(critic, val).items()}}
        rows.append(row)
        if log is not None:
            log.log(step, **{k: v for k, v in row.items() if k != "step"})
    bar.close()
    critic.eval()
    return rows


def training_problems(task, levels: list[int], count: int, seed: int) -> list:
    rng = random.Random(f"critic-problems-{seed}")
    return [task.sample_split(rng, rng.choice(levels), "train") for _ in range(count)]


def collect(cfg: CriticConfig, policy, problems: list, kind: str,
            completer=None) -> tuple[list[Sample], list[StepLabels] | None]:
    """Policy samples of the problems and, for a PRM, their Monte-Carlo step labels (rollouts by
    ``completer``, default the policy)."""
    from ..search.base import Meter
    from .mc_labels import mc_label, sample_solutions

    meter = Meter(tag="critic-data")
    samples = sample_solutions(policy, problems, cfg.samples_per_problem, meter)
    labels = None
    if kind == "prm":
        # the samples are draws of the completer's rollouts only when the completer is the policy, as sampled
        reuse = cfg.reuse_samples and completer is None and cfg.rollout_temperature == cfg.temperature
        labels = mc_label(completer or policy, samples, cfg.rollouts, Meter(tag="critic-rollouts"), reuse,
                          cfg.rollout_temperature, progress=cfg.progress)
    return samples, labels


def make_policy(path: str, task, cfg: CriticConfig):
    from ..engine import Engine
    from ..models import load_model
    from ..search.base import Policy

    model, tok = load_model(path, device=cfg.device)
    return Policy(Engine(model, tok), task, cfg.mode, temperature=cfg.temperature, max_tokens=cfg.max_new_tokens,
                  seed=cfg.seed)


def train(cfg: CriticConfig, task=None) -> Path:
    """``slowthink train prm|orm``: sample, label, fit, save ``out/critic``; returns the run folder."""
    from ..train.loop import TrainingRun, resolve_task
    from ..train.runlog import write_json
    from .model import new_critic

    cfg, task = resolve_task(cfg, task)
    with TrainingRun(cfg, cfg.kind) as run:
        t0 = time.time()
        critic = new_critic(cfg.kind, cfg.backbone or cfg.init, task, cfg.mode, device=cfg.device,
                            meta={"task": cfg.task, "task_args": cfg.task_args, "init": cfg.init, "label": cfg.label,
                                  "backbone": cfg.backbone or cfg.init, "completer": cfg.completer or cfg.init})
        policy = make_policy(cfg.init, task, cfg)  # its own copy of the weights: the critic's backbone trains
        completer = make_policy(cfg.completer, task, cfg) if cfg.completer and cfg.kind == "prm" else None
        samples, labels = collect(cfg, policy, training_problems(task, cfg.levels, cfg.problems, cfg.seed), cfg.kind,
                                  completer)
        write_samples(run.dir / "samples.jsonl", samples, labels)
        examples = prm_examples(critic, samples, labels, cfg.label) if cfg.kind == "prm" else orm_examples(critic, samples)
        tr, val = split_by_group(examples, cfg.val_fraction, cfg.seed)
        log = run.open_log()
        log.log(0, samples=len(samples), sample_pass_rate=sum(s.correct for s in samples) / len(samples),
                train_examples=len(tr), val_examples=len(val), data_s=round(time.time() - t0, 1))
        rows = fit(critic, tr, val, cfg, log)
    critic.save(run.dir / "critic")
    write_json(run.dir / "summary.json", {"kind": cfg.kind, "samples": len(samples), "history": rows,
                                          "time_s": round(time.time() - t0, 1)})
    if cfg.progress:
        print(f"{cfg.kind}: validation " + "  ".join(f"{k}={v:.3f}" for k, v in rows[-1].items()
                                                    if k.startswith("val_") and isinstance(v, float)))
    return run.dir


def write_samples(path: Path, samples: list[Sample], labels: list[StepLabels] | None) -> None:
    import json

    with open(path, "w") as f:
        for i, s in enumerate(samples):
            row = {"key": s.problem.key, "completion": s.completion, "correct": s.correct, "steps": s.steps}
            if labels is not None:
                row.update(soft=labels[i].soft, hard=labels[i].hard, rollouts=labels[i].rollouts)
            f.write(json.dumps(row) + "\n")


@dataclass
class OneKindConfig(CriticConfig):
    """The critic config of a command that trains one kind (``slowthink train prm`` or ``train orm``)."""

    command_kind: ClassVar[str]

    def __post_init__(self):
        other = next(k for k in KINDS if k != self.command_kind)
        require(self.kind == self.command_kind, "kind", f"is {self.command_kind} for `slowthink train "
                f"{self.command_kind}` (use `slowthink train {other}`)")
        super().__post_init__()


@dataclass
class PRMConfig(OneKindConfig):
    kind: str = arg("prm", "critic kind (prm for this command)")
    command_kind: ClassVar[str] = "prm"


@dataclass
class ORMConfig(OneKindConfig):
    kind: str = arg("orm", "critic kind (orm for this command)")
    command_kind: ClassVar[str] = "orm"
