"""Arithmetic: n-digit addition and multiplication, with a worked-solution format a tiny model can learn.

Level n means both operands have n digits. The user message is the bare expression (``347*862``) and
the final answer is the integer in plain decimal.

Worked solutions write every number least-significant digit first, in column-aligned cells, so that
each digit the model writes depends on a few digits at a *constant* distance back. Lee et al. (2023)
show that reversal decides whether small transformers learn arithmetic at all; the cells are our
addition (dev/LOG.md has the measurements). The formats, chosen with ``cot=``:

``cells`` (default): every column is a two-digit cell ``carry*10 + digit``, so carries are written out
and each digit is a function of three inputs at fixed offsets. For ``347*862``::

    7,4,3*2,6,8                   operands, reversed
    2:140906000000 040906000000   digit of b : a*2 shifted (cells) | running sum (cells)
    6:004228200200 041115010200
    8:000056372702 040111090902
    </think>

    299114

``compact``: partial products and running sums reversed and zero-padded, carries implicit::

    743*268
    2:496000 496000
    6:028020 415120
    8:006772 411992

``chain``: the sub-problems themselves in plain decimal, ``question=result`` per line (``chain_solution``);
made for the zero-start experiment, where a model that answers the sub-problems directly learns to chain
them.

``restate=true`` opens any format with the question written again on its own line: a model trained on it
copies the whole question, which is what a calculator call on it needs (``benchmarks/tool_rl.py``).

Every line is one step; ``step_labels`` marks a step correct when it and every step before it match
the unique correct derivation (after a wrong step the right answer can no longer follow).
"""

from __future__ import annotations

import random
import re

from .base import BaseTask, Claim, Problem, Score
from ..chat import Mode, check_mode, split_completion

OPS = {"add": "+", "mul": "*"}
COT_FORMATS = ("cells", "mac", "compact", "chain")
# square: level n = both operands have n digits (the task's problems). steps: the sub-problems a worked
# multiplication is made of, n-digit times one digit (0-9) and n-digit plus 1..n digits (written zero-padded
# to n digits, "7300+0825"); a model trained on them checks the steps of another model's solutions
# (slowthink/critics/recompute.py).
OPERAND_SHAPES = ("square", "steps")
ROW = re.compile(r"([0-9]):([0-9]+) ([0-9]+)")  # a multiplication row: digit of b : partial product, running sum
CHAIN_LINE = re.compile(r"([0-9]+[*+][0-9]+)=([0-9]+)")  # a chain step: a sub-problem and its result
QUESTION = re.compile(r"([0-9]+) *([*+]) *([0-9]+)")  # a question typed by a user: 47*86, 12 + 5
INTEGER = re.compile(r"-?[0-9]+")  # ASCII only: \d would also accept "１２" (full-width)
MAX_ANSWER_CHARS = 64  # longer "answers" are malformed, not parsed (guards against huge-number spam)


def rev(n: int, width: int) -> str:
    """Digits of n, least significant first, zero-padded to width."""
    return str(n)[::-1].ljust(width, "0")


def parse_integer_answer(text: str | None) -> int | None:
    """The answer as an int if the text is exactly one integer, else None."""
    if text is None:
        return None
    text = text.strip()
    if not text or len(text) > MAX_ANSWER_CHARS or not INTEGER.fullmatch(text):
        return None
    return int(text)



def digit_range(n: int) -> tuple[int, int]:
    """Smallest and largest n-digit number (1..9 for one digit)."""
    return (1, 9) if n == 1 else (10 ** (n - 1), 10**n - 1)


def add_question(a: int, b: int) -> str:
    """How the task writes ``a + b``: ``b`` zero-padded to ``a``'s width (``682+004``)."""
    return f"{a}+{b:0{len(str(a))}d}"


def sum_question(x: int, y: int) -> str:
    """A running sum plus a shifted partial product as a claim: the larger first, the other zero-padded to its
    width (``7300+1825``, ``2058+0000``)."""
    big, small = max(x, y), min(x, y)
    return add_question(big, small)


def digits(n: int, width: int) -> list[int]:
    """Digits of n, least significant first, zero-padded to width."""
    return [int(c) for c in rev(n, width)]


