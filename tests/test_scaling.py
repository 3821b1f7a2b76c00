"""Pooled test-time scaling curves (slowthink.search.scaling) on hand-made pools whose answers are known."""

import math

import pytest

from slowthink.search.scaling import (CEILING, best_point, confidence, doubling, draw_pool, pick_majority,
                                      pool_curves, rule)
from search_helpers import SpyEngine

pytestmark = pytest.mark.usefixtures("one_thread")


def sample(answer, correct, tokens, conf=0.5, **extra):
    return {"text": "", "tokens": tokens, "answer": answer, "well_formed": answer is not None, "correct": correct,
            "confidence": conf, **extra}


def hand_pools():
    # Problem 1 (right answer 12): a malformed sample, a wrong one, then two right ones.
    p1 = [sample(None, False, 10, 0.9), sample("13", False, 20, 0.2), sample("12", True, 30, 0.5),
          sample("12", True, 40, 0.5)]
    # Problem 2 (right answer 8): three confident-less votes for 9, one confident vote for 8.
    p2 = [sample("9", False, 5, 0.1), sample("9", False, 5, 0.1), sample("8", True, 5, 0.9),
          sample("9", False, 5, 0.1)]
    return [p1, p2]


def test_majority_confidence_and_ceiling_on_a_hand_made_pool():
    cv = pool_curves(hand_pools(), [1, 2, 4])
    acc = {name: [p["accuracy"] for p in pts] for name, pts in cv.items()}
    assert acc["majority"] == [0.0, 0.0, 0.5]  # p1: 12 wins 2-1 at n=4; p2: 9 wins 3-1
    assert acc["confidence_majority"] == [0.0, 0.0, 1.0]  # p2: 8 weighs 0.9 against 9's 0.3
    assert acc[CEILING] == [0.0, 0.0, 1.0]
    toks = [p["mean_policy_tokens"] for p in cv["majority"]]
    assert toks == [(10 + 5) / 2, (30 + 10) / 2, (100 + 20) / 2]  # the first n samples' tokens, per problem
    assert all(p["n_problems"] == 2 and p["mean_verifier_tokens"] == 0 for pts in cv.values() for p in pts)
    best = best_point(cv)
    assert (best["strategy"], best["n"], best["accuracy"]) == ("confidence_majority", 4, 1.0)


def test_majority_ties_go_to_the_answer_seen_first_and_malformed_never_vote():
    assert pick_majority([sample("7", False, 1), sample("5", True, 1), sample("5", True, 1),
                          sample("7", False, 1)]) == 0
    assert pick_majority([sample(None, False, 1), sample(None, False, 1), sample("3", True, 1)]) == 2
    assert pick_majority([sample(None, False, 1)]) == 0


def test_verifier_rules_use_the_score_key_and_count_its_tokens():
    pools = [[sample("1", False, 4, prm=0.9, prm_tokens=7), sample("2", True, 4, prm=0.95, prm_tokens=9),
              sample(None, False, 4)]]
    cv = pool_curves(pools, [1, 3], ("best_of_n_prm", "weighted_majority_prm", "majority"))
    assert [p["accuracy"] for p in cv["best_of_n_prm"]] == [0.0, 1.0]
    assert [p["accuracy"] for p in cv["weighted_majority_prm"]] == [0.0, 1.0]
    assert [p["accuracy"] for p in cv["majority"]] == [0.0, 0.0]  # 1-1 tie: the first seen wins
    assert [p["mean_verifier_tokens"] for p in cv["best_of_n_prm"]] == [7, 16]
    with pytest.raises(ValueError, match="unknown pool rule"):
        rule("best_of_n_")
    with pytest.raises(ValueError, match="pools of that many"):
        pool_curves(pools, [1, 8])


def test_best_point_ties_prefer_fewer_tokens_and_skip_the_ceiling():
    cv = {"majority": [{"n": 1, "accuracy": 0.5, "mean_policy_tokens": 10},
                       {"n": 4, "accuracy": 0.5, "mean_policy_tokens": 40}],
          CEILING: [{"n": 4, "accuracy": 0.9, "mean_policy_tokens": 40}]}
    assert best_point(cv)["n"] == 1


def test_doubling_and_confidence():
    assert doubling(16) == [1, 2, 4, 8, 16]
    assert doubling(12) == [1, 2, 4, 8, 12]
    assert doubling(1) == [1]
    assert confidence([-1.0, -3.0]) == pytest.approx(math.exp(-2.0))
    assert confidence([0.0]) == 1.0 and confidence([]) == 0.0


def test_draw_pool_records_tokens_and_confidence_of_every_sample(tiny_model, tok):
    from slowthink.search import Policy
    from slowthink.tasks import get_task

    task = get_task("arithmetic", op="mul", cot="cells")
    engine = SpyEngine(tiny_model, tok)
    policy = Policy(engine, task, "system2", temperature=1.0, max_tokens=12, seed=0)
    problems = task.heldout_set(3, (1,), seed=5)
    pools = draw_pool(policy, problems, 4, chunk=2)
    assert [len(p) for p in pools] == [4, 4, 4]
    drawn = [c for r in engine.requests for c in r.completions]  # what the engine generated, in order
    samples = [s for p in pools for s in p]
    assert [s["text"] for s in samples] == [c.text for c in drawn]
    assert [s["tokens"] for s in samples] == [len(c.token_ids) for c in drawn]
    assert [s["confidence"] for s in samples] == pytest.approx([math.exp(sum(c.logprobs) / len(c.logprobs))
                                                                for c in drawn])
    for s in samples:
        assert s["well_formed"] == (s["answer"] is not None) and not (s["correct"] and not s["well_formed"])
    assert draw_pool(policy, problems, 4, chunk=2)[1] == pools[1]  # seeded: the same pool again
