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


# ----------------------------------------------------------------------------- GSPO, CISPO, dual clip, clamps

def test_gspo_sequence_ratio_is_length_normalised_and_clipped_per_sequence():
    from slowthink.rl.losses import gspo_token_losses

    old = torch.zeros(2, 2)
    # row 0: log-ratios .1 and .3 -> s = exp(mean) = exp(.2) = 1.221403, A = 1, clip [.8, 1.28] leaves it:
    #        loss -1.221403 on both tokens; d loss / d logp_t = -s * A / 2 = -.610701
    # row 1: one real token, log-ratio ln 2 (padding NaN never reaches the ratio) -> s = 2, A = -1:
    #        -min(2 * -1, 1.28 * -1) = 2; with dual_clip 1.5 the loss is capped at 1.5 * |A| = 1.5, gradient 0
    new = torch.tensor([[0.1, 0.3], [LN2, float("nan")]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -1.0])
    losses = gspo_token_losses(new, old, adv, 0.2, 0.28, mask=mask)
    close(losses[0], [-1.221403, -1.221403])
    close(losses[1, 0], 2.0)
    capped = gspo_token_losses(new, old, adv, 0.2, 0.28, mask=mask, dual_clip=1.5)
    close(capped[1, 0], 1.5)
    sequence_mean_loss(capped, mask).backward()  # mean over the two sequences: each row's loss once
    close(new.grad, [[-0.610701 / 2, -0.610701 / 2], [0.0, 0.0]])
    with pytest.raises(ValueError, match="mask"):
        gspo_token_losses(new, old, adv)


def test_cispo_keeps_the_gradient_of_clipped_tokens():
    from slowthink.rl.losses import cispo_token_losses

    # ratio e^.5 = 1.648721 > 1.28, A = 1: PPO's clip removes the gradient; CISPO's weight is sg(1.28), so
    # loss = -1.28 * 1 * logp, d loss / d logp = -1.28. At ratio 1 (second token) the gradient is -A, as PPO's.
    new = torch.tensor([[0.5, 0.0]], requires_grad=True)
    loss = cispo_token_losses(new, torch.zeros(1, 2), torch.tensor([1.0]), 0.2, 0.28)
    close(loss, [[-0.64, 0.0]])  # -1.28 * .5 and -1 * 0
    loss.sum().backward()
    close(new.grad, [[-1.28, -1.0]])
    ppo = torch.tensor([[0.5, 0.0]], requires_grad=True)
    clipped_pg_token_losses(ppo, torch.zeros(1, 2), torch.tensor([1.0]), 0.2, 0.28).sum().backward()
    close(ppo.grad, [[0.0, -1.0]])  # the clipped token lost its gradient


def test_dual_clip_caps_negative_advantages_with_huge_ratios():
    # ratio e^3 = 20.085537 and A = -1: PPO's loss is -min(-20.09, -1.28) = 20.09, unbounded in the ratio;
    # the dual clip caps it at c * |A| = 3 (gradient 0). A = +1 is untouched (clipped at 1.28 as before).
    new = torch.tensor([[3.0]], requires_grad=True)
    close(clipped_pg_token_losses(new, torch.zeros(1, 1), torch.tensor([-1.0]), 0.2, 0.28), [[20.085537]])
    capped = clipped_pg_token_losses(new, torch.zeros(1, 1), torch.tensor([-1.0]), 0.2, 0.28, dual_clip=3.0)
    close(capped, [[3.0]])
    capped.sum().backward()
    close(new.grad, [[0.0]])
    close(clipped_pg_token_losses(new, torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.28, dual_clip=3.0), [[-1.28]])
    with pytest.raises(ValueError, match="dual_clip"):
        clipped_pg_token_losses(new, torch.zeros(1, 1), torch.tensor([-1.0]), dual_clip=0.5)