def cells_solution(a: int, b: int, op: str) -> list[str]:
    """Column-aligned two-digit cells: every digit is a function of three inputs at fixed distances.

    Each cell is ``carry*10 + digit`` of one column, so the carry into the next column is written out
    (the tens of the cell to the left) instead of being recomputed from the whole prefix.
    """
    sa, sb = str(a), str(b)
    if op == "add":  # a shorter addend is zero-padded, so a column's digits sit at a fixed distance
        sa, sb = sa.zfill(len(sb)), sb.zfill(len(sa))
    header = f"{','.join(sa[::-1])}{OPS[op]}{','.join(sb[::-1])}"
    if op == "add":
        width = max(len(sa), len(sb)) + 1
        da, db, row, carry = digits(a, width), digits(b, width), [], 0
        for j in range(width):
            t = da[j] + db[j] + carry
            row.append(t)
            carry = t // 10
        return [header, "".join(f"{t:02d}" for t in row)]
    width = len(sa) + len(sb)
    da, total, lines = digits(a, len(sa) + 1), [0] * width, [header]
    for i, ch in enumerate(sb[::-1]):
        prod, carry = [0] * width, 0
        for k, x in enumerate(da):  # a*digit, shifted i columns left
            prod[i + k] = x * int(ch) + carry
            carry = prod[i + k] // 10
        row, carry = [], 0
        for j in range(width):
            t = total[j] + prod[j] % 10 + carry
            row.append(t)
            carry = t // 10
        total = [t % 10 for t in row]
        lines.append(f"{ch}:{''.join(f'{t:02d}' for t in prod)} {''.join(f'{t:02d}' for t in row)}")
    return lines


def mac_solution(a: int, b: int, op: str) -> list[str]:
    """``cells`` with the product row folded into the sum row: one multiply-accumulate cell per column,
    ``previous sum digit + a_k * b_i + carry`` (at most 9 + 81 + 9 = 99). About 40% fewer tokens than
    ``cells``; each cell depends on four inputs instead of three. Addition is as in ``cells``."""
    if op == "add":
        return cells_solution(a, b, op)
    sa, sb = str(a), str(b)
    header = f"{','.join(sa[::-1])}*{','.join(sb[::-1])}"
    width = len(sa) + len(sb)
    da, total, lines = digits(a, width), [0] * width, [header]
    for i, ch in enumerate(sb[::-1]):
        row, carry = [], 0
        for j in range(width):
            t = total[j] + (da[j - i] * int(ch) if j >= i else 0) + carry
            row.append(t)
            carry = t // 10
        total = [t % 10 for t in row]
        lines.append(f"{ch}:{''.join(f'{t:02d}' for t in row)}")
    return lines


def compact_solution(a: int, b: int, op: str) -> list[str]:
    """Reversed, zero-padded partial products and running sums; carries left implicit."""
    sa, sb = str(a), str(b)
    if op == "add":
        sa, sb = sa.zfill(len(sb)), sb.zfill(len(sa))
    header = f"{sa[::-1]}{OPS[op]}{sb[::-1]}"
    if op == "add":
        return [header, rev(a + b, max(len(sa), len(sb)) + 1)]
    width = len(sa) + len(sb)
    lines, total = [header], 0
    for i, digit in enumerate(sb[::-1]):
        partial = a * int(digit) * 10**i
        total += partial
        lines.append(f"{digit}:{rev(partial, width)} {rev(total, width)}")
    return lines


def chain_solution(a: int, b: int, op: str) -> list[str]:
    """Every step a sub-problem written as the task writes questions, ``question=result``, in plain decimal:
    ``a`` times each digit of ``b`` (units first), and after each product but the first, the running sum
    plus that product shifted into place (the larger addend first, the other zero-padded to its width).
    ``47*36``::

        47*6=282
        47*3=141
        1410+0282=1692

    The steps are exactly the claims of ``step_claims`` (the ``operands=steps`` sub-problems), so a model
    that answers those sub-problems directly only has to learn to chain them (the zero-start experiment,
    ``benchmarks/star_zero.py``). Not reversed, so a small model does not learn it from scratch as easily
    as ``cells``. Addition is one step, the problem itself."""
    if op == "add":
        return [f"{add_question(a, b)}={a + b}"]
    lines, total = [], 0
    for i, digit in enumerate(str(b)[::-1]):
        partial = a * int(digit)
        lines.append(f"{a}*{digit}={partial}")
        if i == 0:
            total = partial
            continue
        lines.append(f"{sum_question(total, partial * 10**i)}={total + partial * 10**i}")
        total += partial * 10**i
    return lines


