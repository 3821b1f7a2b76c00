"""Step claims and the step-recomputing verifier: every claim of a right derivation is true arithmetic, a
wrong digit makes the step that wrote it (and only the steps that rely on it) fail, the checker's answers
decide the score, and ``--verifier check:DIR`` loads a real model as the checker."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import numpy as np
import pytest

from slowthink.critics.recompute import RecomputeVerifier, parse_spec
from slowthink.engine import Completion, Engine, SamplingParams
from slowthink.models import build_model
from slowthink.search import make_verifier
from slowthink.search.scaling import score_pool
from slowthink.tasks import Arithmetic, Problem
from slowthink.tasks.base import Claim
from slowthink.tokenizer import render_prompt

pytestmark = pytest.mark.usefixtures("one_thread")


def prob(a: int, b: int, op: str = "mul") -> Problem:
    q = f"{a}{'*' if op == 'mul' else '+'}{b}"
    return Problem(key=q, level=len(str(a)), question=q, answer=str(a * b if op == "mul" else a + b),
                   data={"a": a, "b": b, "op": op})


def true_value(question: str) -> int:
    a, op, b = (question.partition("*") if "*" in question else question.partition("+"))
    return int(a) * int(b) if op == "*" else int(a) + int(b)


@pytest.mark.parametrize("cot", ["cells", "compact"])
def test_claims_of_right_derivations_are_true_and_use_the_problems_operands(cot):
    rng = random.Random(0)
    for op in ("mul", "add"):
        task = Arithmetic(op=op, cot=cot)
        for level in (1, 2, 3, 4):
            for _ in range(10):
                p = task.sample(rng, level)
                steps = task.solution_lines(p)
                claims = task.step_claims(p, steps, answer=p.answer)
                assert len(claims) == len(steps) and claims[0] == []
                assert all(step for step in claims[1:]), (p, steps, claims)
                for c in (c for step in claims[1:] for c in step):
                    assert true_value(c.question) == int(c.value)
    p = prob(365, 225)
    questions = [c.question for step in Arithmetic(cot=cot).step_claims(p, Arithmetic(cot=cot).solution_lines(p))
                 for c in step]
    assert questions == ["365*5", "365*2", "7300+1825", "365*2", "73000+09125"]


def test_a_wrong_digit_fails_its_claim_and_face_checks_catch_the_rest():
    task = Arithmetic(op="mul", cot="cells")
    p = prob(365, 225)
    steps = task.solution_lines(p)  # header, then rows for the digits 5, 2, 2
    assert steps[2] == "2:001013070000 050211090000"

    def bump(line: str, i: int) -> str:
        return line[:i] + str((int(line[i]) + 1) % 10) + line[i + 1:]

    claims = task.step_claims(p, [*steps[:2], bump(steps[2], 5), steps[3]])  # a digit of 365*2's cells
    false = [c for step in claims if step for c in step if true_value(c.question) != int(c.value)]
    assert [(c.question, c.value) for c in false] == [("365*2", "731"), ("7310+1825", "9125")]
    assert all(true_value(c.question) == int(c.value) for c in claims[3])  # the next row is judged on its own
    assert task.step_claims(p, [*steps[:2], bump(steps[2], 3), steps[3]])[2] is None  # a digit in the shift
    assert task.step_claims(p, steps[:3]) == task.step_claims(p, steps)[:3]  # a prefix is judged as a prefix
    assert task.step_claims(p, steps[:3], answer=p.answer)[-1] is None  # a finished one must be complete
    assert task.step_claims(p, steps, answer=str(int(p.answer) + 1))[-1] is None  # and answer what it computed
    assert task.step_claims(p, [steps[0], "5:25 05"])[1] is None  # not a row of this width
    assert task.step_claims(p, [*steps, steps[-1]])[-1] is None  # more rows than digits
    with pytest.raises(ValueError, match="cells, compact or chain"):
        Arithmetic(cot="mac").step_claims(p, steps)


def test_chain_steps_are_the_claims_themselves():
    """``cot=chain`` writes each claim as ``question=result``: the same questions as the compact format's
    claims, every step judged from the problem's operands and the results written before it."""
    task, compact = Arithmetic(op="mul", cot="chain"), Arithmetic(op="mul", cot="compact")
    rng = random.Random(1)
    for level in (1, 2, 3, 4):
        for _ in range(10):
            p = task.sample(rng, level)
            steps = task.solution_lines(p)
            claims = task.step_claims(p, steps, answer=p.answer)
            assert [f"{c.question}={c.value}" for step in claims for c in step] == steps
            assert [c.question for step in claims for c in step] == [
                c.question for step in compact.step_claims(p, compact.solution_lines(p)) for c in step]
            assert all(true_value(c.question) == int(c.value) for step in claims for c in step)
            assert task.score(p, "\n".join(steps) + "\n</think>\n\n" + p.answer).correct
            assert all(task.step_labels(p, "\n".join(steps)))
    p = prob(365, 225)
    steps = task.solution_lines(p)
    assert steps == ["365*5=1825", "365*2=730", "7300+1825=9125", "365*2=730", "73000+09125=82125"]
    wrong = [steps[0], "365*2=731", *steps[2:]]  # a wrong product: its claim is false, and the sum due
    claims = task.step_claims(p, wrong)          # next is 7310+1825, so the copied 7300+1825 is off-plan
    assert claims[1] == [Claim("365*2", "731")] and claims[2:] == [None, None, None]
    assert task.step_claims(p, ["365*2=730", *steps[1:]])[0] is None  # the wrong digit of b first
    assert task.step_claims(p, [steps[0], "36*2=72"])[1] is None  # a miscopied operand
    assert task.step_claims(p, ["365*5 = 1825"])[0] is None  # not this format
    assert task.step_claims(p, steps[:3], answer="9125")[-1] is None  # stopped early
    assert task.step_claims(p, steps, answer="82126")[-1] is None  # answers something else
    assert task.step_claims(p, [*steps, steps[-1]])[-1] is None  # a step after the last
    add = Arithmetic(op="add", cot="chain")
    q = prob(347, 862, op="add")
    assert add.solution_lines(q) == ["347+862=1209"]
    assert add.step_claims(q, ["347+862=1209"], answer="1209") == [[Claim("347+862", "1209")]]
    assert add.step_claims(q, ["347+863=1210"], answer="1210") == [None]


