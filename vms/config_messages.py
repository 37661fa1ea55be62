"""Pydantic's validation errors as sentences an operator can act on.

:func:`explain` takes one error of :class:`vms.config.Config` validation, the plain
data that was validated and the position of every key and list item in the YAML
file, and returns where the problem is and a message saying what is wrong and the
fix ("unknown key 'urll'; did you mean 'url'? allowed keys: ..."). Values under
``url``, ``password`` and ``credential`` keys are never repeated. Pure functions.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from vms.config import SLUG_PATTERN, Config
from vms.config_checks import Inconsistency, loc_text

Loc = tuple[str | int, ...]
Position = tuple[int, int]
"""1-based line and column."""

_SECRET_KEYS = frozenset({"url", "password", "credential", "credentials", "secret"})
_BOUNDS = {
    "greater_than": "greater than",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "less_than_equal": "at most",
}


def explain(
    error: ErrorDetails, data: Any, positions: Mapping[Loc, Position]
) -> list[tuple[Position | None, str]]:
    """Where ``error`` is in the file and what to say about it (a cross-check error may hold several)."""
    if error["type"] == "config_inconsistent":
        found: list[Inconsistency] = list(error.get("ctx", {}).get("problems", ()))
        return [explain_inconsistency(problem, data, positions) for problem in found]
    loc, missing = _locate(error["loc"], data)
    kind = error["type"]
    if kind == "extra_forbidden":
        return [(positions.get(loc), _join(loc[:-1], _unknown_key(loc)))]
    if kind == "missing" and missing is not None:
        return [(positions.get(loc), _join(loc, _missing_key(loc, missing)))]
    return [(positions.get(loc), _join(loc, _what(error, loc)))]


def explain_inconsistency(
    problem: Inconsistency, data: Any, positions: Mapping[Loc, Position]
) -> tuple[Position | None, str]:
    """Where a cross-reference problem is, and its message naming the line of the related item."""
    loc, _ = _locate(problem.loc, data)
    message = problem.message
    if problem.related is not None:
        related, _ = _locate(problem.related, data)
        where = positions.get(related)
        if where is not None:
            name = loc_text(problem.related)
            message = message.replace(name, f"{name} (line {where[0]})", 1)
    return positions.get(loc), _join(loc, message)


def _locate(loc: tuple[str | int, ...], data: Any) -> tuple[Loc, str | None]:
    """The part of ``loc`` present in ``data`` (union tags dropped), and the missing key if any."""
    found: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            if part not in node:
                return tuple(found), part
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            continue  # a union member's tag, not a place in the file
        found.append(part)
    return tuple(found), None


def _join(loc: Loc, message: str) -> str:
    return f"{loc_text(loc)}: {message}" if loc else message


def _unknown_key(loc: Loc) -> str:
    key = str(loc[-1])
    model = _model_at(loc[:-1])
    if model is None:
        return f"unknown key {key!r}; remove it"
    allowed = list(model.model_fields)
    for field, info in model.model_fields.items():
        sub = _unwrap(info.annotation)
        if isinstance(sub, type) and issubclass(sub, BaseModel) and key in sub.model_fields:
            return f"unknown key {key!r} here; it belongs under {field}: (allowed keys: {', '.join(allowed)})"
    close = [k for k in allowed if k.lower() == key.lower()] or difflib.get_close_matches(key, allowed, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {guess}allowed keys: {', '.join(allowed)}"


def _missing_key(loc: Loc, key: str) -> str:
    model = _model_at(loc)
    info = model.model_fields.get(key) if model is not None else None
    about = f" ({info.description.rstrip('.')})" if info is not None and info.description else ""
    return f"missing required key {key!r}{about}; add a '{key}:' line to this entry"


def _what(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = error.get("ctx", {})
    found = _describe(error.get("input"), secret=any(part in _SECRET_KEYS for part in loc))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        keys = f" with keys such as {', '.join(list(model.model_fields)[:3])}" if model is not None else ""
        fix = "; remove the empty line or indent its keys under it" if error.get("input") is None else ""
        return f"expected a mapping{keys}, found {found}{fix}"
    if kind == "list_type":
        return f"expected a list (one '- ' line per item, or [] for none), found {found}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, found {found}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, found {found}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, found {found}"
    if kind == "finite_number":
        return f"expected a finite number, found {found}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        limit = next(iter(ctx.values()), "?")
        return f"must be {_BOUNDS[kind]} {limit}, found {found}"
    if kind == "literal_error":
        return _literal(loc, error.get("input"), found)
    if kind == "string_type":
        fix = "write a value after the colon" if error.get("input") is None else "put the value in quotes"
        return f"expected text, found {found}; {fix}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} item(s)"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == SLUG_PATTERN:
        return (
            f"{found} is not a valid id; ids are 1-64 lowercase letters, digits, '-' and '_', "
            f"starting with a letter or digit, e.g. {_slug(error.get('input'))!r}"
        )
    if kind == "path_type":
        return f"expected a directory path, found {found}"
    if kind.startswith("ip_"):
        return f"{found} is not an IP address; write one like 192.168.1.10 or fd00::10"
    message = error["msg"]
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _literal(loc: Loc, value: Any, found: str) -> str:
    choices = [str(choice) for choice in get_args(_type_at(loc))]
    if not choices:
        return f"unexpected value {found}"
    close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return f"expected one of {', '.join(choices)}, found {found}{guess}"


def _describe(value: Any, *, secret: bool = False) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if secret:
        return "text (not shown)" if isinstance(value, str) else "a value that is not text (not shown)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return str(value)


def _slug(value: Any) -> str:
    text = re.sub(r"[^a-z0-9_-]+", "-", str(value).strip().lower()).strip("-_")
    return text[:64] or "hall-1"


def _model_at(loc: Loc) -> type[BaseModel] | None:
    tp = _type_at(loc)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _type_at(loc: Loc) -> Any:
    """The declared type at ``loc`` in :class:`Config`, or None where the schema has no such place."""
    tp: Any = Config
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(part)
            tp = info.annotation if info is not None else None
        elif isinstance(part, int) and get_origin(tp) is list:
            tp = get_args(tp)[0]
        else:
            return None
    return _unwrap(tp)


def _unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and without ``| None``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp
