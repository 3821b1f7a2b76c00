"""The ``calculator`` tool: exact arithmetic on integers and fractions, parsed safely (never ``eval``).

An expression may hold numbers (integers, decimals such as ``0.1``, which are taken exactly as 1/10), the
operators ``+ - * / // % **``, unary minus and plus, and parentheses; anything else (names, attributes,
calls, subscripts, comparisons, strings) is refused. Results are exact: an integer, or a reduced fraction
with its decimal value. Sizes are bounded so one call cannot take the process down: the expression's
length, an exponent's size, and the bit length of every intermediate result.
"""

from __future__ import annotations

import ast
import operator
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .base import Tool

OPTIONS: dict[str, str] = {}
MAX_EXPRESSION_CHARS = 2000
MAX_EXPONENT = 10_000
MAX_BITS = 100_000  # about 30,000 decimal digits, for any numerator or denominator on the way
MAX_LITERAL_EXPONENT = 10_000  # 1e10000 is fine, 1e1000000000 is refused before it is built

DESCRIPTION = ("Exact arithmetic. Give an expression with integers or decimals, + - * / // % ** and "
               "parentheses, e.g. '(37*41 - 5) / 12' or '2**64'. Results are exact integers or fractions.")

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
           ast.Pow: "**"}


class CalculatorError(ValueError):
    """The expression is not allowed or cannot be computed exactly; the message says why."""


def evaluate(expression: str) -> Fraction:
    """The exact value of ``expression`` (see the module docstring for what is allowed)."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("expression must be a non-empty string, e.g. '12*(3+4)'")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression is {len(expression)} characters; at most {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as e:
        raise CalculatorError(f"not an arithmetic expression: {e.msg if isinstance(e, SyntaxError) else e}")
    except (RecursionError, MemoryError):
        raise CalculatorError("expression is nested too deeply")
    try:
        return _eval(tree.body, expression)
    except RecursionError:
        raise CalculatorError("expression is nested too deeply")


def _eval(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant):
        return _number(node, source)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, source))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, source), _eval(node.right, source)
        return _checked(_apply(type(node.op), left, right))
    raise CalculatorError(f"not allowed in an expression: {_describe(node, source)} (only numbers, "
                          "+ - * / // % **, unary minus and parentheses)")


def _apply(op: type, left: Fraction, right: Fraction) -> Fraction:
    if op in (ast.Div, ast.FloorDiv, ast.Mod) and right == 0:
        raise CalculatorError(f"division by zero ({_SYMBOL[op]} 0)")
    if op is ast.Pow:
        return _power(left, right)
    return Fraction(_BINARY[op](left, right))


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise CalculatorError(f"exponent {exponent} is not an integer: the result would not be exact")
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exponent} is too large (at most {MAX_EXPONENT} in size)")
    if base == 0 and exponent < 0:
        raise CalculatorError("division by zero (0 to a negative power)")
    bits = max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(int(exponent))
    if bits > MAX_BITS:
        raise CalculatorError(f"result too large (about {bits} bits; at most {MAX_BITS})")
    return base ** int(exponent)


def _checked(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_BITS:
        raise CalculatorError(f"result too large (more than {MAX_BITS} bits)")
    return value


def _number(node: ast.Constant, source: str) -> Fraction:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalculatorError(f"not a number: {_describe(node, source)}")
    if isinstance(value, int):
        return _checked(Fraction(value))
    # A float literal is read from its source text, exactly: 0.1 is 1/10, not the nearest binary float.
    text = (ast.get_source_segment(source.strip(), node) or repr(value)).replace("_", "")
    try:
        dec = Decimal(text)
    except InvalidOperation:
        raise CalculatorError(f"not a number: {text!r}")
    if not dec.is_finite() or abs(dec.as_tuple().exponent) > MAX_LITERAL_EXPONENT:
        raise CalculatorError(f"number {text!r} is out of range")
    return _checked(Fraction(dec))


def _describe(node: ast.AST, source: str) -> str:
    text = ast.get_source_segment(source.strip(), node)
    return f"{type(node).__name__} {text!r}" if text else type(node).__name__


def format_value(value: Fraction) -> str:
    """``'42'`` for an integer; ``'7/3 (= 2.333333333333)'`` for a fraction."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator} (= {float(value):.12g})"


def calculator(expression: str) -> str:
    try:
        return format_value(evaluate(expression))
    except CalculatorError as e:
        raise ValueError(str(e)) from None


TOOL = Tool(name="calculator", description=DESCRIPTION, fn=calculator,
            parameters={"type": "object", "additionalProperties": False, "required": ["expression"],
                        "properties": {"expression": {"type": "string",
                                                      "description": "the arithmetic expression"}}})


def provider(options: dict):
    """The calculator keeps no state: every episode gets the same tool."""
    return lambda: TOOL
