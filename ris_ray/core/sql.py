"""Building Lance filter expressions safely: every value is a quoted literal."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["sql_in", "sql_literal"]


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal for a Lance filter (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str], negate: bool = False) -> str:
    """``column [NOT] IN ('a', 'b')`` with every value quoted by :func:`sql_literal`."""
    items = ", ".join(sql_literal(v) for v in values)
    if not items:
        raise ValueError("sql_in needs at least one value")
    return f"{column} {'NOT IN' if negate else 'IN'} ({items})"
