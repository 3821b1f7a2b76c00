"""Countdown: reach a target from given numbers with + - * / (TinyZero, Stream-of-Search).

Level n means n numbers are given (levels 2..6 by default). Each given number may be used at most
once and not all need be used. The user message is::

    Numbers: 3 7 25 50
    Target: 178

(numbers sorted ascending). The final answer, in both modes, is one expression over the given
numbers, e.g. ``(50-25)*7+3``. The System-2 worked solution writes one step per line, each
``a<op>b=c`` in the order the generating expression is evaluated, larger operand first::

    50-25=25
    25*7=175
    175+3=178
    </think>

    (50-25)*7+3

Verification (``score``): the answer must consist of non-negative integer literals, ``+ - * /``,
parentheses and spaces only (no unary signs, no ``**``, at most ``MAX_ANSWER_CHARS`` characters,
``MAX_DEPTH`` nested parentheses and ``MAX_DIGITS`` digits per literal). It is parsed by a small
recursive-descent parser (never ``eval``) and evaluated with exact ``Fraction`` arithmetic. It is
correct when it uses each number at most as often as it was given and its value equals the target
exactly. Intermediate values may be fractions or negative (``(7/2)*4`` reaches 14): only the final
value counts, as in TinyZero. Division by zero makes an answer well formed but not correct.

Step labels (``step_labels``): a step is correct when

1. it parses as ``a<op>b=c`` with non-negative integers (spaces allowed),
2. its arithmetic is exact (``a/b=c`` needs ``b*c == a``; a negative or fractional result cannot be
   written in this format, so such a step is wrong),
3. both operands are available: a given number not yet used, or the result of an earlier step not
   yet consumed (the step consumes ``a`` and ``b`` and makes ``c`` available),
4. the target is still reachable from the available numbers with steps of this format
   (or is already among them), and
5. every earlier step was correct.

``Countdown.make_problem(numbers, target)`` turns a given instance (e.g. from a TinyZero-style
dataset) into a Problem, its worked solution found by ``solve``.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

from .base import BaseTask, Problem, Score
from ..chat import Mode, check_mode, split_completion

MAX_ANSWER_CHARS = 200
MAX_DEPTH = 16
MAX_DIGITS = 6
MAX_INTERMEDIATE = 10_000  # generator bound on step results, keeps worked solutions short
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
STEP = re.compile(r"\s*([0-9]{1,7})\s*([-+*/])\s*([0-9]{1,7})\s*=\s*([0-9]{1,7})\s*")
QUESTION = re.compile(r"numbers:\s*([0-9 ]+?)\s*target:\s*([0-9]+)", re.IGNORECASE)  # typed: Numbers: 3 7 Target: 21
INSTRUCTION = ("Use the numbers below, each at most once, with + - * / and parentheses to make an "
               "expression equal to the target. Answer with the expression only.\n")


class ParseError(ValueError):
    """The answer is not a well-formed expression over the allowed tokens."""


# -- expressions: a node is an int or a tuple (op, left, right) -------------------------------------
def tokenize(text: str) -> list[str]:
    """Integer literals and single-character operators/parentheses; anything else is an error."""
    tokens, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == " ":
            i += 1
        elif ch in "0123456789":
            j = i
            while j < len(text) and text[j] in "0123456789":
                j += 1
            if j - i > MAX_DIGITS:
                raise ParseError(f"number with more than {MAX_DIGITS} digits")
            tokens.append(text[i:j])
            i = j
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        else:
            raise ParseError(f"character {ch!r} not allowed")
    return tokens


def parse_expression(text: str):
    """Parse ``text`` into a tree; raises ParseError on anything but a well-formed expression.

    Grammar: expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := INT | '(' expr ')'. No unary signs.
    """
    if len(text) > MAX_ANSWER_CHARS:
        raise ParseError(f"expression longer than {MAX_ANSWER_CHARS} characters")
    tokens = tokenize(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expr(depth: int):
        node = term(depth)
        while peek() in ("+", "-"):
            node = (take(), node, term(depth))
        return node

    def term(depth: int):
        node = factor(depth)
        while peek() in ("*", "/"):
            node = (take(), node, factor(depth))
        return node

    def factor(depth: int):
        tok = peek()
        if tok is None:
            raise ParseError("unexpected end of expression")
        if tok == "(":
            if depth >= MAX_DEPTH:
                raise ParseError(f"more than {MAX_DEPTH} nested parentheses")
            take()
            node = expr(depth + 1)
            if peek() != ")":
                raise ParseError("unbalanced parentheses")
            take()
            return node
        if tok.isdigit():
            return int(take())
        raise ParseError(f"unexpected {tok!r}")

    if not tokens:
        raise ParseError("empty expression")
    tree = expr(0)
    if pos != len(tokens):
        raise ParseError(f"unexpected {tokens[pos]!r}")
    return tree


def leaves(node) -> list[int]:
    if isinstance(node, int):
        return [node]
    return leaves(node[1]) + leaves(node[2])


def evaluate(node) -> Fraction | None:
    """Exact value of a tree; None on division by zero."""
    if isinstance(node, int):
        return Fraction(node)
    op, left, right = node
    a, b = evaluate(left), evaluate(right)
    if a is None or b is None:
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def format_expression(node) -> str:
    """A tree as text with only the parentheses it needs."""
    if isinstance(node, int):
        return str(node)
    op, left, right = node
    ls, rs = format_expression(left), format_expression(right)
    if not isinstance(left, int) and PRECEDENCE[left[0]] < PRECEDENCE[op]:
        ls = f"({ls})"
    if not isinstance(right, int) and (PRECEDENCE[right[0]] < PRECEDENCE[op]
                                       or (PRECEDENCE[right[0]] == PRECEDENCE[op] and op in "-/")):
        rs = f"({rs})"
    return f"{ls}{op}{rs}"


def apply_op(a: int, op: str, b: int) -> int | None:
    """Result of one step if it is a non-negative integer, else None."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a >= b else None
    return a // b if b != 0 and a % b == 0 else None


