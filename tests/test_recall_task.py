"""The recall task: facts, the query, the sliding window and the sessions a memory-tool episode answers."""

import random

import pytest

from slowthink.chat import Mode
from slowthink.tasks import get_task
from slowthink.tasks.recall import STORED, Recall


def test_registered_and_validated():
    task = get_task("recall", max_facts=8)
    assert task.levels == tuple(range(2, 9))


def test_problem_shape_and_query_in_first_half():
    task = Recall(max_facts=16)
    for seed in range(50):
        p = task.sample(random.Random(seed), 10)
        facts = p.data["facts"]
        assert len(facts) == 10 and len({k for k, _ in facts}) == 10
        assert p.data["query"] < 5
        key, value = facts[p.data["query"]]
        assert p.answer == value and p.question.endswith(f";?{key}")
        assert p.question.count("=") == 10


def test_reference_scores_and_wrong_answers_do_not():
    task = Recall()
    p = task.sample(random.Random(1), 6)
    for mode in (Mode.SYSTEM1, Mode.SYSTEM2):
        assert task.score(p, task.reference(p, mode).completion(), mode).correct
    key, value = p.data["facts"][p.data["query"]]
    assert task.reference(p, Mode.SYSTEM2).reasoning == f"{key}={value}"
    other = next(v for k, v in p.data["facts"] if v != value)
    assert not task.score(p, f"x\n</think>\n\n{other}", Mode.SYSTEM2).correct
    assert not task.score(p, f"{value}", Mode.SYSTEM2).well_formed  # no closed think block
    assert not task.score(p, STORED, Mode.SYSTEM1).correct  # "ok" answers a fact session only


def test_window_drops_oldest_facts_and_keeps_query():
    task = Recall()
    p = task.sample(random.Random(2), 12)
    w = task.window(p, 4)
    assert w.question.count("=") == 4 and w.answer == p.answer
    assert w.question.split(";")[:4] == p.question.split(";")[8:12]
    assert w.question.endswith(p.question.rsplit(";", 1)[1])
    key = p.data["facts"][p.data["query"]][0]
    assert f"{key}=" not in w.question  # the queried fact (first half) fell out of the window
    assert task.window(p, 100).question == p.question
    with pytest.raises(ValueError, match="keep"):
        task.window(p, -1)


def test_sessions_one_per_fact_then_query():
    task = Recall()
    p = task.sample(random.Random(3), 5)
    sessions = task.sessions(p)
    assert len(sessions) == 6
    for s, (k, v) in zip(sessions, p.data["facts"]):
        assert s.question == f"{k}={v}" and s.answer == STORED and s.data["chain"] == p.key
        assert task.score(s, f"\n</think>\n\n{STORED}", Mode.SYSTEM2).correct
    last = sessions[-1]
    assert last.question == f"?{p.data['facts'][p.data['query']][0]}" and last.answer == p.answer
    assert len({s.key for s in sessions}) == 6


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="max_facts"):
        Recall(max_facts=1)
    with pytest.raises(ValueError, match="max_facts"):
        Recall(max_facts="8")
