"""Learned critics: step segmentation, Monte-Carlo step labels, the metrics (AUROC, ProcessBench F1),
PRM/ORM training moving their metric, save/load, and the verifier protocol inside the search strategies."""

from __future__ import annotations

import math
import random

import pytest
import torch

from slowthink.critics import (
    OutcomeRewardModel,
    ProcessRewardModel,
    Sample,
    auroc,
    best_threshold,
    completion_steps,
    encode_steps,
    first_false,
    load_critic,
    mc_label,
    pick_best,
    predicted_first_error,
    prefix_text,
    processbench_f1,
    sample_solutions,
    soft_hard,
)
from slowthink.critics.train import CriticConfig, evaluate_examples, fit, orm_examples, prm_examples
from slowthink.engine import Completion, Engine
from slowthink.models import build_model, load_model
from slowthink.search import Policy, get_strategy, make_verifier
from slowthink.search.base import Meter, score_completion
from slowthink.tasks import Arithmetic

MUL = Arithmetic(op="mul", max_level=2)
ADD = Arithmetic(op="add", max_level=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def problem(task, q: str):
    a, b = q.split("*") if "*" in q else q.split("+")
    op = "mul" if "*" in q else "add"
    result = int(a) * int(b) if op == "mul" else int(a) + int(b)
    from slowthink.tasks import Problem

    return Problem(key=q, level=len(a), question=q, answer=str(result), data={"a": int(a), "b": int(b), "op": op})


# -- segmentation -------------------------------------------------------------------------------------

def test_steps_of_a_worked_solution_and_their_token_positions(tok):
    p = problem(MUL, "47*86")
    ref = MUL.reference(p, "system2")
    steps = completion_steps(MUL, ref.completion())
    assert steps == MUL.solution_lines(p) and len(steps) == 3  # header + one line per digit of b
    assert completion_steps(MUL, "7,4*6,8\n\n6:2\n") == ["7,4*6,8", "6:2"]  # unclosed, empty line dropped
    assert prefix_text(steps, 0) == "" and prefix_text(steps, 2) == steps[0] + "\n" + steps[1] + "\n"

    def encode(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    ids, ends = encode_steps(encode, [1, 2, 3], steps)
    nl = encode("\n")[0]
    assert all(ids[e] == nl for e in ends) and ends[-1] == len(ids) - 1
    assert tok.decode(ids[3:ends[0] + 1]) == steps[0] + "\n"
    assert first_false([True, True, False, False]) == 2 and first_false([True]) is None


# -- metrics ------------------------------------------------------------------------------------------

def test_auroc_and_processbench_f1_on_hand_examples():
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3 of 4
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([0.9, 0.1, 0.95], [False, True, True]) == pytest.approx(0.5)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))
    assert predicted_first_error([0.9, 0.2, 0.8], 0.5) == 1 and predicted_first_error([0.9, 0.6], 0.5) is None
    # erroneous samples: first errors at 1 (found) and 0 (predicted 2) -> 1/2; correct: 2 of 3 -> 2/3
    r = processbench_f1([1, 2, None, None, 0], [1, 0, None, None, None])
    assert r["acc_erroneous"] == pytest.approx(0.5) and r["acc_correct"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    th = best_threshold([[0.9, 0.1], [0.8, 0.7]], [1, None])
    assert processbench_f1([predicted_first_error(s, th) for s in ([0.9, 0.1], [0.8, 0.7])], [1, None])["f1"] == 1.0
    assert pick_best([None, 0.3, 0.7, 0.7]) == 2 and pick_best([None, None]) == 0
    assert soft_hard([True, False, False, False]) == (0.25, True) and soft_hard([False, False]) == (0.0, False)
    with pytest.raises(ValueError):
        soft_hard([])


# -- Monte-Carlo labels --------------------------------------------------------------------------------

class CompletingPolicy:
    """A policy that finishes any prefix deterministically: the correct derivation and answer when every
    step so far is right, else a wrong answer. Prompts carry the problem index and the prefix characters."""

    mode = "system2"

    def __init__(self, task, problems):
        self.task, self.problems, self.calls = task, problems, []

    def prompt_ids(self, p):
        return [-1 - self.problems.index(p)]

    def encode(self, text):
        return [ord(c) for c in text]

    def _finish(self, p, prefix: str) -> str:
        steps = self.task.steps(prefix)
        ref = self.task.solution_lines(p)
        if all(self.task.step_labels(p, prefix)):
            return "".join(s + "\n" for s in ref[len(steps):]) + f"</think>\n\n{p.answer}"
        return f"</think>\n\n{int(p.answer) + 1}"

    def sample_many(self, prompts, n, meter, temperature=None):
        self.calls.append((len(prompts), n))
        out = []
        for ids in prompts:
            p = self.problems[-1 - ids[0]]
            text = self._finish(p, "".join(chr(i) for i in ids[1:]))
            out.append([Completion([1] * len(text), [0.0] * len(text), text, "stop")] * n)
        meter.charge([c for cs in out for c in cs])
        return out


def test_mc_labels_on_a_task_with_known_answers():
    p, q = problem(MUL, "47*86"), problem(MUL, "23*51")
    policy = CompletingPolicy(MUL, [p, q])
    good = MUL.reference(p, "system2").completion()
    lines = MUL.solution_lines(p)
    bad_line = lines[1][:3] + ("1" if lines[1][3] != "1" else "2") + lines[1][4:]
    bad = "\n".join([lines[0], bad_line, lines[2]]) + f"\n</think>\n\n{p.answer}"  # right answer, wrong step 2
    samples = [Sample(p, c, MUL.score(p, c).correct, True, completion_steps(MUL, c)) for c in (good, bad)]
    samples.append(Sample(q, "9", False, False, []))  # malformed, no steps: no labels, no rollouts
    labels = mc_label(policy, samples, k=3, meter=Meter(), reuse_samples=False)
    assert labels[0].soft == [1.0, 1.0, 1.0] and labels[0].hard == [True] * 3
    assert labels[1].soft == [1.0, 0.0, 0.0] and labels[1].hard == [True, False, False]
    assert labels[2].soft == [] and labels[0].rollouts == [3, 3, 3]
    assert [lab == MUL.step_labels(p, "\n".join(s.steps)) for lab, s in zip([labels[1].hard], samples[1:])] == [True]
    # 5 distinct prefixes (the first step is shared), each rolled out once for k samples
    assert sum(n for n, _ in policy.calls) == 5 and all(k == 3 for _, k in policy.calls)

    # reusing the samples: each is one more outcome of every prefix it starts with
    labels = mc_label(policy, samples, k=3, meter=Meter(), reuse_samples=True)
    assert labels[0].rollouts == [5, 4, 4]  # the shared first step has both samples
    # the bad sample's answer is right (a lucky or copied answer): it lifts its own wrong prefixes to 1/4
    assert labels[1].soft == [1.0, pytest.approx(1 / 4), pytest.approx(1 / 4)]


def test_mc_labels_through_the_engine(tok, tiny_model):
    policy = Policy(Engine(tiny_model, tok), MUL, "system2", max_tokens=24, seed=0)
    problems = [problem(MUL, "3*4"), problem(MUL, "7*8")]
    meter = Meter()
    samples = sample_solutions(policy, problems, 2, meter)
    assert len(samples) == 4 and [s.problem for s in samples] == [problems[0]] * 2 + [problems[1]] * 2
    before = meter.samples
    labels = mc_label(policy, samples, k=2, meter=meter)
    assert [len(lab.soft) for lab in labels] == [len(s.steps) for s in samples]
    prefixes = [[(s.problem.key, prefix_text(s.steps, i)) for i in range(1, len(s.steps) + 1)] for s in samples]
    # reuse_samples (the default): each prefix has its k rollouts plus one outcome per sample that starts with it
    assert [lab.rollouts for lab in labels] == [[2 + sum(key in other for other in prefixes) for key in own]
                                                for own in prefixes]
    assert all(h == (x > 0) for lab in labels for x, h in zip(lab.soft, lab.hard))
    distinct = {(s.problem.key, prefix_text(s.steps, i)) for s in samples for i in range(1, len(s.steps) + 1)}
    assert meter.samples - before == 2 * len(distinct)


# -- training moves the metric, save/load ---------------------------------------------------------------

def corrupt(line: str, rng: random.Random) -> str:
    """An easy-to-see wrong step: digits replaced by letters."""
    return "".join(rng.choice("xyz") if c.isdigit() and rng.random() < 0.5 else c for c in line) + "x"


def easy_data(n: int, seed: int):
    """Worked 1-digit multiplications, half with steps from a random index on corrupted; labels are the
    task's ground truth (the training code does not care where labels come from)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = MUL.sample(rng, 1)
        steps = MUL.solution_lines(p)
        if i % 2:
            j = rng.randrange(len(steps))
            steps = steps[:j] + [corrupt(s, rng) for s in steps[j:]]
        completion = "\n".join(steps) + f"\n</think>\n\n{p.answer if i % 2 == 0 else int(p.answer) + 1}"
        out.append(Sample(p, completion, i % 2 == 0, True, steps))
    return out


@pytest.fixture(scope="module")
def trained(tok, tmp_path_factory):
    """A PRM and an ORM trained briefly on the easy data, saved, with their held-out metrics before/after."""
    from slowthink.critics.mc_labels import StepLabels

    out = {}
    train_s, val_s = easy_data(96, 0), easy_data(48, 1)
    cfg = CriticConfig(epochs=4, batch_size=16, lr=1e-3, progress=False)
    for cls in (ProcessRewardModel, OutcomeRewardModel):
        critic = cls(build_model("tiny", tok, seed=1), tok, MUL)
        if cls is ProcessRewardModel:
            labs = [StepLabels([float(x) for x in MUL.step_labels(s.problem, "\n".join(s.steps))], []) for s in train_s]
            vlabs = [StepLabels([float(x) for x in MUL.step_labels(s.problem, "\n".join(s.steps))], []) for s in val_s]
            tr, val = prm_examples(critic, train_s, labs), prm_examples(critic, val_s, vlabs)
        else:
            tr, val = orm_examples(critic, train_s), orm_examples(critic, val_s)
        before = evaluate_examples(critic, val)
        params = [p.detach().clone() for p in critic.parameters()]
        rows = fit(critic, tr, val, cfg)
        changed = any(not torch.equal(a, b) for a, b in zip(params, critic.parameters()))
        path = critic.save(tmp_path_factory.mktemp(critic.kind) / "critic")
        out[critic.kind] = dict(critic=critic, before=before, after=evaluate_examples(critic, val), rows=rows,
                                changed=changed, path=path, val=val_s)
    return out


@pytest.mark.parametrize("kind", ["prm", "orm"])
def test_training_moves_the_metric(trained, kind):
    r = trained[kind]
    assert r["changed"]
    assert r["before"]["auroc"] == pytest.approx(0.5)  # zero-initialised head: every score 0.5
    assert r["after"]["loss"] < r["before"]["loss"] - 0.1
    assert r["after"]["auroc"] > 0.9
    assert r["rows"][-1]["train_loss"] < r["rows"][1]["train_loss"]


def test_save_load_round_trip_gives_the_same_scores(trained):
    prm, orm = trained["prm"], trained["orm"]
    items = [(s.problem, s.steps) for s in prm["val"][:6]]
    loaded = load_critic(prm["path"], MUL)
    assert isinstance(loaded, ProcessRewardModel)
    flat = (lambda xss: [x for xs in xss for x in xs])
    expected = flat(prm["critic"].score_steps_batch(items))
    assert flat(loaded.score_steps_batch(items)) == pytest.approx(expected, abs=1e-6)
    lorm = make_verifier(str(orm["path"].parent), MUL)  # the run folder works too
    assert isinstance(lorm, OutcomeRewardModel)
    comps = [(s.problem, s.completion) for s in orm["val"][:6]]
    assert lorm.score_batch(comps) == pytest.approx(orm["critic"].score_batch(comps), abs=1e-6)
    backbone, _ = load_model(prm["path"] / "backbone")  # plain transformers folder
    assert backbone.config.hidden_size == prm["critic"].head.in_features
    with pytest.raises(ValueError, match="critic"):
        make_verifier(str(prm["path"] / "nowhere"), MUL)


# -- the verifier protocol inside the search strategies --------------------------------------------------

class Scripted(Policy):
    """Returns fixed completions (the critic decides between them)."""

    def __init__(self, texts, task):
        super().__init__(engine=None, task=task, mode="system2")  # type: ignore[arg-type]
        self.texts = texts

    def prompt_ids(self, problem):
        return [0]

    def sample_many(self, prompts, n, meter, **kw):
        comps = [Completion([1] * len(t), [0.0] * len(t), t, "stop") for t in self.texts[:n]]
        meter.charge(comps)
        return [comps for _ in prompts]


@pytest.mark.parametrize("kind,strategy", [("prm", "best_of_n"), ("orm", "best_of_n"), ("prm", "weighted_majority"),
                                           ("orm", "weighted_majority")])
def test_critics_drive_best_of_n_and_weighted_majority(trained, kind, strategy):
    critic = trained[kind]["critic"]
    p = problem(MUL, "7*8")
    right = MUL.reference(p, "system2").completion()
    lines = MUL.solution_lines(p)
    wrong = "\n".join([lines[0], corrupt(lines[1], random.Random(0))]) + "\n</think>\n\n57"
    policy = Scripted([wrong, right, wrong], MUL)
    solve = get_strategy(strategy, n=3)
    t0 = critic.tokens
    sol = solve(p, policy, critic)
    assert sol.answer == "56" and sol.verifier_tokens == critic.tokens - t0 > 0
    scores = sol.extra["scores"]
    assert scores[1] == pytest.approx(score_completion(critic, policy, p, right)) and scores[1] > scores[0]


def test_prm_guides_beam_search(trained, tok, tiny_model):
    from slowthink.search import beam

    policy = Policy(Engine(tiny_model, tok), MUL, "system2", max_tokens=16, seed=0)
    prm = trained["prm"]["critic"]
    t0 = prm.tokens
    sol = beam.solve(problem(MUL, "3*4"), policy, prm, n=4, beam_width=2, max_steps=2)
    assert sol.verifier_tokens == prm.tokens - t0 > 0
    with pytest.raises(ValueError, match="step verifier"):
        beam.solve(problem(MUL, "3*4"), policy, trained["orm"]["critic"], n=4)


def test_cli_train_prm_orm_and_eval_with_the_learned_verifier(sft_model, tmp_path, capsys):
    import json

    from slowthink.cli import main
    from slowthink.train.runlog import read_metrics

    common = ["--init", sft_model, "--task-args", "op=add,max_level=2", "--levels", "1", "--problems", "6",
              "--samples-per-problem", "2", "--epochs", "1", "--batch-size", "4", "--threads", "1",
              "--max-new-tokens", "24", "--progress", "false"]
    for kind in ("prm", "orm"):
        assert main(["train", kind, "--out", str(tmp_path / kind), "--rollouts", "2", *common]) == 0
        assert (tmp_path / kind / "critic" / "critic.json").is_file()
        rows = read_metrics(tmp_path / kind)
        assert rows[0]["samples"] == 12 and any("train_loss" in r for r in rows)
    assert main(["train", "orm", "--kind", "prm", "--out", str(tmp_path / "x"), *common]) == 2  # kind is fixed
    out = tmp_path / "eval.json"
    # beam scores every step prefix it grows, so the learned PRM is read even when no sample is well formed
    assert main(["eval", "--model", sft_model, "--task-args", "op=add,max_level=2", "--levels", "1", "--per-level", "2",
                 "--strategy", "beam", "--n", "2", "--strategy-args", "beam_width=1,max_steps=2",
                 "--max-new-tokens", "24", "--verifier", str(tmp_path / "prm"), "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]["system2"]["overall"]
    assert res["n"] == 2 and res["mean_policy_tokens"] > 0 and res["mean_verifier_tokens"] > 0
    assert main(["eval", "--model", sft_model, "--levels", "1", "--per-level", "1", "--strategy", "best_of_n",
                 "--verifier", str(tmp_path / "nothing")]) == 2
    capsys.readouterr()
