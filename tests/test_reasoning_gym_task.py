"""The reasoning_gym task: reasoning-gym data sets as slowthink tasks (generation, levels, scoring, mixes, errors),
and a few SFT steps and a GRPO step on one with a tiny model."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

pytest.importorskip("reasoning_gym")

from reasoning_gym.arithmetic.leg_counting import ANIMALS  # noqa: E402
from reasoning_gym.factory import create_dataset  # noqa: E402

from slowthink.chat import Mode  # noqa: E402
from slowthink.tasks import TaskError, get_task, parse_task_args  # noqa: E402
from slowthink.tasks.base import heldout_bucket, problem_from_question  # noqa: E402
from slowthink.tasks.reasoning_gym import WORKED, ReasoningGym  # noqa: E402

S1, S2 = Mode.SYSTEM1, Mode.SYSTEM2


def draw(task, seed: int, level: int, n: int = 20):
    rng = random.Random(seed)
    return [task.sample(rng, level) for _ in range(n)]


@pytest.fixture(scope="module")
def legs():
    return get_task("reasoning_gym", name="leg_counting")


def test_problems_are_deterministic_in_the_seed(legs):
    a, b = draw(legs, 7, 3), draw(get_task("reasoning_gym", name="leg_counting"), 7, 3)
    assert [(p.key, p.question, p.answer) for p in a] == [(p.key, p.question, p.answer) for p in b]
    assert [p.question for p in draw(legs, 8, 3)] != [p.question for p in a]
    p = a[0]
    assert p.key == f"leg_counting:{p.question}" and p.data["entry"]["answer"] == p.answer


def test_heldout_split_is_disjoint_and_fixed(legs):
    rng = random.Random(0)
    train = [legs.sample_split(rng, 2, "train") for _ in range(200)]
    held = legs.heldout_set(per_level=30, levels=(2,))
    assert len(held) == 30 and all(heldout_bucket(p.key) == 0 and p.level == 2 for p in held)
    assert not {p.key for p in train} & {p.key for p in held}
    assert [p.key for p in legs.heldout_set(per_level=30, levels=(2,))] == [p.key for p in held]


def test_scoring_uses_the_data_sets_own_score_answer_in_both_modes(legs):
    p = draw(legs, 1, 3, 1)[0]
    ref = legs.reference(p, S2)
    assert ref.reasoning and ref.answer == p.answer
    right = {S1: p.answer, S2: ref.completion()}
    for mode in (S1, S2):
        s = legs.score(p, right[mode], mode)
        assert s.correct and s.well_formed and s.reward == 1.0 and s.answer == p.answer
        empty = legs.score(p, "" if mode == S1 else "some thought\n</think>\n\n", mode)
        assert not empty.correct and empty.reward == 0.0 and empty.answer is None
        wrong = str(int(p.answer) + 1)
        s = legs.score(p, wrong if mode == S1 else f"x\n</think>\n\n{wrong}", mode)
        assert not s.correct and s.well_formed and s.answer == wrong
    # the answer part is what score_answer sees: partial credit is the library's own
    scorer = create_dataset("leg_counting", seed=0, size=1).score_answer
    padded = f"{p.answer} legs"
    expected = scorer(padded, p.data["entry"])
    assert 0 < expected < 1
    assert legs.score(p, padded, S1).reward == pytest.approx(expected)
    assert legs.score(p, f"thinking\n</think>\n\n{padded}", S2).reward == pytest.approx(expected)
    assert not legs.score(p, padded, S1).correct
    strict = get_task("reasoning_gym", name="leg_counting", partial_credit=False)
    assert strict.score(p, padded, S1).reward == 0.0 and strict.score(p, p.answer, S1).reward == 1.0
    # the format still counts: no </think> in System-2, a think block in System-1
    assert not legs.score(p, p.answer, S2).well_formed
    assert not legs.score(p, f"</think>{p.answer}", S1).well_formed


def test_levels_follow_the_curriculum_and_user_arguments_win(legs):
    assert legs.levels == tuple(range(1, 37))  # leg_counting's curriculum: 36 steps of num_animals
    kinds = {lv: {len(p.data["entry"]["metadata"]["animals"]) for p in draw(legs, 0, lv, 60)} for lv in (1, 3)}
    assert kinds[1] == {1} and kinds[3] == {1, 2, 3}
    counts = [c for p in draw(legs, 0, 3, 60) for c in p.data["entry"]["metadata"]["animals"].values()]
    assert max(counts) > 8 and max(counts) <= 16  # level 3: 2..16 of each kind
    capped = get_task("reasoning_gym", name="leg_counting", max_animals=1, max_instances=3)
    assert all(len(p.data["entry"]["metadata"]["animals"]) == 1 and max(p.data["entry"]["metadata"]["animals"]
               .values()) <= 3 for p in draw(capped, 0, 10, 30))
    no_curriculum = get_task("reasoning_gym", name="list_functions")
    assert no_curriculum.levels == (1,)
    assert not hasattr(no_curriculum, "solution_lines") and no_curriculum.reference(draw(no_curriculum, 0, 1, 1)[0],
                                                                                     S2) is None


@pytest.mark.parametrize("name,level", [("chain_sum", 3), ("leg_counting", 4), ("letter_counting", 2)])
def test_worked_solutions_reach_the_answer_and_label_correct(name, level):
    task = get_task("reasoning_gym", name=name)
    assert name in WORKED
    for p in draw(task, 3, level, 40):
        lines = task.solution_lines(p)
        assert lines and re.findall(r"-?[0-9]+", lines[-1])[-1] == p.answer
        assert task.step_labels(p, "\n".join(lines)) == [True] * len(lines)
        assert task.score(p, task.reference(p, S2).completion(), S2).correct
    p = draw(task, 3, level, 1)[0]
    if name == "leg_counting":  # legs per animal from reasoning-gym's own table
        animal, count = next(iter(p.data["entry"]["metadata"]["animals"].items()))
        assert task.solution_lines(p)[0] == f"{count} {animal} * {ANIMALS[animal]} = {count * ANIMALS[animal]}"
    if name == "letter_counting":  # the letter, the word, the word with every other letter masked, count, total
        meta = p.data["entry"]["metadata"]
        letter, word = meta["target_letter"].lower(), meta["span"][0]
        first = task.solution_lines(p)[0].split(" ")
        assert first[:2] == [letter, word] and len(first[2]) == len(word)
        assert int(first[3]) == first[2].lower().count(letter) == word.lower().count(letter) == int(first[4])
        assert set(first[2].lower()) <= {letter, "."}


def test_weighted_mix():
    args = parse_task_args("names=leg_counting:3+chain_sum:1,max_animals=2")  # the --task-args syntax
    mix = get_task("reasoning_gym", **args)
    assert mix.levels == tuple(range(1, 37))  # the longest member's
    problems = draw(mix, 0, 3, 300)
    sources = Counter(p.data["source_dataset"] for p in problems)
    assert set(sources) == {"leg_counting", "chain_sum"} and sources["leg_counting"] > 2 * sources["chain_sum"]
    for p in problems:  # each scored by its own data set; max_animals only reaches leg_counting
        assert mix.score(p, mix.reference(p, S2).completion(), S2).correct
        if p.data["source_dataset"] == "leg_counting":
            assert len(p.data["entry"]["metadata"]["animals"]) <= 2
    chain_at_20 = [p for p in draw(mix, 0, 20, 200) if p.data["source_dataset"] == "chain_sum"]
    assert chain_at_20 and all(p.data["entry"]["metadata"]["num_terms"] <= 12 for p in chain_at_20)
    # a member without a worked-solution formatter: no System-2 reference for the mix
    partial = get_task("reasoning_gym", names="chain_sum+spell_backward")
    assert not hasattr(partial, "solution_lines")
    assert {partial.reference(p, S2) is None for p in draw(partial, 0, 2, 40)} == {True}


def test_typed_question_is_solved_not_scored(legs):
    p = problem_from_question(legs, "how many legs are there in total if you have 3 cats?")
    assert p.answer is None and p.question.endswith("3 cats?")
    s = legs.score(p, "12", S1)
    assert not s.correct and s.answer == "12"
    with pytest.raises(ValueError, match="empty"):
        legs.parse_question("  ")


@pytest.mark.parametrize("args,message", [
    ({"name": "leg_count"}, r"unknown data set 'leg_count' \(close names: leg_counting"),
    ({"name": "leg_counting", "max_animal": 3}, r"unknown config key\(s\) max_animal.*max_animals"),
    ({"name": "leg_counting", "seed": 3}, r"unknown config key\(s\) seed"),
    ({"name": "leg_counting", "min_animals": 5, "max_animals": 2}, r"rejects the config.*max_animals must be"),
    ({}, "give exactly one of name="),
    ({"name": "chain_sum", "names": "chain_sum"}, "give exactly one of name="),
    ({"names": "chain_sum:x"}, "weight 'x' of 'chain_sum' is not a number"),
    ({"names": "chain_sum:0"}, "must be > 0"),
    ({"names": "chain_sum+chain_sum"}, "named twice"),
    ({"names": "chain_sum+leg_countin"}, "close names: leg_counting"),
])
def test_errors_name_the_problem(args, message):
    with pytest.raises(TaskError, match=message):
        get_task("reasoning_gym", **args)


def test_sft_then_grpo_on_a_reasoning_gym_task(tmp_path, tok):
    import torch

    from slowthink.models import build_model
    from slowthink.rl.grpo import GRPOConfig, train as grpo_train
    from slowthink.tasks.record import read_record
    from slowthink.train.runlog import read_metrics
    from slowthink.train.sft import SFTConfig, train as sft_train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = ReasoningGym(name="chain_sum")
        sft = SFTConfig(out=str(tmp_path / "sft"), task="reasoning_gym", task_args={"name": "chain_sum"}, levels=[1],
                        steps=4, batch_size=8, lr=3e-3, optimizer="adamw", warmup_steps=1, system2_fraction=0.5,
                        micro_batches=1, eval_every=0, eval_per_level=0, checkpoint_every=1000, threads=1,
                        progress=False)
        sft_train(sft, task=task, model=build_model("tiny", tok, seed=0), tok=tok)
        model = tmp_path / "sft" / "model"
        record = read_record(model)
        assert record.task == "reasoning_gym" and record.task_args == {"name": "chain_sum"}
        assert record.levels == (1,) and set(record.modes) == {"system1", "system2"}
        losses = [r["loss"] for r in read_metrics(tmp_path / "sft") if "loss" in r]
        assert losses and all(l == l and l > 0 for l in losses)

        rl = GRPOConfig(out=str(tmp_path / "rl"), init=str(model), steps=1, prompts_per_step=2, group_size=4,
                        max_new_tokens=24, eval_per_level=4, lr=1e-4, threads=1, progress=False)
        grpo_train(rl)  # the task comes from the SFT model's task.json
        assert read_record(tmp_path / "rl" / "model").task == "reasoning_gym"
        rows = [r for r in read_metrics(tmp_path / "rl") if "reward_mean" in r]
        assert [r["step"] for r in rows] == [1] and rows[0]["samples"] == 2 * 4
        assert 0.0 <= rows[0]["reward_mean"] <= 1.0 + rl.format_reward
        evals = [r for r in read_metrics(tmp_path / "rl") if "eval/system2_pass@1" in r]
        assert [r["step"] for r in evals] == [0, 1] and evals[0]["eval/system2_n"] == 4
    finally:
        torch.set_num_threads(threads)

