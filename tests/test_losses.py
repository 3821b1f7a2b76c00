"""RL math against hand-computed examples (the arithmetic is written out next to each expected value)."""

import math

import pytest
import torch

from slowthink.rl.losses import (approx_kl, clip_fraction, clipped_pg_token_losses, clipped_value_loss,
                                 constant_normalizer_loss, dpo_loss, entropy_from_logits, gae,
                                 group_advantages, kl_k1, kl_k3, masked_mean, masked_whiten,
                                 policy_ratio_terms, rloo_advantages, sequence_mean_loss, token_logprobs,
                                 token_mean_loss)

LN2 = 0.6931471805599453


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual.double(), torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


def test_masked_mean_and_whiten_ignore_padding():
    x = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    close(masked_mean(x, mask), (1 + 2 + 3) / 3)  # = 2
    close(masked_mean(x, mask, dim=-1), [1.5, 3.0])
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)  # nothing valid: 0, not NaN
    # valid values 1, 2, 3: mean 2, population var (1 + 0 + 1) / 3 = 2/3, std 0.816497
    close(masked_whiten(x, mask, eps=0.0), [[-1.224745, 0.0, 0.0], [1.224745, 0.0, 0.0]])
    close(masked_whiten(x, mask, shift_mean=False, eps=0.0), [[0.775255, 2.0, 0.0], [3.224745, 0.0, 0.0]])


def test_group_advantages_population_std_and_dr_grpo():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    # group 0: mean .5, population std sqrt(4 * .25 / 4) = .5 -> (r - .5) / .5 = [1, -1, -1, 1]
    # group 1: mean .25, population var (.5625 + 3 * .0625) / 4 = .1875, std .433013
    #          -> .75 / .433013 = 1.732051, -.25 / .433013 = -.577350
    close(group_advantages(rewards, eps=0.0), [[1, -1, -1, 1], [1.732051, -0.577350, -0.577350, -0.577350]])
    close(group_advantages(rewards), [[1, -1, -1, 1], [1.732051, -0.577350, -0.577350, -0.577350]], tol=1e-4)
    # Dr. GRPO: no std division, just r - mean
    close(group_advantages(rewards, scale_by_std=False), [[0.5, -0.5, -0.5, 0.5], [0.75, -0.25, -0.25, -0.25]])


def test_group_advantages_equal_rewards_are_exactly_zero():
    rewards = torch.tensor([[0.3, 0.3, 0.3], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    for scale in (True, False):
        adv = group_advantages(rewards, scale_by_std=scale, eps=0.0)
        assert not adv.isnan().any()
        assert (adv == 0).all()
    close(group_advantages(torch.tensor([[5.0]])), [[0.0]])  # a group of one: nothing to compare to
    close(group_advantages(torch.tensor([[1, 0]])), [[1, -1]], tol=1e-4)  # integer rewards: mean .5, std .5


def test_rloo_advantages_leave_one_out():
    # [1, 0, 0]: 1 - mean(0, 0) = 1;  0 - mean(1, 0) = -.5;  0 - mean(1, 0) = -.5
    # [2, 4]:    2 - 4 = -2;  4 - 2 = 2
    close(rloo_advantages(torch.tensor([[1.0, 0.0, 0.0]])), [[1.0, -0.5, -0.5]])
    close(rloo_advantages(torch.tensor([[2.0, 4.0]])), [[-2.0, 2.0]])
    close(rloo_advantages(torch.tensor([[0.7, 0.7, 0.7]])), [[0.0, 0.0, 0.0]])
    # exactly 0, not the 6e-8 that (sum - r) / (n - 1) - r leaves here: the learner skips exact zeros
    assert rloo_advantages(torch.tensor([[0.7, 0.7, 0.7]])).eq(0).all()
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([[1.0]]))


def test_gae_three_steps_ragged_and_bootstrap():
    g, lam = 0.9, 0.8  # gamma * lam = .72
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0], [3.0, 3.0, 3.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, float("nan")], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=g, lam=lam)
    # row 0 (terminal at t=2): d2 = 1 - .7 = .3;  d1 = .9 * .7 - .6 = .03;  d0 = .9 * .6 - .5 = .04
    #   A2 = .3;  A1 = .03 + .72 * .3 = .246;  A0 = .04 + .72 * .246 = .21712
    #   returns = A + V = .21712 + .5, .246 + .6, .3 + .7 = .71712, .846, 1.0
    # row 1 (ends at t=1, padding at t=2 ignored): d1 = 1 - .6 = .4;  d0 = .04
    #   A1 = .4;  A0 = .04 + .72 * .4 = .328;  returns .828, 1.0
    # row 2: fully masked -> zeros
    close(adv, [[0.21712, 0.246, 0.3], [0.328, 0.4, 0.0], [0.0, 0.0, 0.0]])
    close(ret, [[0.71712, 0.846, 1.0], [0.828, 1.0, 0.0], [0.0, 0.0, 0.0]])

    # truncated row with a bootstrap value V3 = 1: d2 = .9 * 1 - .7 = .2;  d1 = .03;  d0 = .04
    #   A2 = .2;  A1 = .03 + .72 * .2 = .174;  A0 = .04 + .72 * .174 = .16528
    # the second row ends at t=0, so its (NaN) bootstrap is never used: A0 = 2 - .5 = 1.5
    adv, ret = gae(torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]),
                   torch.tensor([[0.5, 0.6, 0.7, 1.0], [0.5, 0.0, 0.0, float("nan")]]),
                   torch.tensor([[1, 1, 1], [1, 0, 0]]), gamma=g, lam=lam)
    close(adv, [[0.16528, 0.174, 0.2], [1.5, 0.0, 0.0]])
    close(ret, [[0.66528, 0.774, 0.9], [2.0, 0.0, 0.0]])


