"""Reading rules YAML: YAML 1.2 scalars, line numbers, strict keys, merges and the bounds."""

from __future__ import annotations

import pytest

from calhooks.workers.rules.yamlsource import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    YamlProblem,
    decode,
    parse_yaml,
)


def plain(text: str) -> object:
    node = parse_yaml(text)
    assert node is not None
    return node.plain()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on: x", {"on": "x"}),
        ("a: yes", {"a": "yes"}),
        ("a: off", {"a": "off"}),
        ("a: NO", {"a": "NO"}),
        ("a: true", {"a": True}),
        ("a: False", {"a": False}),
        ("a: 2025-07-01", {"a": "2025-07-01"}),
        ("a: 2025-07-01T00:00:00Z", {"a": "2025-07-01T00:00:00Z"}),
        ("a: 017", {"a": 17}),
        ("a: 0x1F", {"a": "0x1F"}),
        ("a: 1:30", {"a": "1:30"}),
        ("a: 1_000", {"a": "1_000"}),
        ("a: -12", {"a": -12}),
        ("a: 1.5e3", {"a": 1500.0}),
        ("a: .inf", {"a": ".inf"}),
        ("a: ~", {"a": None}),
        ("a:", {"a": None}),
        ("a: '12'", {"a": "12"}),
    ],
)
def test_scalars_follow_yaml_1_2(text: str, expected: object) -> None:
    """Only true/false are booleans and only decimals numbers; dates and the rest stay text."""
    assert plain(text) == expected


def test_nodes_carry_their_lines() -> None:
    """Every value and every mapping key knows the 1-based line it is written on."""
    node = parse_yaml("a: 1\nb:\n  - x\n  - c: 2\n")
    assert node is not None
    assert node.line == 1
    assert node.key_lines == {"a": 1, "b": 2}
    items = node.value["b"].value
    assert [item.line for item in items] == [3, 4]
    assert items[1].value["c"].line == 4


def test_empty_document_is_none() -> None:
    """An empty (or comment-only) file has no document."""
    assert parse_yaml("") is None
    assert parse_yaml("# nothing\n") is None


def problem(text: str) -> YamlProblem:
    with pytest.raises(YamlProblem) as caught:
        parse_yaml(text)
    return caught.value


def test_duplicate_keys_are_refused_with_the_line() -> None:
    """A key written twice is an error instead of the last one silently winning."""
    error = problem("a: 1\nb: 2\na: 3\n")
    assert error.line == 3
    assert "'a' appears twice" in error.message


@pytest.mark.parametrize("text", ["1: x", "true: x", "[a]: x", "~: x", "{a: 1}: x"])
def test_keys_must_be_strings(text: str) -> None:
    """Numbers, booleans, null and collections as keys are refused."""
    assert "is not a string" in problem(text).message


@pytest.mark.parametrize("text", ["a: !!binary aGk=", "a: !custom x", "a: !!set {x}"])
def test_unusual_tags_are_refused(text: str) -> None:
    """Only the standard scalar and collection tags are accepted."""
    assert "unsupported tag" in problem(text).message


def test_explicit_standard_tags_work() -> None:
    """``!!str`` makes text of a number; ``!!int`` parses decimals."""
    assert plain("a: !!str 12\nb: !!int '7'") == {"a": "12", "b": 7}
    assert "decimal" in problem("a: !!int 0x10").message


def test_merge_keys_and_aliases() -> None:
    """``<<: *anchor`` merges a mapping; keys written in place win over merged ones."""
    text = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nlist: [*b]\n"
    assert plain(text) == {
        "base": {"x": 1, "y": 2},
        "use": {"x": 1, "y": 3},
        "list": [{"x": 1, "y": 2}],
    }


def test_merging_a_scalar_is_refused() -> None:
    assert "merges only mappings" in problem("a: &s x\nb:\n  <<: *s\n").message


def test_alias_expansion_is_bounded() -> None:
    """An "exponential entities" document is refused instead of expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    error = problem("\n".join(lines))
    assert f"more than {MAX_NODES} values" in error.message


def test_recursive_alias_is_refused() -> None:
    """An anchor used inside itself makes a cycle; it ends at the depth bound."""
    error = problem("a: &a [*a]\n")
    assert "nested" in error.message or "recursive" in error.message


def test_nesting_depth_is_bounded() -> None:
    """Deeply nested flow collections end in a YamlProblem, not a RecursionError."""
    assert "nested" in problem("a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)).message
    assert "nested" in problem("a: " + "[" * 5000 + "]" * 5000).message


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: [1, 2\n", 2), ("a: b: c\n", 1), ("a: 1\n---\nb: 2\n", 2), ("a: '\x07'\n", 1)],
)
def test_invalid_yaml_reports_a_line(text: str, line: int) -> None:
    """Scanner, parser, composer and reader errors all come out as YamlProblem with a line."""
    error = problem(text)
    assert error.message.startswith("invalid YAML")
    assert error.line == line


def test_decode_limits_size_and_encoding() -> None:
    """More than MAX_FILE_BYTES, or bytes that are not UTF-8, are refused; a BOM is fine."""
    assert decode(b"\xef\xbb\xbfa: 1") == "a: 1"
    with pytest.raises(YamlProblem, match="not UTF-8"):
        decode(b"a: \xff")
    with pytest.raises(YamlProblem, match="limit"):
        decode(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(YamlProblem, match="limit"):
        decode("é" * (MAX_FILE_BYTES // 2 + 1))