def solve(pool: tuple[int, ...], target: int, memo: dict | None = None) -> list[tuple[int, str, int, int]] | None:
    """Steps ``(a, op, b, c)`` with positive-integer results that make ``target`` from ``pool``
    (``[]`` when it is already there), or None when there are none. Depth-first, failures memoised."""
    memo = {} if memo is None else memo
    key = tuple(sorted(pool))
    if target in key:
        return []
    if key in memo:
        return None
    n = len(key)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = key[j], key[i]  # a >= b
            rest = key[:i] + key[i + 1:j] + key[j + 1:]
            for op in "+*-/":
                c = apply_op(a, op, b)
                if c is None or c <= 0:
                    continue
                found = solve(rest + (c,), target, memo)
                if found is not None:
                    return [(a, op, b, c)] + found
    memo[key] = None
    return None


def reachable(pool: tuple[int, ...], target: int, memo: dict | None = None) -> bool:
    """Whether ``target`` is in the pool or can be made from it with positive-integer steps."""
    return solve(pool, target, memo) is not None


def steps_to_tree(numbers: list[int], steps: list[tuple[int, str, int, int]]):
    """The expression tree of the last step of a valid step list over ``numbers``."""
    trees: dict[int, list] = {}
    for v in numbers:
        trees.setdefault(v, []).append(v)
    node = None
    for a, op, b, c in steps:
        left, right = trees[a].pop(), trees[b].pop()
        node = (op, left, right)
        trees.setdefault(c, []).append(node)
    return node


