"""Optimizers the trainers build (AdamW, SGD, and Muon on the hidden matrices with AdamW on the rest), the
learning-rate schedules they follow, and the steps around ``optimizer.step()`` that every trainer takes."""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "sgd")  # the RL trainers' choices
SFT_OPTIMIZERS = ("adamw", "muon")


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T: Muon's quintic Newton-Schulz iteration (coefficients from
    Jordan et al., 2024, chosen for speed, so singular values land in roughly [0.7, 1.2] rather than at 1).
    In fp32: torch's own Muon runs it in bf16, which on a CPU without bf16 matmuls costs seconds per step."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weights: Nesterov momentum, orthogonalised, scaled by 0.2 * sqrt(max(rows, cols)) so the
    update's RMS matches AdamW's (Liu et al., 2025) and AdamW's lr and weight decay carry over."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.95):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D weights only, got a {tuple(p.shape)} tensor")
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                buf = state["momentum"]
                buf.mul_(mu).add_(p.grad)
                update = orthogonalize(p.grad.add(buf, alpha=mu))
                p.mul_(1 - lr * wd).add_(update, alpha=-lr * 0.2 * max(p.shape) ** 0.5)


class MuonAdamW:
    """Muon on the hidden weight matrices, AdamW on the rest (embeddings, norms, biases), stepped together.

    Muon (Jordan et al., 2024) orthogonalises each matrix's momentum, so every direction of a layer moves
    at the same rate; scaled as in Liu et al. (2025), its updates have AdamW's RMS at the same lr, so one lr
    and one schedule drive both. The iteration costs ~4·rows·cols·min(rows, cols)·5 FLOPs per matrix: for
    ``small`` ~10 GFLOP, 0.1–0.18 s on this project's 2-core CPU, ~10% of an SFT step. Looks like one optimizer to a trainer:
    ``param_groups`` (for the lr schedule), ``zero_grad``, ``step``, ``state_dict``/``load_state_dict``."""

    def __init__(self, matrices, rest_groups, lr: float, betas, weight_decay: float, momentum: float = 0.95):
        self.muon = Muon(matrices, lr=lr, weight_decay=weight_decay, momentum=momentum)
        self.adamw = torch.optim.AdamW(rest_groups, lr=lr, betas=tuple(betas))

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("checkpoint's optimizer state is not a Muon+AdamW state (was it written with another "
                             "optimizer setting?)")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def make_optimizer(model, cfg):
    """AdamW (default), SGD with momentum (``cfg.optimizer == "sgd"``), or Muon on the hidden matrices with
    AdamW on the rest (``"muon"``); weight decay on matrices only.

    SGD is there for RL from a converged small model: its loss surface is sharp along the policy
    gradient (one gradient step of norm 0.03 takes held-out pass@1 from 33% to 9%, dev/LOG.md) and
    AdamW's per-coordinate normalisation turns even small, noisy gradients into full-size steps."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    kind = getattr(cfg, "optimizer", "adamw")
    if kind == "muon":
        # The token embedding (tied to the output head in our presets) is a lookup table, not a linear map of
        # the residual stream: it stays on AdamW, as in Muon's own recipe.
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        embeddings.add(id(model.get_output_embeddings().weight))
        matrices = [p for p in decay if id(p) not in embeddings]
        tables = [p for p in decay if id(p) in embeddings]
        return MuonAdamW(matrices, [{"params": tables, "weight_decay": cfg.weight_decay},
                                    {"params": no_decay, "weight_decay": 0.0}],
                         lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def warmup_lr(step: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up, then constant (independent of the run's length, so a longer resumed run matches)."""
    return peak * min(1.0, (step + 1) / warmup_steps) if warmup_steps else peak


def warmup_cosine_lr(step: int, peak: float, warmup_steps: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay from ``peak`` to ``peak * min_ratio`` at step ``total``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def set_lr(opt, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def clip_grad(model, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); returns the norm before clipping."""
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm or float("inf")))
