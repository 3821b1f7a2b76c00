"""Tool-response tokens are context, never learned from: out of the loss, the importance ratio and the KL of the
policy-gradient learners (GRPO, PPO), while the learner still feeds them to the model."""

import copy

import pytest
import torch

from slowthink.models import load_model
from slowthink.rl import grpo, ppo
from slowthink.rl.batch import Row, collate_rows, learner_logprobs
from slowthink.rl.grpo import GRPOConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# completion layout: 6 model tokens, 5 tool-response tokens, 4 model tokens
MASK = [1] * 6 + [0] * 5 + [1] * 4
TOOL = [i for i, m in enumerate(MASK) if not m]


def _rows(tok, model, temperature, mask=MASK):
    """Two rows with different advantages and lengths; old log-probs are the model's own (ratio 1), tool
    positions 0.0 (the runner's placeholder)."""
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(5, len(tok), (n,), generator=g).tolist()  # noqa: E731
    rows = [Row(ids(7), ids(len(MASK)), [0.0] * len(MASK), 1.5, True, list(mask)),
            Row(ids(5), ids(9), [0.0] * 9, -0.5, True, None)]
    with torch.no_grad():
        logp = learner_logprobs(model, collate_rows(rows, tok.pad_token_id, "cpu"), temperature)
    for i, r in enumerate(rows):
        r.old_logprobs = [0.0 if r.mask is not None and not r.mask[t] else float(logp[i, t])
                          for t in range(len(r.token_ids))]
    return rows


def _grpo_grad(model, rows, cfg, pad_id, ref=None):
    model.zero_grad(set_to_none=True)
    stats = grpo.learner_update(model, ref, rows, cfg, pad_id)
    return stats, [p.grad.clone() for p in model.parameters()]


def test_collate_marks_the_model_tokens(tok, tiny_model):
    rows = _rows(tok, tiny_model, 1.0)
    b = collate_rows(rows, tok.pad_token_id, "cpu")
    assert b["real"][0].all() and b["act"][0].tolist() == [bool(m) for m in MASK]
    assert b["loss_mask"][0].tolist() == [bool(m) for m in MASK]
    assert b["act"][1].tolist() == b["real"][1].tolist() == [True] * 9 + [False] * 6
    assert rows[0].loss_tokens == sum(MASK) and rows[1].loss_tokens == 9


@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_grpo_ignores_tool_tokens_but_reads_them(sft_model, kl_coef):
    model, tok = load_model(sft_model)
    cfg = GRPOConfig(init=sft_model, max_new_tokens=20, temperature=0.7, kl_coef=kl_coef)
    ref = None
    if kl_coef:  # a reference that differs from the policy, so the KL is not 0 anywhere
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
    rows = _rows(tok, model, cfg.temperature)
    stats, base = _grpo_grad(model, rows, cfg, tok.pad_token_id, ref)
    if not kl_coef:  # ratio 1: the token-mean loss is -sum(A * model tokens) / model tokens
        n0, n1 = sum(MASK), 9
        assert stats["loss"] == pytest.approx(-(1.5 * n0 - 0.5 * n1) / (n0 + n1), abs=1e-5)

    # a tool token's old log-prob made huge changes nothing: it is in no ratio, no loss, no KL
    huge = copy.deepcopy(rows)
    for t in TOOL:
        huge[0].old_logprobs[t] = 1e4
    stats_huge, grads = _grpo_grad(model, huge, cfg, tok.pad_token_id, ref)
    assert stats_huge["loss"] == stats["loss"]
    assert all(torch.equal(a, b) for a, b in zip(base, grads))

    # the same change with the tool tokens counted (no mask) does change the update: the check above can fail
    counted = copy.deepcopy(huge)
    counted[0].mask = None
    _, grads = _grpo_grad(model, counted, cfg, tok.pad_token_id, ref)
    assert not all(torch.equal(a, b) for a, b in zip(base, grads))

    # the tool tokens are still context: a different tool response changes the later tokens' gradient
    other = copy.deepcopy(rows)
    other[0].token_ids[TOOL[0]] = (other[0].token_ids[TOOL[0]] + 1 - 5) % (len(tok) - 5) + 5
    _, grads = _grpo_grad(model, other, cfg, tok.pad_token_id, ref)
    assert not all(torch.equal(a, b) for a, b in zip(base, grads))


def test_ppo_ignores_tool_tokens(sft_model):
    model, tok = load_model(sft_model)
    cfg = ppo.PPOConfig(init=sft_model, max_new_tokens=20, temperature=0.7, group_size=2, prompts_per_step=1)
    critic = ppo.ValueModel.from_pretrained(sft_model)
    torch.nn.init.normal_(critic.head.weight, std=0.1)  # values that differ by position
    base_rows = _rows(tok, model, cfg.temperature)

    def grads(rows):
        rows = [ppo.PPORow(r.prompt_ids, r.token_ids, r.old_logprobs, 0.0, True, r.mask, reward=rw)
                for r, rw in zip(rows, (1.0, 0.0))]
        ppo.score_rollout(rows, critic, None, cfg, tok.pad_token_id)
        model.zero_grad(set_to_none=True)
        critic.zero_grad(set_to_none=True)
        sums = ppo.minibatch_update(model, critic, rows, cfg, tok.pad_token_id)
        return sums, [p.grad.clone() for p in (*model.parameters(), *critic.parameters())]

    sums, base = grads(base_rows)
    huge = copy.deepcopy(base_rows)
    for t in TOOL:
        huge[0].old_logprobs[t] = 1e4
    sums_huge, got = grads(huge)
    assert sums_huge == sums and all(torch.equal(a, b) for a, b in zip(base, got))
    huge[0].mask = None
    _, got = grads(huge)
    assert not all(torch.equal(a, b) for a, b in zip(base, got))
