"""Any reasoning-gym data set (Stojanovski et al. 2025) as a task: its generator, its difficulty levels, its scorer.

``--task reasoning_gym --task-args name=leg_counting`` wraps one data set; ``names=leg_counting:2+chain_sum:1``
a weighted mix (``name:weight`` items joined by ``+``, weight 1 when left out; ``,`` already separates
``--task-args`` items). Every other argument goes to the data set's own config (``max_animals=3``); in a mix, to
each data set whose config has that field. ``partial_credit=false`` makes the reward 0/1 (see *Scoring*).

Levels. A data set with a reasoning-gym curriculum gets one level per curriculum step: level ``L`` is the config
``curriculum.set_global_level(L - 1)`` generates, in reasoning-gym's default (inclusive) range mode, so level
``L`` draws every difficulty value from the lowest up to step ``L`` (leg_counting level 3: 1-3 kinds of animal,
2-16 of each). The number of levels is the longest attribute list of the curriculum (an attribute with fewer
steps stays at its last). A data set without a curriculum has one level, its default config. Arguments given
by the user win over the curriculum's values at every level. A mix at level ``L`` puts each member at
``min(L, its own levels)``; its levels run to the largest member's.

Problems. Each level is one reasoning-gym ``CompositeDataset`` (the library's weighted mix; one member for a
single data set) of ``pool`` entries (default 20,000), seeded once; ``sample(rng, level)`` draws an index with
``rng`` and takes that entry, so problems are a pure function of the seed, and a level has at most ``pool``
distinct problems (raise ``pool`` for long runs on a data set with room for more). A problem's ``key`` is ``data set:question``: the held-out split follows
the question, whichever level drew it. ``Problem.data`` holds the entry (question, answer, metadata).

Scoring. The data set's own ``score_answer`` scores the answer part of a completion: the text after
``</think>`` in System-2, the whole text in System-1. ``correct`` means a score of 1.0; ``reward`` is the raw
score (many data sets give partial credit, e.g. the default scorer gives ``len(oracle)/len(answer)`` when the
answer contains the oracle), or 0/1 with ``partial_credit=false``. A crash of the library's scorer on a
model's text scores as unreadable, like any answer the verifier cannot read.

References. System-1: the entry's answer. System-2: a worked solution built from the entry's metadata, for the
data sets in :data:`WORKED` (chain_sum, leg_counting, letter_counting); the task then has ``solution_lines``
(and step labels). Other data sets (or a mix containing one) have no System-2 reference: train System-2 by
bootstrapping from answers alone (``slowthink train star``).
"""

from __future__ import annotations

import dataclasses
import random
import re
from difflib import get_close_matches
from typing import Any

from .base import BaseTask, Problem, Score
from ..chat import Mode, check_mode, split_completion

TASK_NAME = "reasoning_gym"
OWN_ARGS = ("name", "names", "partial_credit", "pool")
RESERVED_FIELDS = ("seed", "size")  # set by the task: the generator's seed and its size (``pool``)
# Entries per level's generator. reasoning-gym data sets are indexed 0..size-1 and some work per entry up front
# (list_functions draws size task ids, acre builds size puzzles) or cap the size (word_ladder: 20,000), so the pool
# is finite: a level has at most ``pool`` distinct problems, a tenth of them held out.
DEFAULT_POOL = 20_000
DATASET_SEED = 0  # every level's generator seed: problems vary through the drawn index
MAX_ANSWER_CHARS = 2000  # a longer "answer" is not handed to the library's scorer (it may be slow on pages)


# -- worked solutions from an entry's metadata -------------------------------------------------------------
def chain_sum_lines(entry: dict) -> list[str]:
    """``15 - 43 - 75``: one running result per line, ``15 - 43 = -28`` then ``-28 - 75 = -103``; a single
    term is its own result."""
    terms = re.findall(r"(?:^|([+-]) )(-?[0-9]+)", entry["metadata"]["expression"].strip())
    total = int(terms[0][1])
    lines = [str(total)] if len(terms) == 1 else []
    for op, value in terms[1:]:
        new = total + int(value) if op == "+" else total - int(value)
        lines.append(f"{total} {op} {value} = {new}")
        total = new
    return lines


def leg_counting_lines(entry: dict) -> list[str]:
    """One line per kind of animal, ``4 grasshopper * 6 = 24`` (count, animal, its legs from reasoning-gym's
    own table, product), then one running sum per further kind, ``24 + 0 = 24``."""
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    animals = entry["metadata"]["animals"]
    products = [count * ANIMALS[animal] for animal, count in animals.items()]
    lines = [f"{count} {animal} * {ANIMALS[animal]} = {count * ANIMALS[animal]}" for animal, count in animals.items()]
    total = products[0]
    for p in products[1:]:
        lines.append(f"{total} + {p} = {total + p}")
        total += p
    return lines


