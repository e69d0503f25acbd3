"""``${{ expr }}`` templates in rule values: literals, whole expressions, interpolation.

A plain YAML value is a literal; ``${{ expr }}`` as the whole value is an expression whose
result keeps its type; ``${{ }}`` inside longer text is interpolated into a string. This
module splits text into literal parts and expression sources; compiling and evaluating them
is ``expressions``' and ``evaluation``'s job.
"""

from __future__ import annotations

from calhooks.workers.rules.expressions import STRING_LITERAL

# --- ${{ }} templates ----------------------------------------------------------------------

OPEN = "${{"
CLOSE = "}}"


class TemplateSyntaxError(ValueError):
    """A ``${{`` without its ``}}``, or an empty ``${{ }}``."""


def _expression_end(text: str, start: int) -> int:
    """Index of the ``}}`` closing the expression starting at ``start`` (-1 if none).

    Braces of CEL map literals and string literals are skipped, so
    ``${{ {"a": {"b": 1}} }}`` and ``${{ "}}" }}`` end where they should.
    """
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char in "\"'":
            match = STRING_LITERAL.match(text, index)
            if match is None:
                return -1
            index = match.end()
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0 and text.startswith(CLOSE, index):
                return index
            depth = max(0, depth - 1)
        index += 1
    return -1


def split_template(text: str) -> list[str | tuple[str]]:
    """``text`` as literal strings and ``(expression,)`` parts; [] parts never empty."""
    parts: list[str | tuple[str]] = []
    position = 0
    while True:
        start = text.find(OPEN, position)
        if start < 0:
            if position < len(text):
                parts.append(text[position:])
            return parts
        if start > position:
            parts.append(text[position:start])
        end = _expression_end(text, start + len(OPEN))
        if end < 0:
            raise TemplateSyntaxError(f"{OPEN} at character {start + 1} has no closing {CLOSE}")
        source = text[start + len(OPEN) : end].strip()
        if not source:
            raise TemplateSyntaxError(f"empty {OPEN} {CLOSE}")
        parts.append((source,))
        position = end + len(CLOSE)


def whole_expression(text: str) -> str | None:
    """The expression when ``text`` is exactly one ``${{ expr }}`` (spaces around allowed)."""
    stripped = text.strip()
    if not stripped.startswith(OPEN):
        return None
    parts = split_template(stripped)
    if len(parts) == 1 and isinstance(parts[0], tuple):
        return parts[0][0]
    return None