def test_gae_rejects_bad_shapes_and_holes():
    r = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="values must be"):
        gae(r, torch.zeros(1, 5), torch.ones(1, 3))
    with pytest.raises(ValueError, match="ones then zeros"):
        gae(r, torch.zeros(1, 3), torch.tensor([[1, 0, 1]]))


def test_policy_ratio_terms():
    log_ratio, ratio = policy_ratio_terms(torch.tensor([0.0, LN2]), torch.tensor([LN2, LN2]))
    close(log_ratio, [-LN2, 0.0])
    close(ratio, [0.5, 1.0])  # exp(-ln 2) = .5


def _logs(ratios):
    return torch.log(torch.tensor(ratios, dtype=torch.float64))


def test_clipped_pg_losses_and_gradients_with_clip_higher():
    eps_low, eps_high = 0.2, 0.28  # ratio band [.8, 1.28]
    logp_new = _logs([[1.5, 0.5, 1.1], [1.5, 0.5, 0.9]]).requires_grad_()
    logp_old = torch.zeros(2, 3, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)  # one advantage per sequence
    loss = clipped_pg_token_losses(logp_new, logp_old, adv, eps_low, eps_high)
    # loss = max(-r*A, -clip(r)*A)
    # A=+1: r=1.5 -> max(-1.5, -1.28) = -1.28 (clipped);  r=.5 -> max(-.5, -.8) = -.5;  r=1.1 -> -1.1
    # A=-1: r=1.5 -> max(1.5, 1.28) = 1.5;  r=.5 -> max(.5, .8) = .8 (clipped);  r=.9 -> .9
    close(loss, [[-1.28, -0.5, -1.1], [1.5, 0.8, 0.9]])
    loss.sum().backward()
    # d(-r*A)/d logp = -r*A where unclipped; 0 where the clipped branch is taken
    close(logp_new.grad, [[0.0, -0.5, -1.1], [1.5, 0.0, 0.9]])
    # per-token advantages [B, T] give the same numbers as broadcast [B]
    per_token = clipped_pg_token_losses(logp_new.detach(), logp_old, adv[:, None].expand(2, 3), eps_low, eps_high)
    close(per_token, loss.detach())
    # clip-higher: r = 1.25, A = +1 is inside [.8, 1.28] (-1.25) but clipped by a symmetric .2 (-1.2)
    r = _logs([[1.25]])
    close(clipped_pg_token_losses(r, torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.28), [[-1.25]])
    close(clipped_pg_token_losses(r, torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.2), [[-1.2]])


def test_clip_fraction_and_approx_kl():
    logp_new = _logs([[1.5, 0.5, 1.1], [1.5, 0.5, 0.9]])
    logp_old = torch.zeros(2, 3, dtype=torch.float64)
    # outside [.8, 1.28]: 1.5, .5, 1.5, .5 -> 4 of 6; with (1, 1) masked: 1.5, .5, 1.5 of 5 -> .6
    close(clip_fraction(logp_new, logp_old, torch.ones(2, 3), 0.2, 0.28), 4 / 6)
    close(clip_fraction(logp_new, logp_old, torch.tensor([[1, 1, 1], [1, 0, 1]]), 0.2, 0.28), 0.6)
    # (r - 1) - ln r:  r=2 -> 1 - ln 2 = .306853;  r=.5 -> -.5 + ln 2 = .193147;  mean = .25
    # the padded third column (r = 9) is ignored
    kl = approx_kl(_logs([[2.0, 0.5, 9.0]]).requires_grad_(), torch.zeros(1, 3), torch.tensor([[1, 1, 0]]))
    close(kl, 0.25)
    assert not kl.requires_grad


def test_aggregations_differ_on_ragged_mask():
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    close(sequence_mean_loss(losses, mask), (2.0 + 4.0) / 2)  # seq means 2 and 4 -> 3
    close(token_mean_loss(losses, mask), (1 + 2 + 3 + 4) / 4)  # 2.5
    close(constant_normalizer_loss(losses, mask, max_tokens=4), 10 / (2 * 4))  # 1.25
    # a fully masked row does not count as a sequence; an empty batch gives 0, not NaN
    padded = torch.cat([losses, torch.full((1, 3), 7.0)])
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=mask.dtype)])
    close(sequence_mean_loss(padded, padded_mask), 3.0)
    close(token_mean_loss(padded, padded_mask), 2.5)
    for agg in (sequence_mean_loss, token_mean_loss):
        close(agg(losses, torch.zeros_like(mask)), 0.0)
    close(constant_normalizer_loss(losses, torch.zeros_like(mask), max_tokens=4), 0.0)
    # explicit normalisers for micro-batches: 6 / 4 sequences, 10 / 8 tokens, 10 / (4 * 4)
    close(sequence_mean_loss(losses, mask, num_sequences=4), 1.5)
    close(token_mean_loss(losses, mask, total_tokens=8), 1.25)
    close(constant_normalizer_loss(losses, mask, max_tokens=4, num_sequences=4), 0.625)


