"""Safe evaluation of small integer arithmetic found in a prompt.

Only integers, ``+ - * /``, unary minus and parentheses are understood. The
expression is parsed by a small recursive-descent parser, never by ``eval``,
so a prompt cannot run code in the demo server.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["ExpressionError", "evaluate", "find_expression", "format_number"]

# A run of digits, operators, parentheses and spaces that holds at least one
# operator between two operands; "what is 2+2?" yields "2+2".
_EXPRESSION = re.compile(r"[-(\s]*\d[\d\s()+\-*/]*[+\-*/][\d\s()+\-*/]*\d[\s)]*")
_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")

# Guards keep a hostile prompt from making the server compute huge numbers.
_MAX_DIGITS = 30
_MAX_TOKENS = 200


class ExpressionError(ValueError):
    """The expression is malformed, too large, or divides by zero."""


def find_expression(text: str) -> str | None:
    """Return the first arithmetic expression in ``text``, or ``None``."""
    match = _EXPRESSION.search(text)
    return match.group(0).strip() if match else None


def evaluate(expression: str) -> Fraction:
    """Evaluate ``expression`` exactly; raise `ExpressionError` if invalid."""
    tokens = _tokenize(expression)
    parser = _Parser(tokens)
    value = parser.expression()
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r}")
    return value


def format_number(value: Fraction) -> str:
    """Render an integer plainly and anything else as a short decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.10g}"


def _tokenize(expression: str) -> list[str]:
    tokens: list[str] = []
    for number, symbol in _TOKEN.findall(expression.strip()):
        token = number or symbol
        if symbol and symbol not in "+-*/()":
            raise ExpressionError(f"unexpected {symbol!r}")
        if len(token) > _MAX_DIGITS:
            raise ExpressionError("number too long")
        tokens.append(token)
    if len(tokens) > _MAX_TOKENS:
        raise ExpressionError("expression too long")
    return tokens


class _Parser:
    """Grammar: expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = tokens
        self._position = 0

    def peek(self) -> str | None:
        if self._position < len(self._tokens):
            return self._tokens[self._position]
        return None

    def _take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("unexpected end of expression")
        self._position += 1
        return token

    def expression(self) -> Fraction:
        value = self._term()
        while self.peek() in ("+", "-"):
            operator = self._take()
            operand = self._term()
            value = value + operand if operator == "+" else value - operand
        return value

    def _term(self) -> Fraction:
        value = self._factor()
        while self.peek() in ("*", "/"):
            operator = self._take()
            operand = self._factor()
            value = _multiply(value, operand) if operator == "*" else _divide(value, operand)
        return value

    def _factor(self) -> Fraction:
        token = self._take()
        if token == "-":
            return -self._factor()
        if token == "(":
            value = self.expression()
            if self._take() != ")":
                raise ExpressionError("missing ')'")
            return value
        if token.isdigit():
            return Fraction(int(token))
        raise ExpressionError(f"unexpected {token!r}")


def _multiply(left: Fraction, right: Fraction) -> Fraction:
    product = left * right
    # Repeated multiplication is the only way to grow numbers without bound.
    if len(str(abs(product.numerator))) > 3 * _MAX_DIGITS:
        raise ExpressionError("result too large")
    return product


def _divide(left: Fraction, right: Fraction) -> Fraction:
    if right == 0:
        raise ExpressionError("division by zero")
    return left / right