def test_objectives_table_and_trainer_default_dual_clip():
    from slowthink.rl.losses import OBJECTIVES
    from slowthink.rl.onpolicy import OnPolicyConfig

    assert set(OBJECTIVES) == {"ppo_clip", "gspo", "cispo"}
    assert OnPolicyConfig.__dataclass_fields__["dual_clip"].default == 3.0  # on in every trainer by default
    x = torch.tensor([[0.2, -0.1]])
    for name, fn in OBJECTIVES.items():  # one signature: (new, old, adv, eps_low, eps_high, mask=, dual_clip=)
        assert fn(x, torch.zeros(1, 2), torch.tensor([1.0]), 0.2, 0.2, mask=torch.ones(1, 2), dual_clip=3.0).shape == (1, 2)


def test_kl_k3_is_clamped_where_exp_would_overflow():
    # ref - logp = 100 nats: exp(100) overflows float32 to inf. Clamped as veRL: d -> 20, exp(20) - 21 = 4.85e8,
    # then the result -> 10. Gradients stay finite (0 where clamped).
    logp = torch.tensor([0.0, -1.0], requires_grad=True)
    ref = torch.tensor([100.0, -1.3])
    k3 = kl_k3(logp, ref)
    close(k3, [10.0, 0.040818], tol=1e-5)  # second: e^-.3 + .3 - 1 = .040818, unchanged
    k3.sum().backward()
    assert torch.isfinite(logp.grad).all()
    close(kl_k3(torch.tensor([0.0]), torch.tensor([-100.0])), [10.0])  # d -> -20: e^-20 + 20 - 1 = 19 -> 10


# ----------------------------------------------------------------------------- off-policy correction

def test_truncated_importance_weights_token_and_sequence():
    from slowthink.rl.losses import truncated_is_weights, within_cap_mask

    learner = torch.tensor([[-1.0, -1.0, 5.0]])
    sampler = torch.tensor([[-2.0, -0.5, float("nan")]])  # last: padding
    mask = torch.tensor([[1, 1, 0]])
    # token: e^(−1 + 2) = 2.718 -> capped at 2; e^(−1 + .5) = .606531; padding 1
    close(truncated_is_weights(learner, sampler, mask, cap=2.0), [[2.0, 0.606531, 1.0]])
    # sequence: exp(1 - .5) = e^.5 = 1.648721 on every real token (below the cap)
    close(truncated_is_weights(learner, sampler, mask, cap=2.0, level="sequence"), [[1.648721, 1.648721, 1.0]])
    close(truncated_is_weights(learner, sampler, mask, cap=1.5, level="sequence"), [[1.5, 1.5, 1.0]])
    # masking: |log ratio| <= ln 2 keeps -.5, drops 1 (ratio e > 2) and the padding
    assert within_cap_mask(learner, sampler, mask, cap=2.0).tolist() == [[False, True, False]]
    assert within_cap_mask(learner, sampler, mask, cap=2.0, level="sequence").tolist() == [[True, True, False]]
    w = truncated_is_weights(learner.requires_grad_(), sampler, mask)
    assert not w.requires_grad  # detached: a weight, not a path for the gradient
    with pytest.raises(ValueError, match="level"):
        truncated_is_weights(learner, sampler, mask, level="row")
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(learner, sampler, mask, cap=0.5)


def test_logprob_mismatch_and_staleness():
    from slowthink.rl.losses import logprob_mismatch, staleness_stats

    learner = torch.tensor([[-1.0, -2.0, 0.0]])
    sampler = torch.tensor([[-1.5, -1.0, 9.0]])
    # diffs .5 and -1 (third is padding): mean |d| .75, max 1; k3 of d: (e^.5 - 1.5 + e^-1 + 1 - 1) / 2
    #   = (1.648721 - 1.5 + .367879) / 2 = .258300
    m = logprob_mismatch(learner, sampler, torch.tensor([[1, 1, 0]]))
    assert m["logp_diff_mean"] == pytest.approx(0.75) and m["logp_diff_max"] == pytest.approx(1.0)
    assert m["sampler_kl"] == pytest.approx(0.258300, abs=1e-6)
    assert staleness_stats(5, [5, 4, 3, 5]) == {"staleness_mean": 0.75, "staleness_max": 2.0}
    with pytest.raises(ValueError, match="newer"):
        staleness_stats(2, [3])