class Arithmetic(BaseTask):
    """n-digit addition or multiplication (level n = n-digit operands); answer: the integer."""

    name = "arithmetic"

    def __init__(self, op: str = "mul", max_level: int = 8, cot: str = "cells", operands: str = "square",
                 restate: bool = False):
        if operands not in OPERAND_SHAPES:
            raise ValueError(f"arithmetic: operands must be one of {OPERAND_SHAPES}, got {operands!r}")
        self.operands = operands
        if cot not in COT_FORMATS:
            raise ValueError(f"arithmetic: cot must be one of {COT_FORMATS}, got {cot!r}")
        self.cot = cot
        # A worked solution that opens by writing the question again teaches a model to copy it exactly: what a
        # tool call on the question needs (benchmarks/tool_rl.py).
        self.restate = bool(restate)
        if op not in (*OPS, "mixed"):
            raise ValueError(f"arithmetic: op must be 'add', 'mul' or 'mixed', got {op!r}")
        if not 1 <= int(max_level) <= 20:
            raise ValueError(f"arithmetic: max_level must be in 1..20, got {max_level!r}")
        self.op = op
        self.levels = tuple(range(1, int(max_level) + 1))

    # -- generation -----------------------------------------------------------------------------
    def sample(self, rng: random.Random, level: int) -> Problem:
        self.check_level(level)
        op = self.op if self.op != "mixed" else rng.choice(tuple(OPS))
        a = rng.randint(*digit_range(level))
        if self.operands == "square":
            b = rng.randint(*digit_range(level))
        elif op == "mul":  # steps: an n-digit number times one digit
            b = rng.randint(0, 9)
        else:  # steps: an n-digit number plus one of 1..n digits
            width = rng.randint(1, level)
            b = rng.randint(0 if width == 1 else 10 ** (width - 1), 10**width - 1)
        result = a + b if op == "add" else a * b
        question = add_question(a, b) if op == "add" else f"{a}{OPS[op]}{b}"
        return Problem(key=question, level=level, question=question, answer=str(result),
                       data={"a": a, "b": b, "op": op})

    def parse_question(self, question: str) -> Problem:
        """A typed question (``47*86``, ``12+5``) as the task writes it (``12+05``), with its answer."""
        m = QUESTION.fullmatch(question)
        if m is None:
            raise ValueError(f"not an arithmetic question like 47*86 or 12+5: {question!r}")
        a, op, b = int(m[1]), {v: k for k, v in OPS.items()}[m[2]], int(m[3])
        written = add_question(a, b) if op == "add" else f"{a}*{b}"
        return Problem(key=written, level=max(len(str(a)), len(str(b))), question=written,
                       answer=str(a + b if op == "add" else a * b), data={"a": a, "b": b, "op": op})

    def solution_lines(self, problem: Problem) -> list[str]:
        a, b, op = problem.data["a"], problem.data["b"], problem.data["op"]
        solve = {"cells": cells_solution, "mac": mac_solution, "compact": compact_solution, "chain": chain_solution}
        return [problem.question] * self.restate + solve[self.cot](a, b, op)

    # -- claims a checker can recompute ----------------------------------------------------------
    def _value(self, group: str, width: int) -> int | None:
        """The number a reversed cells/compact group of ``width`` columns writes, or None if it is not one."""
        if self.cot == "cells":  # cells are carry*10 + digit: the value is in the digits
            if len(group) != 2 * width or not group.isdigit():
                return None
            group = group[1::2]
        elif len(group) != width or not group.isdigit():
            return None
        return int(group[::-1])

    def _row(self, line: str, width: int) -> tuple[int, int] | None:
        """(partial product, running sum) a multiplication row writes, or None if it is not a row."""
        m = ROW.fullmatch(line.strip())
        if m is None:
            return None
        partial, running = (self._value(g, width) for g in m.group(2, 3))
        return None if partial is None or running is None else (partial, running)

    def step_claims(self, problem: Problem, steps: list[str], answer: str | None = None) -> list[list[Claim] | None]:
        """For each step, the claims a checker must confirm for it to be right, or None when the step is
        wrong on its face (not a row, or inconsistent with the problem's operands or the previous step).
        Row i of ``a*b`` claims ``a*b_i`` (b_i: the problem's i-th digit of b from the right, so miscopied
        operands fail) and, after the first row, that the previous running sum plus this row's partial
        product is this row's running sum. With ``answer`` (a finished solution) the last step is also wrong
        on its face unless the derivation is complete and its result is the answer.

        Claims are in this task's own format, ``n``-digit times one digit and ``n``-digit plus a number
        zero-padded to ``n`` digits: the sub-problems of ``operands=steps``. Addition is one step whose claim is the
        problem itself. Supported formats: cells, compact and chain."""
        if self.restate:  # the restated question claims nothing; written wrong, it is wrong on its face
            head = [[] if steps[0].strip() == problem.question else None] if steps else []
            rest = self._claims(problem, steps[1:], answer) if steps else []
            return head + (rest if head[:1] != [None] else [None] * len(rest))
        return self._claims(problem, steps, answer)

    def _claims(self, problem: Problem, steps: list[str], answer: str | None) -> list[list[Claim] | None]:
        a, b, op = problem.data["a"], problem.data["b"], problem.data["op"]
        if self.cot == "chain":
            return self._chain_claims(a, b, op, steps, answer)
        if self.cot not in ("cells", "compact"):
            raise ValueError(f"arithmetic: step claims need cot=cells, compact or chain, not {self.cot!r}")
        out: list[list[Claim] | None] = [[] for _ in steps]  # the header only restates the operands
        if op == "add":
            for i, line in enumerate(steps[1:], 1):
                value = self._value(line.strip(), max(len(str(a)), len(str(b))) + 1) if i == 1 else None
                out[i] = None if value is None else [Claim(add_question(a, b), str(value))]
            if answer is not None and steps and (len(steps) != 2 or parse_integer_answer(answer) != value):
                out[-1] = None
            return out
        b_digits = [int(c) for c in str(b)[::-1]]
        width, total = len(str(a)) + len(str(b)), 0
        for i, line in enumerate(steps[1:]):
            row = self._row(line, width) if i < len(b_digits) else None
            if row is None or row[0] % 10**i:
                out[i + 1] = None
                continue
            partial, running = row
            claims = [Claim(f"{a}*{b_digits[i]}", str(partial // 10**i))]
            if i == 0:
                if running != partial:
                    out[i + 1] = None
                    continue
            else:
                claims.append(Claim(sum_question(total, partial), str(running)))
            out[i + 1] = claims
            total = running
        if answer is not None and steps and (len(steps) != len(b_digits) + 1 or parse_integer_answer(answer) != total):
            out[-1] = None  # stopped early, or the answer is not what the rows add up to
        return out

    @staticmethod
    def _chain_claims(a: int, b: int, op: str, steps: list[str], answer: str | None) -> list[list[Claim] | None]:
        """``step_claims`` for ``cot=chain``: each step claims its own sub-problem's result, and is wrong on
        its face when its sub-problem is not the one due next (a miscopied operand, a product not shifted
        into place, a skipped step), judged from the problem's operands and the results written so far.
        After a step wrong on its face, what is due next is unknown, so every later step is wrong too."""
        # add: the problem itself; mul: filled as the results come in, a product, then the sum it enters
        due = [add_question(a, b)] if op == "add" else []
        b_digits = str(b)[::-1]
        out: list[list[Claim] | None] = []
        total, i, broken = 0, 0, False
        for line in steps:
            m = None if broken else CHAIN_LINE.fullmatch(line.strip())
            if op == "mul" and m is not None and not due and i < len(b_digits):
                due.append(f"{a}*{b_digits[i]}")
            if m is None or not due or m.group(1) != due[0]:
                broken = True
                out.append(None)
                continue
            question, value = m.group(1), int(m.group(2))
            due.pop(0)
            out.append([Claim(question, str(value))])
            if op == "add" or "+" in question:
                total, i = value, i + 1
            elif i == 0:
                total, i = value, 1
            else:  # a product: the sum it enters is due next
                due.append(sum_question(total, value * 10**i))
        complete = not broken and not due and (op == "add" and len(out) == 1 or op == "mul" and i == len(b_digits))
        if answer is not None and steps and (not complete or parse_integer_answer(answer) != total):
            out[-1] = None
        return out

    # -- verification ---------------------------------------------------------------------------
    def score(self, problem: Problem, completion: str, mode: Mode = Mode.SYSTEM2) -> Score:
        parts = split_completion(completion, check_mode(mode))
        value = parse_integer_answer(parts.answer_text)
        well_formed = parts.well_formed and value is not None
        correct = well_formed and value == int(problem.answer)
        answer = str(value) if value is not None else None
        return Score(reward=1.0 if correct else 0.0, answer=answer, well_formed=well_formed, correct=correct)
