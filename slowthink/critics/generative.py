"""Generative step verifier: a causal LM judges each step by how likely it finds the step's own tokens.

No head and no training: the verifier model reads the prompt and the solution's steps (teacher-forced,
tokenized as ``segment.encode_steps`` does for the PRM) and a step scores the probability of its *least
likely* token given everything before it. A wrong digit in a worked solution is a token the verifier
would not have written, so it drags its step's score down; aggregating steps by ``min`` gives the
probability of the least likely token of the whole reasoning, ``prod`` its likelihood.

This is the generative-verifier idea (score with the LM's own next-token distribution rather than a
trained scalar head; Zhang et al. 2024, "Generative Verifiers", train the LM to say "Yes"; we use the
likelihood of the steps themselves, which needs no verification data). It is as good as the model it
reads with: with the policy itself it measures the policy's confidence; with a stronger model of the
same family (e.g. the Math-Shepherd completer of ``benchmarks/prm_quality.py``) it checks the policy's
steps with that model's knowledge. Reports state which model verified and how strong it is alone.

``tokens`` counts every token the verifier has read, like the learned critics.
"""

from __future__ import annotations

import torch

from ..tasks.base import Problem
from ..tokenizer import render_prompt
from .segment import encode_steps, right_pad
from ..chat import Mode

PREFIX = "gen:"  # --verifier gen:MODEL_DIR


class GenerativeVerifier:
    kind = "generative"

    def __init__(self, model, tokenizer, task, mode: str = Mode.SYSTEM2, batch_size: int = 64):
        self.model, self.tokenizer, self.task, self.mode = model.eval(), tokenizer, task, mode
        self.batch_size = batch_size
        self.tokens = 0

    @classmethod
    def load(cls, path: str, task, mode: str = Mode.SYSTEM2, device: str = "cpu") -> GenerativeVerifier:
        from ..models import load_model

        model, tok = load_model(path, device=device)
        return cls(model, tok, task, mode)

    def encode_sample(self, problem: Problem, steps: list[str]) -> tuple[list[int], list[int]]:
        prompt = render_prompt(self.tokenizer, self.task.prompt(problem, self.mode), self.mode)
        encode = lambda text: list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []  # noqa: E731
        ids, ends = encode_steps(encode, prompt, steps)
        return ids, [len(prompt) - 1] + ends  # boundaries: step i is tokens (b[i], b[i+1]]

    @torch.no_grad()
    def _token_probs(self, seqs: list[list[int]]) -> list[torch.Tensor]:
        """Probability of each token given the ones before it (index t: token t; index 0 is undefined)."""
        device = next(self.model.parameters()).device
        ids, attn = right_pad(seqs, self.tokenizer.pad_token_id or 0)
        logits = self.model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        self.tokens += sum(len(s) for s in seqs)
        return [torch.cat([torch.zeros(1), logp[i, :len(s) - 1].exp().cpu()]) for i, s in enumerate(seqs)]

    def score_steps_batch(self, items: list[tuple[Problem, list[str]]]) -> list[list[float]]:
        """Step scores of many (problem, steps) at once; a sample with no step gets []."""
        enc = [self.encode_sample(p, st) for p, st in items]
        keep = [i for i, (_, st) in enumerate(items) if st]
        out: list[list[float]] = [[] for _ in items]
        for lo in range(0, len(keep), self.batch_size):
            chunk = keep[lo:lo + self.batch_size]
            for i, probs in zip(chunk, self._token_probs([enc[i][0] for i in chunk])):
                b = enc[i][1]
                out[i] = [float(probs[b[k] + 1:b[k + 1] + 1].min()) for k in range(len(b) - 1)]
        return out

    def score_steps(self, problem: Problem, steps: list[str]) -> list[float]:
        return self.score_steps_batch([(problem, steps)])[0]