def letter_counting_lines(entry: dict) -> list[str]:
    """One line per word of the text: the letter, the word, the word again with every other letter masked by
    ``.``, how often the letter occurs (ignoring case, as the data set counts) and the running total,
    ``e Gutenberg ......e... 1 1``. The letter opens each line and the mask sits beside the word, so each
    comparison is between characters a few positions apart (a small model does not keep the letter from the
    question in view over many words)."""
    meta = entry["metadata"]
    letter, total, lines = meta["target_letter"].lower(), 0, []
    for word in meta["span"]:
        n = word.lower().count(letter)
        total += n
        mask = "".join(c if c.lower() == letter else "." for c in word)
        lines.append(f"{letter} {word} {mask} {n} {total}")
    return lines


WORKED = {"chain_sum": chain_sum_lines, "leg_counting": leg_counting_lines, "letter_counting": letter_counting_lines}


# -- reading the arguments ---------------------------------------------------------------------------------
def dataset_names() -> list[str]:
    """reasoning-gym's data sets (its ``composite`` mixer left out: mixes are ``names=``)."""
    from reasoning_gym.factory import DATASETS

    return sorted(n for n in DATASETS if n != "composite")


def check_dataset_name(name: str) -> str:
    known = dataset_names()
    if name in known:
        return name
    close = get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else f"e.g. {', '.join(known[:6])}"
    raise ValueError(f"{TASK_NAME}: unknown data set {name!r} ({hint}; {len(known)} data sets in all, "
                     "listed by reasoning_gym.factory.DATASETS)")


def parse_mix(names: str) -> list[tuple[str, float]]:
    """``"leg_counting:2+chain_sum"`` -> ``[("leg_counting", 2.0), ("chain_sum", 1.0)]``."""
    out: list[tuple[str, float]] = []
    for item in str(names).split("+"):
        name, sep, weight_text = item.strip().partition(":")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise ValueError(f"{TASK_NAME}: names: weight {weight_text!r} of {name!r} is not a number "
                             "(write names=leg_counting:2+chain_sum:1)") from None
        if not weight > 0:
            raise ValueError(f"{TASK_NAME}: names: the weight of {name!r} must be > 0, got {weight_text!r}")
        out.append((check_dataset_name(name.strip()), weight))
    if len({n for n, _ in out}) != len(out):
        raise ValueError(f"{TASK_NAME}: names: a data set is named twice in {names!r}")
    return out


def config_fields(name: str) -> list[str]:
    from reasoning_gym.factory import DATASETS

    return [f.name for f in dataclasses.fields(DATASETS[name][1]) if f.name not in RESERVED_FIELDS]


def curriculum_steps(name: str) -> int:
    """How many difficulty levels the data set's curriculum has (1 without one)."""
    from reasoning_gym.factory import create_curriculum, has_curriculum

    if not has_curriculum(name):
        return 1
    attributes = create_curriculum(name).attributes.values()
    return max((len(a.levels) for a in attributes), default=1)