def test_dr_grpo_normaliser_counts_every_row_of_the_batch(tiny_model, tok, tmp_path):
    """11 of 24 rows kept after overlong filtering: Dr. GRPO's constant is 24 x max_tokens, not 11 x max_tokens
    (which would scale this step's loss by 24 / 11 = 2.18)."""
    from slowthink.models import save
    from slowthink.rl import grpo
    from slowthink.rl.batch import Row, collate_rows, learner_logprobs

    save(tiny_model, tok, tmp_path / "m")
    cfg = grpo.GRPOConfig(init=str(tmp_path / "m"), loss_agg="constant_normalizer", max_new_tokens=8,
                          progress=False)
    ids = tok("1+2=", add_special_tokens=False)["input_ids"]
    rows = [Row(ids, ids[:3] if i < 11 else ids * 2, [0.0] * (3 if i < 11 else 8), 1.0, i < 11) for i in range(24)]
    b = collate_rows(rows, tok.pad_token_id, "cpu")
    with torch.no_grad():  # the learner's own log-probs as old: ratio 1, so each in-loss token's loss is -A = -1
        logp = learner_logprobs(tiny_model, b, cfg.temperature)
    for i, r in enumerate(rows):
        r.old_logprobs = logp[i, :len(r.token_ids)].tolist()
    stats = grpo.learner_update(tiny_model, None, rows, cfg, tok.pad_token_id)
    tiny_model.zero_grad(set_to_none=True)
    # 11 rows x 3 tokens x (-1) / (24 rows x 8 tokens) = -33 / 192 = -.171875 (not -33 / 88 = -.375)
    assert stats["loss"] == pytest.approx(-0.171875, abs=1e-5)


def test_learner_correction_reweights_towards_the_sampler(tiny_model, tok):
    """The learner's own log-probs replace the sampler's as the ratio's old policy; each token's loss is weighted
    by min(pi_learner / pi_sampler, C): a sampler .5 nats more confident on every token gives weight e^-.5."""
    from types import SimpleNamespace

    from slowthink.rl.batch import Row, collate_rows, learner_logprobs
    from slowthink.rl.correction import correct, sampler_logp, with_learner_logprobs

    ids = tok("1+2=", add_special_tokens=False)["input_ids"]
    rows = [Row(ids, ids[:3], [0.0] * 3, 1.0, True), Row(ids, ids[1:3], [0.0] * 2, 0.0, True)]
    with torch.no_grad():
        own = learner_logprobs(tiny_model, collate_rows(rows, tok.pad_token_id, "cpu"), 1.0)
    rows[0].old_logprobs = (own[0, :3] + 0.5).tolist()  # the sampler: .5 nats above the learner on each token
    cfg = SimpleNamespace(micro_batch_size=0, temperature=1.0, kl_coef=0.0, is_cap=2.0, is_correction="token",
                          is_mask=False)
    fixed, stats = with_learner_logprobs(tiny_model, rows, cfg, tok.pad_token_id)
    close(torch.tensor(fixed[0].old_logprobs), own[0, :3], tol=1e-5)
    assert fixed[0].sampler_logprobs == rows[0].old_logprobs
    assert fixed[1].old_logprobs == rows[1].old_logprobs  # zero advantage: never run, passed through
    assert stats["logp_diff_mean"] == pytest.approx(0.5, abs=1e-5)
    assert stats["logp_diff_max"] == pytest.approx(0.5, abs=1e-5)
    b = collate_rows(fixed[:1], tok.pad_token_id, "cpu")
    losses, mask, sums = correct(torch.ones(1, 3), b["old_logp"], sampler_logp(fixed[:1], "cpu"), b["loss_mask"], cfg)
    close(losses, [[math.exp(-0.5)] * 3])  # e^-.5 = .606531
    assert sums["is_tokens"] == 3 and sums["is_masked"] == 0