class Countdown(BaseTask):
    """Reach the target from the given numbers with + - * / (each at most once); level = how many numbers."""

    name = "countdown"

    def __init__(self, max_level: int = 6, max_number: int = 99, max_target: int = 999,
                 instruction: bool = False):
        if not 2 <= int(max_level) <= 6:  # step_labels' reachability search grows fast past 6
            raise ValueError(f"countdown: max_level must be in 2..6, got {max_level!r}")
        if not 10 <= int(max_number) <= 999:
            raise ValueError(f"countdown: max_number must be in 10..999, got {max_number!r}")
        if not 10 <= int(max_target) <= 99_999:
            raise ValueError(f"countdown: max_target must be in 10..99999, got {max_target!r}")
        self.levels = tuple(range(2, int(max_level) + 1))
        self.max_number = int(max_number)
        self.max_target = int(max_target)
        self.instruction = bool(instruction)

    # -- generation -----------------------------------------------------------------------------
    def _draw_number(self, rng: random.Random) -> int:
        return rng.randint(1, 10) if rng.random() < 0.4 else rng.randint(1, self.max_number)

    def _try_sample(self, rng: random.Random, level: int):
        numbers = [self._draw_number(rng) for _ in range(level)]
        used = rng.sample(numbers, rng.randint(max(2, level - 1), level))
        pool: list[tuple[int, object]] = [(v, v) for v in used]
        steps: list[tuple[int, str, int, int]] = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            (a, ea), (b, eb) = pool[i], pool[j]
            if a < b:
                (a, ea), (b, eb) = (b, eb), (a, ea)
            ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
            op = rng.choice(ops)
            c = apply_op(a, op, b)
            if c is None or c > MAX_INTERMEDIATE:
                return None
            steps.append((a, op, b, c))
            pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [(c, (op, ea, eb))]
        target, tree = pool[0]
        if not 1 <= target <= self.max_target or target in numbers:
            return None
        return sorted(numbers), target, steps, tree

    def sample(self, rng: random.Random, level: int) -> Problem:
        self.check_level(level)
        while True:
            out = self._try_sample(rng, level)
            if out is not None:
                break
        return self._problem(*out)

    def _problem(self, numbers: list[int], target: int, steps: list, tree) -> Problem:
        nums = " ".join(map(str, numbers))
        question = f"{INSTRUCTION if self.instruction else ''}Numbers: {nums}\nTarget: {target}"
        return Problem(key=f"{nums}->{target}", level=len(numbers), question=question,
                       answer=format_expression(tree), data={"numbers": numbers, "target": target, "steps": steps})

    def make_problem(self, numbers: list[int], target: int) -> Problem:
        """A problem from given numbers and target (e.g. from a dataset); its reference solution is
        found by search. Raises ValueError when the target cannot be reached."""
        numbers = sorted(int(x) for x in numbers)
        if not 2 <= len(numbers) <= 6 or min(numbers) < 1 or int(target) < 1:
            raise ValueError(f"countdown: need 2..6 positive numbers and a positive target, got {numbers} -> {target}")
        target = int(target)
        steps = solve(tuple(numbers), target)
        if steps is None:
            raise ValueError(f"countdown: {target} cannot be reached from {numbers}")
        return self._problem(numbers, target, steps, steps_to_tree(numbers, steps) if steps else target)

    def parse_question(self, question: str) -> Problem:
        """A typed question, ``Numbers: 3 7 25 50 Target: 178`` (on one line or two, as the task writes it)."""
        m = QUESTION.fullmatch(question.removeprefix(INSTRUCTION).strip())
        if m is None:
            raise ValueError(f"not a countdown question like 'Numbers: 3 7 25 50 Target: 178': {question!r}")
        return self.make_problem([int(x) for x in m[1].split()], int(m[2]))

    def solution_lines(self, problem: Problem) -> list[str]:
        return [f"{a}{op}{b}={c}" for a, op, b, c in problem.data["steps"]]

    # -- verification ---------------------------------------------------------------------------
    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        parts = split_completion(completion, check_mode(mode))
        if not parts.well_formed or not parts.answer_text:
            return Score(reward=0.0, answer=None, well_formed=False)
        text = parts.answer_text
        try:
            tree = parse_expression(text)
        except ParseError:
            return Score(reward=0.0, answer=None, well_formed=False)
        answer = text.replace(" ", "")
        available = Counter(problem.data["numbers"])
        correct = not (Counter(leaves(tree)) - available) and evaluate(tree) == problem.data["target"]
        return Score(reward=1.0 if correct else 0.0, answer=answer, well_formed=True, correct=correct)

    def step_labels(self, problem: Problem, reasoning: str) -> list[bool]:
        target = problem.data["target"]
        pool = Counter(problem.data["numbers"])
        memo: dict = {}
        labels, ok = [], True
        for line in self.steps(reasoning):
            if ok:
                m = STEP.fullmatch(line)
                if m is None:
                    ok = False
                else:
                    a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
                    need = Counter([a, b])
                    ok = apply_op(a, op, b) == c and not (need - pool)
                    if ok:
                        pool = pool - need + Counter([c])
                        ok = reachable(tuple(pool.elements()), target, memo)
            labels.append(ok)
        return labels
