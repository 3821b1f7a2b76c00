"""Learned critics: a causal-LM backbone (initialised from the policy) and a linear scalar head.

* :class:`ProcessRewardModel` (PRM) reads one score per step, at the last token of each step (its
  delimiter, see ``segment``), and implements ``score_steps(problem, steps)``.
* :class:`OutcomeRewardModel` (ORM) reads one score at the last token of a completion and implements
  ``score(problem, completion)``.

Each exposes only its own method, so the search strategies (best-of-N, weighted majority, beam) pick the
right one with no switch; scores are sigmoid probabilities in [0, 1]. ``tokens`` counts every token the
critic has read. A saved critic is a folder: ``backbone/`` (``save_pretrained``, loads with
``AutoModelForCausalLM``, with its tokenizer), ``head.safetensors`` and ``critic.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..tasks.base import Problem
from ..tokenizer import render_prompt
from .segment import encode_steps, right_pad
from ..chat import Mode

CRITIC_FILE = "critic.json"
KINDS = ("prm", "orm")


def is_critic_dir(path) -> bool:
    return (Path(path) / CRITIC_FILE).is_file()


class Critic(nn.Module):
    kind = "critic"

    def __init__(self, backbone, tokenizer, task, mode: str = Mode.SYSTEM2, meta: dict | None = None):
        super().__init__()
        self.backbone, self.tokenizer, self.task, self.mode = backbone, tokenizer, task, mode
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)  # p = 0.5 everywhere at first
        nn.init.zeros_(self.head.bias)
        self.meta = dict(meta or {})
        self.tokens = 0

    # -- encoding ---------------------------------------------------------------------------------
    def prompt_ids(self, problem: Problem) -> list[int]:
        return render_prompt(self.tokenizer, self.task.prompt(problem, self.mode), self.mode)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    # -- forward ----------------------------------------------------------------------------------
    def logits_at(self, seqs: list[list[int]], positions: list[list[int]]) -> list[torch.Tensor]:
        """Head logits at the given positions of each sequence (one right-padded forward)."""
        device = self.head.weight.device
        ids, attn = right_pad(seqs, self.tokenizer.pad_token_id or 0)
        base = getattr(self.backbone, self.backbone.base_model_prefix)
        hidden = base(input_ids=ids.to(device), attention_mask=attn.to(device)).last_hidden_state
        self.tokens += sum(len(s) for s in seqs)
        return [self.head(hidden[i, pos].float()).squeeze(-1) for i, pos in enumerate(positions)]

    @torch.no_grad()
    def _probs(self, seqs: list[list[int]], positions: list[list[int]], batch_size: int = 64) -> list[list[float]]:
        was = self.training
        self.eval()
        out = []
        try:
            for lo in range(0, len(seqs), batch_size):
                out += [torch.sigmoid(x).tolist() for x in self.logits_at(seqs[lo:lo + batch_size],
                                                                           positions[lo:lo + batch_size])]
        finally:
            self.train(was)
        return out

    # -- save / load ------------------------------------------------------------------------------
    def save(self, path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path / "backbone", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "backbone")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(path / "head.safetensors"))
        (path / CRITIC_FILE).write_text(json.dumps({"kind": self.kind, "mode": self.mode, **self.meta}, indent=2))
        return path


class ProcessRewardModel(Critic):
    kind = "prm"

    def encode_sample(self, problem: Problem, steps: list[str]) -> tuple[list[int], list[int]]:
        return encode_steps(self.encode, self.prompt_ids(problem), steps)

    def score_steps_batch(self, items: list[tuple[Problem, list[str]]]) -> list[list[float]]:
        """Step scores of many (problem, steps) at once; a sample with no step gets []."""
        enc = [self.encode_sample(p, st) for p, st in items]
        keep = [i for i, (_, st) in enumerate(items) if st]
        probs = self._probs([enc[i][0] for i in keep], [enc[i][1] for i in keep])
        out: list[list[float]] = [[] for _ in items]
        for i, pr in zip(keep, probs):
            out[i] = pr
        return out

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.score_steps_batch([(problem, steps)])[0]


class OutcomeRewardModel(Critic):
    kind = "orm"

    def encode_sample(self, problem: Problem, completion: str) -> tuple[list[int], list[int]]:
        ids = self.prompt_ids(problem) + self.encode(completion)
        return ids, [len(ids) - 1]

    def score_batch(self, items: list[tuple[Problem, str]]) -> list[float]:
        enc = [self.encode_sample(p, c) for p, c in items]
        return [pr[0] for pr in self._probs([e[0] for e in enc], [e[1] for e in enc])]

    def score(self, problem: Problem, completion: str) -> float:
        return self.score_batch([(problem, completion)])[0]


CLASSES = {"prm": ProcessRewardModel, "orm": OutcomeRewardModel}


def new_critic(kind: str, init: str, task, mode: str = Mode.SYSTEM2, meta: dict | None = None,
               device: str = "cpu") -> Critic:
    """A fresh critic whose backbone is the model in folder ``init`` (the policy)."""
    from ..models import load_model

    if kind not in CLASSES:
        raise ValueError(f"critic kind must be one of {KINDS}, got {kind!r}")
    backbone, tok = load_model(init, device=device)
    return CLASSES[kind](backbone, tok, task, mode, meta).to(device)


def load_critic(path, task=None, device: str = "cpu") -> Critic:
    """A critic saved by ``Critic.save``; ``task`` defaults to the one it was trained on."""
    from safetensors.torch import load_file

    from ..models import load_model
    from ..tasks import get_task

    path = Path(path)
    if not is_critic_dir(path):
        raise FileNotFoundError(f"{path}: not a saved critic (no {CRITIC_FILE}); train one with "
                                "`slowthink train prm` or `slowthink train orm`")
    meta = json.loads((path / CRITIC_FILE).read_text())
    kind, mode = meta.pop("kind"), meta.pop("mode")
    if kind not in CLASSES:
        raise ValueError(f"{path}: unknown critic kind {kind!r}")
    if task is None:
        task = get_task(meta.get("task", "arithmetic"), **meta.get("task_args", {}))
    backbone, tok = load_model(path / "backbone", device=device)
    critic = CLASSES[kind](backbone, tok, task, mode, meta)
    critic.head.load_state_dict(load_file(str(path / "head.safetensors")))
    return critic.to(device).eval()
