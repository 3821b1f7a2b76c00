"""Arithmetic: n-digit addition and multiplication, with a worked-solution format a tiny model can learn.

Level n means both operands have n digits. The user message is the bare expression (``347*862``) and
the final answer is the integer in plain decimal.

Worked solutions write every number least-significant digit first, in column-aligned cells, so that
each digit the model writes depends on a few digits at a *constant* distance back. Lee et al. (2023)
show that reversal decides whether small transformers learn arithmetic at all; the cells are our
addition (dev/LOG.md has the measurements). Two formats, chosen with ``cot=``:

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

Every line is one step; ``step_labels`` marks a step correct when it and every step before it match
the unique correct derivation (after a wrong step the right answer can no longer follow).
"""

from __future__ import annotations

import random
import re

from .base import BaseTask, Mode, Problem, Score, check_mode, split_completion

OPS = {"add": "+", "mul": "*"}
COT_FORMATS = ("cells", "mac", "compact")
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



def digits(n: int, width: int) -> list[int]:
    """Digits of n, least significant first, zero-padded to width."""
    return [int(c) for c in rev(n, width)]


def cells_solution(a: int, b: int, op: str) -> list[str]:
    """Column-aligned two-digit cells: every digit is a function of three inputs at fixed distances.

    Each cell is ``carry*10 + digit`` of one column, so the carry into the next column is written out
    (the tens of the cell to the left) instead of being recomputed from the whole prefix.
    """
    sa, sb = str(a), str(b)
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


class Arithmetic(BaseTask):
    """n-digit addition or multiplication (level n = n-digit operands); answer: the integer."""

    name = "arithmetic"

    def __init__(self, op: str = "mul", max_level: int = 8, cot: str = "cells"):
        if cot not in COT_FORMATS:
            raise ValueError(f"arithmetic: cot must be one of {COT_FORMATS}, got {cot!r}")
        self.cot = cot
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
        lo, hi = (1, 9) if level == 1 else (10 ** (level - 1), 10**level - 1)
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        result = a + b if op == "add" else a * b
        question = f"{a}{OPS[op]}{b}"
        return Problem(key=question, level=level, question=question, answer=str(result),
                       data={"a": a, "b": b, "op": op})

    def solution_lines(self, problem: Problem) -> list[str]:
        a, b, op = problem.data["a"], problem.data["b"], problem.data["op"]
        return {"cells": cells_solution, "mac": mac_solution, "compact": compact_solution}[self.cot](a, b, op)


    # -- verification ---------------------------------------------------------------------------
    def score(self, problem: Problem, completion: str, mode: Mode = "system2") -> Score:
        parts = split_completion(completion, check_mode(mode))
        value = parse_integer_answer(parts.answer_text)
        well_formed = parts.well_formed and value is not None
        correct = well_formed and value == int(problem.answer)
        answer = str(value) if value is not None else None
        return Score(reward=1.0 if correct else 0.0, answer=answer, well_formed=well_formed, correct=correct)
