"""Reading and checking the TOML files users write: targets, recipes, tuning tables, image preprocessing.

One schema form for all of them, so every file gets the same one-line errors naming the file and key:
key -> (type, required, allowed values or None); a nested table is a dict of the same form. A type is
a class, a union such as `int | float` (a float key also takes an integer), or `list[str]` /
`list[float]` for lists whose items are checked too. Booleans are never taken for numbers.
"""
from __future__ import annotations

import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from edgeprune.errors import UserError

Rule = tuple[Any, bool, tuple | None]


def read_toml(path: Path, text: str | None = None) -> dict[str, Any]:
    """Parse a file (or `text` read from it) with a one-line error for bad syntax or encoding."""
    try:
        return tomllib.loads(path.read_text() if text is None else text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None


def _matches(value: Any, typ: Any) -> bool:
    if typing.get_origin(typ) is list:
        (item,) = typing.get_args(typ)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if isinstance(typ, types.UnionType):
        return any(_matches(value, t) for t in typing.get_args(typ))
    if isinstance(value, bool):
        return typ is bool
    return isinstance(value, typ) or (typ is float and isinstance(value, int))


def _name(typ: Any) -> str:
    return typ.__name__ if isinstance(typ, type) else str(typ)


def check_table(table: dict[str, Any], schema: dict[str, Any], label: str, where: str = "") -> None:
    """Raise a UserError for the first unknown key, wrong type, disallowed value or missing required key."""
    for key, value in table.items():
        path = f"{where}{key}"
        if key not in schema:
            raise UserError(f"{label}: unknown key '{path}' (known here: {', '.join(sorted(schema))})")
        rule = schema[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                raise UserError(f"{label}: key '{path}' must be a table")
            check_table(value, rule, label, f"{path}.")
            continue
        typ, _, allowed = rule
        if not _matches(value, typ):
            raise UserError(f"{label}: key '{path}' must be of type {_name(typ)}, got {value!r}")
        if allowed and value not in allowed:
            raise UserError(f"{label}: key '{path}' is {value!r}; allowed: {', '.join(map(str, allowed))}")
    for key, rule in schema.items():
        required = (any(not isinstance(r, dict) and r[1] for r in rule.values()) if isinstance(rule, dict)
                    else rule[1])
        if required and key not in table:
            raise UserError(f"{label}: missing required key '{where}{key}'")