def level_config(name: str, level: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config fields of ``name`` at ``level`` (1-based curriculum step, see the module doc), with the user's
    ``overrides`` on top, checked by the data set's own ``validate``."""
    from reasoning_gym.factory import DATASETS, create_curriculum, has_curriculum

    config_cls = DATASETS[name][1]
    values: dict[str, Any] = {}
    if has_curriculum(name):
        curriculum = create_curriculum(name)
        curriculum.set_global_level(min(level, curriculum_steps(name)) - 1)
        generated = curriculum.generate_configuration()
        values = {f: getattr(generated, f) for f in config_fields(name)}
    values.update(overrides)
    try:
        config = config_cls(**values)
        if hasattr(config, "validate"):
            config.validate()
    except Exception as e:  # noqa: BLE001 - the library checks with assert/ValueError; name what was asked
        raise ValueError(f"{TASK_NAME}: data set {name!r} at level {level} rejects the config "
                         f"{_short(values)}: {type(e).__name__}: {e}") from None
    return values


def _short(values: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())[:300]


# -- the task ----------------------------------------------------------------------------------------------
class ReasoningGym(BaseTask):
    """Any reasoning-gym data set (name=leg_counting) or weighted mix (names=leg_counting:2+chain_sum:1), scored
    by the data set's own score_answer; levels from its curriculum."""

    name = TASK_NAME

    def __init__(self, name: str = "", names: str = "", partial_credit: bool = True, pool: int = DEFAULT_POOL,
                 **config: Any):
        if bool(name) == bool(names):
            raise ValueError(f"{TASK_NAME}: give exactly one of name=DATA_SET (e.g. name=leg_counting) or "
                             f"names=A:WEIGHT+B:WEIGHT (e.g. names=leg_counting:2+chain_sum:1); got name={name!r}, "
                             f"names={names!r}")
        self.mix = parse_mix(names) if names else [(check_dataset_name(str(name)), 1.0)]
        self.partial_credit = bool(partial_credit)
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ValueError(f"{TASK_NAME}: pool must be a whole number >= 1 (entries per level), got {pool!r}")
        self.pool = pool
        self.config = dict(config)
        self.overrides = self._route_config(self.config)
        self.steps_of = {n: curriculum_steps(n) for n, _ in self.mix}
        self.levels = tuple(range(1, max(self.steps_of.values()) + 1))
        # every level's config is checked now, so a bad value fails when the task loads, not mid-run
        self.configs = {level: self._configs_at(level) for level in self.levels}
        self._datasets: dict[int, Any] = {}
        if all(n in WORKED for n, _ in self.mix):
            self.solution_lines = self._worked_lines  # only then: BaseTask builds System-2 references from it

    def _route_config(self, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Each extra argument to every member data set whose config has that field; one no member has is an
        error listing what they accept."""
        fields = {n: config_fields(n) for n, _ in self.mix}
        bad = [k for k in config if k in RESERVED_FIELDS or not any(k in f for f in fields.values())]
        if bad:
            accepted = "; ".join(f"{n}: {', '.join(f)}" for n, f in fields.items())
            raise ValueError(f"{TASK_NAME}: unknown config key(s) {', '.join(bad)} (seed and size are set by the "
                             f"task). Accepted: {accepted}; and the task's own {', '.join(OWN_ARGS)}")
        return {n: {k: v for k, v in config.items() if k in f} for n, f in fields.items()}

    def _configs_at(self, level: int) -> dict[str, dict[str, Any]]:
        return {n: level_config(n, min(level, self.steps_of[n]), self.overrides[n]) for n, _ in self.mix}

    def dataset(self, level: int):
        """Level ``level``'s generator: a reasoning-gym CompositeDataset of the members at their level's config."""
        if level not in self._datasets:
            from reasoning_gym.composite import CompositeConfig, CompositeDataset, DatasetSpec

            specs = [DatasetSpec(name=n, weight=w, config=dict(self.configs[level][n])) for n, w in self.mix]
            try:
                self._datasets[level] = CompositeDataset(CompositeConfig(size=self.pool, seed=DATASET_SEED,
                                                                         datasets=specs))
            except Exception as e:  # noqa: BLE001 - e.g. a data set that caps its size below pool
                raise ValueError(f"{TASK_NAME}: creating level {level}'s generator ({', '.join(n for n, _ in self.mix)}"
                                 f", pool={self.pool}) failed with {type(e).__name__}: {e}") from e
        return self._datasets[level]

    # -- generation ----------------------------------------------------------------------------------------
    def sample(self, rng: random.Random, level: int) -> Problem:
        self.check_level(level)
        entry = self.dataset(level)[rng.randrange(self.pool)]
        source = entry["metadata"]["source_dataset"]
        return Problem(key=f"{source}:{entry['question']}", level=level, question=entry["question"],
                       answer=str(entry["answer"]), data={"source_dataset": source, "entry": entry})

    def parse_question(self, question: str) -> Problem:
        """A typed question, put to the model as it is. Its answer is unknown (the generator made the answers),
        so it is solved but not scored."""
        if not question.strip():
            raise ValueError(f"{TASK_NAME}: the question is empty")
        source = self.mix[0][0] if len(self.mix) == 1 else None
        return Problem(key=f"{source}:{question}", level=self.levels[0], question=question, answer=None,
                       data={"source_dataset": source})

    def _worked_lines(self, problem: Problem) -> list[str]:
        entry = problem.data["entry"]
        return WORKED[entry["metadata"]["source_dataset"]](entry)

    # -- verification --------------------------------------------------------------------------------------
    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        parts = split_completion(completion, check_mode(mode))
        answer = parts.answer_text
        readable = parts.well_formed and bool(answer) and len(answer) <= MAX_ANSWER_CHARS
        if not readable:
            return Score(reward=0.0, answer=None, well_formed=False, correct=False)
        if problem.answer is None or "entry" not in problem.data:  # a typed question: nothing to score against
            return Score(reward=0.0, answer=answer, well_formed=True, correct=False)
        raw = self.raw_score(problem, answer)
        correct = raw >= 1.0
        reward = raw if self.partial_credit else float(correct)
        return Score(reward=reward, answer=answer, well_formed=True, correct=correct)

    def raw_score(self, problem: Problem, answer: str) -> float:
        """The data set's own ``score_answer`` of ``answer`` (0.0 when the library's scorer raises on it)."""
        try:
            value = float(self.dataset(problem.level).score_answer(answer, problem.data["entry"]))
        except Exception:  # noqa: BLE001 - the library's code on a model's text: an unreadable answer
            return 0.0
        return min(max(value, 0.0), 1.0) if value == value else 0.0  # NaN and out-of-range scores are clamped