class ArithmeticChecker(Engine):
    """A stand-in checker model: answers each claim question by arithmetic (``wrong`` ones off by one)."""

    def __init__(self, tok, wrong=()):
        self.tokenizer, self.wrong, self.asked = tok, set(wrong), []

    def generate(self, prompts, n=1, sampling=None, progress=False):
        out = []
        for ids in prompts:
            q = re.findall(r"[0-9]+[*+][0-9]+", self.tokenizer.decode(ids))[-1]
            self.asked.append(q)
            text = f"x</think>\n\n{true_value(q) + (q in self.wrong)}"  # a System-2 answer
            out.append([Completion(token_ids=[1] * 5, logprobs=[0.0] * 5, text=text, finish_reason="stop")])
        return out


def test_verifier_scores_follow_the_checker_and_count_its_tokens(tok):
    task = Arithmetic(op="mul", cot="cells")
    p = prob(365, 225)
    steps = task.solution_lines(p)
    text = "\n".join(steps) + f"\n</think>\n\n{p.answer}"
    right = RecomputeVerifier(ArithmeticChecker(tok), task)
    assert right.score_steps(p, steps) == [1.0, 1.0, 1.0, 1.0]
    assert right.score(p, text) == 1.0
    assert right.score(p, text.replace(p.answer, str(int(p.answer) + 1))) == 0.0
    assert right.score(p, "no think block") == 0.0
    fooled = RecomputeVerifier(ArithmeticChecker(tok, wrong={"7300+1825"}), task)
    assert fooled.score_steps(p, steps) == [1.0, 1.0, 0.0, 1.0]  # the checker's mistake, not the task's
    assert fooled.score(p, text) == 0.0
    # one batch asks each distinct question once; each item is charged its own distinct claims
    v = RecomputeVerifier(ArithmeticChecker(tok), task)
    scores = v.score_steps_batch([(p, steps), (p, steps[:2])])
    assert scores == [[1.0] * 4, [1.0, 1.0]]
    assert sorted(v.engine.asked) == sorted({"365*5", "365*2", "7300+1825", "73000+09125"})
    assert v.item_tokens[1] < v.item_tokens[0] and v.tokens < sum(v.item_tokens)
    # greedy answers are remembered: asking again costs the checker nothing, and is charged the same per item
    spent, asked, charged = v.tokens, len(v.engine.asked), v.item_tokens[0]
    assert v.score_steps_batch([(p, steps)]) == [[1.0] * 4]
    assert v.tokens == spent and len(v.engine.asked) == asked and v.item_tokens == [charged]
    q = prob(47, 86)  # another problem: the memory is about one problem, so the first one pays again after it
    v.score_steps_batch([(q, task.solution_lines(q))])
    v.score_steps_batch([(p, steps)])
    assert v.tokens > spent and v.engine.asked.count("365*5") == 2


def test_score_pool_uses_the_outcome_score_and_item_tokens(tok):
    task = Arithmetic(op="mul", cot="cells")
    p = prob(47, 86)
    good = "\n".join(task.solution_lines(p)) + f"\n</think>\n\n{p.answer}"
    pool = [{"text": good, "well_formed": True}, {"text": good.replace(f"\n\n{p.answer}", "\n\n1"), "well_formed": True},
            {"text": "x", "well_formed": False}]

    pol = SimpleNamespace(task=task)  # score_pool reads only the policy's task
    checker = RecomputeVerifier(ArithmeticChecker(tok), task)
    score_pool(pol, [p], [pool], check=checker)
    assert [s.get("check") for s in pool] == [1.0, 0.0, None]
    # each scored sample is charged what its item cost the checker; the malformed one is not scored
    assert [s.get("check_tokens") for s in pool] == [*checker.item_tokens, None] and all(checker.item_tokens)


def test_check_spec_and_loading_a_real_model(tmp_path, tok):
    assert parse_spec("runs/c/model") == ("runs/c/model", "system2")
    assert parse_spec("runs/c/model@system1") == ("runs/c/model", "system1")
    with pytest.raises(ValueError, match="mode"):
        parse_spec("runs/c/model@fast")
    model = build_model("tiny", tok, seed=0)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    task = Arithmetic(op="mul", cot="cells")
    v = make_verifier(f"check:{tmp_path / 'm'}@system1", task)
    assert isinstance(v, RecomputeVerifier) and v.checker_mode == "system1"
    p = prob(47, 86)
    scores = v.score_steps(p, task.solution_lines(p))  # an untrained checker: it runs, and confirms nothing
    assert scores == [1.0, 0.0, 0.0] and v.tokens > 0
    from slowthink.tasks import get_task

    with pytest.raises(ValueError, match="step_claims"):
        RecomputeVerifier(v.engine, get_task("countdown"))


# -- the checker as a router arm ------------------------------------------------------------------------

class AnswerCheck:
    """A stand-in verifier for the plumbing: 1.0 for a completion the task scores correct. Each sample
    "asks" one question named after its answer, costing 10 tokens (two samples with one answer share it)."""

    def __init__(self, task):
        self.task, self.tokens = task, 0

    def score_batch(self, items):
        scores = [float(self.task.score(p, text, "system2").correct) for p, text in items]
        answers = [self.task.score(p, text, "system2").answer for p, text in items]
        self.item_questions = [{f"{p.key}={a}"} for (p, _), a in zip(items, answers)]
        self.question_tokens = {q: 10 for qs in self.item_questions for q in qs}
        self.item_tokens = [10 * len(qs) for qs in self.item_questions]
        self.tokens += 10 * len(self.question_tokens)
        return scores

    def score(self, problem, completion):
        return self.score_batch([(problem, completion)])[0]


def test_check_arms_vote_by_the_verifier_and_pay_for_its_distinct_questions(s2_model):
    from slowthink.models import load_model
    from slowthink.router.arms import CHECK, Arm, arm_table, default_arms, run_arm

    task = Arithmetic(op="add", max_level=2)
    model, tok = load_model(s2_model)
    engines = {"main": Engine(model, tok), CHECK: AnswerCheck(task)}
    arms = default_arms(max_tokens=24, ns=(4,), temperature=1.0, check_ns=(4,))
    assert [a.name for a in arms] == ["s1", "s2", "s2_maj4", "s2_check4"] and arms[3].verifier == CHECK
    problems = task.heldout_set(12, (1, 2))
    t = arm_table(engines, task, problems, arms, seed=1)
    maj, chk = t.index("s2_maj4"), t.index("s2_check4")
    # the same four samples: an answer-checking verifier turns the vote into pass@4
    outs = engines["main"].generate([render_prompt(tok, task.prompt(p, "system2"), "system2") for p in problems],
                                    n=4, sampling=SamplingParams(max_tokens=24, temperature=1.0, seed=1))
    any_right = np.array([any(task.score(p, c.text).correct for c in cs) for p, cs in zip(problems, outs)])
    assert (t.correct[:, chk] == any_right).all() and t.correct[:, chk].sum() >= t.correct[:, maj].sum()
    answers = [{task.score(p, c.text).answer for c in cs} for p, cs in zip(problems, outs)]
    assert (t.tokens[:, chk] - t.tokens[:, maj] == [10 * len(a) for a in answers]).all()
    with pytest.raises(ValueError, match="verifier 'check'"):
        arm_table({"main": engines["main"]}, task, problems, arms)
    spent = engines[CHECK].tokens
    sol = run_arm(arms[3], problems[0], engines, task)
    assert sol.extra["n"] == 4 and sol.verifier_tokens == engines[CHECK].tokens - spent >= 10
    with pytest.raises(ValueError, match="System-2 vote"):
        Arm("bad", "system2", 1, verifier=CHECK)
    assert Arm(**arms[3].to_dict()) == arms[3]  # a saved router's arms keep their verifier


