"""Just enough PromQL to check expressions offline (promtool is not available here).

Finds the series names an expression selects, the functions it calls and the label matchers of
a selector. It is a scanner, not a parser: it checks that brackets balance and that every
identifier is a series, a known function or a keyword, which is what catches a renamed metric
or a typo; it does not type-check the expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn",
    "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt",
    "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp",
    "vector", "year",
})
AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TOKEN = re.compile(r"(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]*)"
                    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<space>\s+)|(?P<other>.)")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_PAIRS = {"(": ")", "[": "]", "{": "}"}


@dataclass
class Scan:
    """What an expression names."""

    series: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def _balanced(text: str) -> str | None:
    stack: list[str] = []
    for char in _STRING.sub('""', text):
        if char in _PAIRS:
            stack.append(_PAIRS[char])
        elif char in _PAIRS.values() and (not stack or stack.pop() != char):
            return f"unbalanced {char!r}"
    return f"unclosed {stack[-1]!r} expected" if stack else None


def _strip(text: str) -> str:
    """The expression without strings, label matchers and ranges: what is left are names."""
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    return re.sub(r"\[[^\[\]]*\]", " ", text)


def scan(expr: str) -> Scan:
    """Series, functions and problems of one PromQL expression."""
    result = Scan()
    problem = _balanced(expr)
    if problem:
        result.errors.append(problem)
        return result
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(_strip(expr)) if m.lastgroup != "space"]
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        index += 1
        if kind != "name":
            continue
        if text in GROUPING:
            if following == "(":  # a list of label names: skip it
                while index < len(tokens) and tokens[index][1] != ")":
                    index += 1
                index += 1
        elif text in KEYWORDS:
            continue
        elif text in AGGREGATIONS:  # `sum (x)`, `sum by (l) (x)`, `sum(x) by (l)`
            result.functions.add(text)
        elif following == "(":
            if text in FUNCTIONS:
                result.functions.add(text)
            else:
                result.errors.append(f"unknown function {text}()")
        else:
            result.series.add(text)
    return result


def matchers(expr: str, series: str) -> list[dict[str, tuple[str, str]]]:
    """The label matchers of every selector of ``series`` in ``expr``: ``{label: (op, value)}``."""
    found = []
    for match in re.finditer(rf"(?<![A-Za-z0-9_:]){re.escape(series)}\s*\{{([^{{}}]*)\}}", expr):
        found.append({m.group(1): (m.group(2), m.group(3)) for m in _MATCHER.finditer(match.group(1))})
    return found
