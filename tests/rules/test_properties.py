"""Property: no rules file, however malformed - random bytes, random text, random YAML, rule
files with random parts - makes loading raise anything but ``RulesError``."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calhooks.service.calcom.tools import TOOLS
from calhooks.service.calcom.webhooks import WEBHOOK_TRIGGERS
from calhooks.workers.rules import RulesError, RuleSet, parse_rules

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loads_or_refuses(data: bytes | str) -> None:
    """Loading gives a RuleSet or raises RulesError with located problems, nothing else."""
    error: RulesError | None = None
    try:
        result = parse_rules(data, source="fuzz.yaml")
    except RulesError as raised:
        error = raised
    if error is None:
        assert isinstance(result, RuleSet)
        return
    assert error.problems
    assert all(problem.source == "fuzz.yaml" and str(problem) for problem in error.problems)


@PROPERTY
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    loads_or_refuses(data)


@PROPERTY
@given(st.text(max_size=2000))
def test_random_text(text: str) -> None:
    loads_or_refuses(text)


YAML_CHARS = st.sampled_from(list("abc:-[]{}&*!|>'\"#%@`,?\n  \t0123456789.~<$"))


@PROPERTY
@given(st.lists(YAML_CHARS, max_size=400).map("".join))
def test_yaml_punctuation_soup(text: str) -> None:
    loads_or_refuses(text)


CEL_PIECES = st.sampled_from(
    [
        "payload",
        "steps",
        "env",
        "event",
        "item",
        ".",
        ".?",
        "x",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        '"',
        "'",
        "+",
        "&&",
        "||",
        "!",
        "==",
        "?",
        ":",
        ",",
        "1",
        "2.5",
        "null",
        "true",
        "has(",
        "size(",
        "get(",
        ".map(a, ",
        ".exists(",
        "lowerAscii()",
        "${{",
        "}}",
        " ",
        "\n",
        "\\",
        "\x00",
    ]
)
CEL_SOUP = st.lists(CEL_PIECES, max_size=30).map("".join)
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    CEL_SOUP,
)
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10) | CEL_SOUP, children, max_size=4),
    ),
    max_leaves=20,
)
TOOL_NAMES = st.sampled_from(sorted(TOOLS)) | st.text(max_size=20)
TRIGGERS = st.sampled_from([*WEBHOOK_TRIGGERS, "PING", "NOPE"])


def parameters() -> st.SearchStrategy[dict[str, Any]]:
    names = sorted({p.name for tool in TOOLS.values() for p in tool.parameters})
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=8), VALUES, max_size=5)


STEPS = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["a", "b", "user", "in", "1x"]) | st.text(max_size=5),
        "tool": TOOL_NAMES,
        "log": CEL_SOUP | VALUES,
        "let": st.dictionaries(st.sampled_from(["a", "b", "x-y"]), VALUES, max_size=3) | VALUES,
        "with": parameters() | VALUES,
        "when": CEL_SOUP | VALUES,
        "for_each": CEL_SOUP | VALUES,
        "as": st.sampled_from(["a", "item", "payload", "1"]) | VALUES,
        "level": st.sampled_from(["info", "loud"]) | VALUES,
        "paginate": st.booleans() | VALUES,
        "extra": VALUES,
    },
)
RULES = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["r", "r", "s"]) | st.text(max_size=12) | VALUES,
        "on": TRIGGERS | st.lists(TRIGGERS, max_size=3) | VALUES,
        "when": CEL_SOUP | VALUES,
        "steps": st.lists(STEPS, max_size=4) | VALUES,
        "description": VALUES,
    },
)
FILES = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 2]) | VALUES,
        "env": st.dictionaries(st.sampled_from(["org_id", "x", "a b"]), VALUES) | VALUES,
        "rules": st.lists(RULES, max_size=3) | VALUES,
    },
)


@PROPERTY
@given(FILES)
def test_rule_shaped_documents(document: dict[str, Any]) -> None:
    """Files with the right keys and random, often wrong, values and expressions."""
    loads_or_refuses(yaml.safe_dump(document, allow_unicode=True))


@PROPERTY
@given(VALUES)
def test_any_yaml_document(document: Any) -> None:
    loads_or_refuses(yaml.safe_dump(document, allow_unicode=True))