def test_s2check_signal_is_a_cascade_stage_whose_answer_the_greedy_arm_reuses(s2_model, tmp_path):
    from slowthink.models import load_model
    from slowthink.router import Router
    from slowthink.router.arms import CHECK, arm_table
    from slowthink.router.scoring import routed_outcome
    from slowthink.router.signals import compute_signals
    from slowthink.router.solve import route_solve
    from slowthink.router.train import RouterConfig, fit_router, training_problems

    task = Arithmetic(op="add", max_level=2)
    model, tok = load_model(s2_model)
    engines = {"main": Engine(model, tok), CHECK: AnswerCheck(task)}
    problems = task.heldout_set(10, (1, 2))
    sig = compute_signals(engines, task, problems, ("s1", "s2check"), max_tokens=6, s2_max_tokens=24)
    outs = engines["main"].generate([render_prompt(tok, task.prompt(p, "system2"), "system2") for p in problems],
                                    sampling=SamplingParams(max_tokens=24, temperature=0.0))
    assert list(sig.s2_correct) == [task.score(p, c.text).correct for p, (c,) in zip(problems, outs)]
    assert list(sig.tokens_by_signal["s2check"]) == [len(c.token_ids) + 10 for (c,) in outs]
    col = sig.names.index("s2_checked")
    assert list(sig.features[:, col]) == [float(x) for x in sig.s2_correct]  # this stand-in checker is exact
    with pytest.raises(ValueError, match="needs a checker"):
        compute_signals({"main": engines["main"]}, task, problems, ("s2check",))

    cfg = RouterConfig(model=s2_model, task_args={"op": "add", "max_level": 2}, levels=[1, 2], per_level=12,
                       majority_ns=[2], check_ns=[2], max_tokens=24, signal_max_tokens=6, signals=["s1", "s2check"],
                       choose_signals=False, progress=False)
    router, _ = fit_router(cfg, task, engines, {"main": s2_model}, training_problems(task, [1, 2], 12, 0))
    assert router.reused() == ["s1", "s2check", None, None] and router.arm_names[3] == "s2_check2"
    table = arm_table(engines, task, problems, router.arms, seed=0)
    sig = compute_signals(engines, task, problems, router.signals, max_tokens=6, s2_max_tokens=24)
    pick = np.ones(len(problems), int)  # System-2 greedy everywhere: the signal's answers, no extra tokens
    correct, tokens = routed_outcome(router, table, sig, pick)
    assert (correct == sig.s2_correct).all() and (tokens == sig.tokens).all()
    router.save(tmp_path / "router")
    loaded = Router.load(tmp_path / "router")
    assert loaded.signals == ("s1", "s2check") and (loaded.choose(sig.features) == router.choose(sig.features)).all()
    sol = route_solve(problems[0], loaded, engines, task)
    assert sol.extra["route"]["signal_tokens"] > 0 and sol.policy_tokens >= sol.extra["route"]["signal_tokens"]
    with pytest.raises(ValueError, match="checker"):
        RouterConfig(model=s2_model, signals=["s2check"])
    import shutil

    from slowthink.serve.app import serve_main

    shutil.copytree(s2_model, tmp_path / "model")
    router.save(tmp_path / "model" / "router")
    with pytest.raises(ValueError, match="uses a checker"):  # refused before serving, with the reason
        serve_main(str(tmp_path / "model"), traces=None, jobs=None)


def test_restated_question_opens_the_solution_and_claims_nothing():
    task, plain = Arithmetic(op="mul", cot="chain", restate=True), Arithmetic(op="mul", cot="chain")
    p = prob(365, 225)
    steps = task.solution_lines(p)
    assert steps == ["365*225", *plain.solution_lines(p)]
    assert task.step_claims(p, steps, answer=p.answer) == [[], *plain.step_claims(p, steps[1:], answer=p.answer)]
    assert task.step_claims(p, ["365*252", *steps[1:]]) == [None] * len(steps)  # miscopied: nothing after counts
    text = "\n".join(steps)
    assert task.score(p, text + "\n</think>\n\n" + p.answer).correct and all(task.step_labels(p, text))
