"""The generative verifier: step scores are the least likely token of each step under a causal LM, read
with the right token boundaries, batched without changing any score, and usable as --verifier gen:DIR."""

from __future__ import annotations

import math

import pytest
import torch

from slowthink.critics.generative import GenerativeVerifier
from slowthink.critics.segment import encode_steps
from slowthink.models import build_model
from slowthink.engine import Engine
from slowthink.search import Policy, make_verifier
from slowthink.search.base import score_completion
from slowthink.tasks import Arithmetic, Problem
from slowthink.tokenizer import render_prompt

pytestmark = pytest.mark.usefixtures("one_thread")
MUL = Arithmetic(op="mul", max_level=2)


def prob(q: str) -> Problem:
    a, b = q.split("*")
    return Problem(key=q, level=len(a), question=q, answer=str(int(a) * int(b)), data={"a": int(a), "b": int(b), "op": "mul"})


@pytest.fixture(scope="module")
def model(tok):
    return build_model("tiny", tok, seed=3).eval()


def reference_scores(model, tok, problem, steps):
    """Independent computation: one unpadded forward per step end, token by token."""
    prompt = render_prompt(tok, MUL.prompt(problem, "system2"), "system2")
    encode = lambda t: list(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    ids, ends = encode_steps(encode, prompt, steps)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    p = torch.softmax(logits.float(), -1)
    out, start = [], len(prompt)
    for end in ends:
        out.append(min(float(p[t - 1, ids[t]]) for t in range(start, end + 1)))
        start = end + 1
    return out


def test_step_scores_are_the_least_likely_token_of_each_step(model, tok):
    v = GenerativeVerifier(model, tok, MUL)
    problem = prob("47*86")
    steps = MUL.solution_lines(problem)
    got = v.score_steps(problem, steps)
    assert len(got) == len(steps)
    assert got == pytest.approx(reference_scores(model, tok, problem, steps), rel=1e-4, abs=1e-6)
    assert all(0.0 < s <= 1.0 for s in got)


def test_batching_and_padding_change_no_score_and_tokens_are_counted(model, tok):
    v = GenerativeVerifier(model, tok, MUL, batch_size=2)
    items = [(prob("47*86"), MUL.solution_lines(prob("47*86"))), (prob("3*4"), MUL.solution_lines(prob("3*4"))),
             (prob("12*34"), []), (prob("99*99"), MUL.solution_lines(prob("99*99"))[:2])]
    batched = v.score_steps_batch(items)
    assert batched[2] == []
    for (p, st), b in zip(items, batched):
        if st:
            assert b == pytest.approx(reference_scores(model, tok, p, st), rel=1e-4, abs=1e-6)
    lengths = [len(v.encode_sample(p, st)[0]) for p, st in items if st]
    assert v.tokens == sum(lengths)


def test_a_step_the_model_would_not_write_scores_lower(tok):
    """A stand-in LM that splits its mass between "7" and the step delimiter: a step of sevens (its
    delimiter included) scores 0.5, one other digit anywhere in it drags the step down to that digit's
    probability."""
    favoured = [tok.convert_tokens_to_ids("7"), tok.convert_tokens_to_ids("\n")]

    class Certain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            logits = torch.full((*input_ids.shape, len(tok)), -20.0)
            logits[..., favoured] = 20.0
            return type("Out", (), {"logits": logits})()

    certain = GenerativeVerifier(Certain(), tok, MUL)
    problem = prob("47*86")
    sevens, mixed = certain.score_steps(problem, ["7777", "7737"])
    assert sevens == pytest.approx(0.5, abs=1e-6)
    assert mixed < 1e-6


def test_gen_prefix_loads_a_generative_verifier_for_the_strategies(model, tok, tmp_path):
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    v = make_verifier(f"gen:{tmp_path / 'm'}", MUL)
    assert isinstance(v, GenerativeVerifier)
    problem = prob("47*86")
    assert v.score_steps(problem, MUL.solution_lines(problem)) == pytest.approx(
        GenerativeVerifier(model, tok, MUL).score_steps(problem, MUL.solution_lines(problem)), rel=1e-5)
    with pytest.raises(ValueError, match="gen:MODEL_DIR"):
        make_verifier(str(tmp_path / "missing"), MUL)
    # Through the search protocol: a completion's score is its steps' scores aggregated (no outcome score).
    policy = Policy(Engine(model, tok), MUL, "system2", max_tokens=8)
    completion = "\n".join(MUL.solution_lines(problem)) + f"\n</think>\n\n{problem.answer}"
    steps = v.score_steps(problem, MUL.solution_lines(problem))
    assert score_completion(v, policy, problem, completion, agg="min") == pytest.approx(min(steps))
    assert score_completion(v, policy, problem, completion, agg="prod") == pytest.approx(math.prod(steps))