def test_aggregation_gradients_weight_tokens_as_documented():
    losses = torch.ones(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    sequence_mean_loss(losses, mask).backward()
    # 1/2 per sequence spread over its tokens: 1/6 each on row 0, 1/2 on row 1's only token
    close(losses.grad, [[1 / 6, 1 / 6, 1 / 6], [0.5, 0.0, 0.0]])
    losses.grad = None
    token_mean_loss(losses, mask).backward()
    close(losses.grad, [[0.25, 0.25, 0.25], [0.25, 0.0, 0.0]])


def test_kl_estimators():
    # policy p=.5, ref .25:  k1 = ln 2 = .693147;  k3: d = ln .5, e^d - d - 1 = .5 + .693147 - 1 = .193147
    # policy p=.25, ref .5:  k1 = -.693147 (< 0); k3: d = ln 2, 2 - .693147 - 1 = .306853 (>= 0)
    logp = torch.tensor([math.log(0.5), math.log(0.25)], requires_grad=True)
    ref = torch.tensor([math.log(0.25), math.log(0.5)])
    close(kl_k1(logp, ref), [LN2, -LN2])
    close(kl_k3(logp, ref), [0.193147, 0.306853])
    # k3 is zero with zero gradient where policy = reference: d/dlogp = 1 - exp(ref - logp) = 0
    same = torch.tensor([-1.3], requires_grad=True)
    k3 = kl_k3(same, torch.tensor([-1.3]))
    k3.sum().backward()
    close(k3, [0.0])
    close(same.grad, [0.0])


def test_clipped_value_loss_takes_larger_branch():
    values = torch.tensor([[0.5, 0.1, 9.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss = clipped_value_loss(values, old, returns, mask, clip=0.2)
    # token 0: unclipped (.5 - 1)^2 = .25;  clipped V = 0 + clip(.5, ±.2) = .2 -> (.2 - 1)^2 = .64 -> .64
    # token 1: inside the clip, both (.1 - 1)^2 = .81
    # loss = .5 * mean(.64, .81) = .3625;  padded token 2 ignored
    close(loss, 0.3625)
    loss.backward()
    # token 0 takes the clipped branch (constant in V): grad 0; token 1: .5 * (1/2) * 2 * (.1 - 1) = -.45
    close(values.grad, [[0.0, -0.45, 0.0]])


def test_dpo_loss_values_rewards_and_gradient():
    z = torch.zeros(2)
    loss, chosen, rejected = dpo_loss(z.clone().requires_grad_(), z, z, z, beta=0.1)
    close(loss, LN2)  # -log sigmoid(0) = log 2
    pc = torch.tensor([-1.0], requires_grad=True)
    loss, chosen, rejected = dpo_loss(pc, torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-1.0]), beta=0.1)
    # chosen: -1 - (-2) = 1 -> reward .1;  rejected: -3 - (-1) = -2 -> reward -.2;  beta * margin = .3
    # loss = log(1 + e^-.3) = log(1 + .740818) = .554355
    close(loss, 0.554355)
    close(chosen, [0.1])
    close(rejected, [-0.2])
    loss.backward()
    # d loss / d pc = -beta * sigmoid(-.3) = -.1 * .425557 = -.0425557
    close(pc.grad, [-0.0425557])


def test_token_logprobs_matches_manual_and_is_stable():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [100.0, 100.0, -100.0]]], requires_grad=True)
    tokens = torch.tensor([[2, 0]])
    lp = token_logprobs(logits, tokens)
    # 3 - ln(e + e^2 + e^3) = 3 - ln(2.718282 + 7.389056 + 20.085537) = 3 - ln 30.192875 = -.407606
    # two equal large logits (exp(100) overflows float32): -ln 2
    close(lp, [[-0.407606, -LN2]])
    lp[0, 1].backward()
    # d/dlogits = onehot - softmax = [1 - .5, 0 - .5, 0]
    close(logits.grad[0, 1], [0.5, -0.5, 0.0])
    close(token_logprobs(logits.detach().bfloat16(), tokens), [[-0.407606, -LN2]], tol=2e-2)
    assert token_logprobs(logits.detach().bfloat16(), tokens).dtype == torch.float32


def test_entropy_from_logits():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    # uniform over 2: ln 2;  p = [.25, .75]: .25 ln 4 + .75 ln(4/3) = .346574 + .215762 = .562335
    close(entropy_from_logits(logits), [LN2, 0.562335])
    # a filtered (-inf) logit contributes nothing: still ln 2, no NaN
    close(entropy_from_logits(torch.tensor([0.0, float("-inf"), 0.0])), LN2)
