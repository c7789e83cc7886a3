"""pydantic's validation errors, worded for the client: one line per problem, named by its field path.

``"shape_slat.steps: 0 is not in the range 1<=x<=50"``, ``"glb.colour: unknown field; allowed: ..."``,
``"mode: \"fast\" is not allowed; use \"stochastic\", ..."``: values are shown as the client wrote
them (JSON), cut short so that a stray base64 string stays readable. ``counted`` words a number of
things for messages and logs ("1 image", "2 images").
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

__all__ = ["counted", "shown", "worded"]

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "an object",
    "dict_type": "an object",
    "finite_number": "a finite number",
}


def worded(error: dict[str, Any], root: type[BaseModel], hints: dict[str, str]) -> str:
    """One pydantic error as ``"<field path>: <what is wrong and what is allowed>"``; ``hints`` replace "required"."""
    path = _path(error["loc"])
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        text = hints.get(path, "required")
    elif kind == "extra_forbidden":
        text = f"unknown field; allowed: {', '.join(_model_at(root, error['loc'][:-1]).model_fields)}"
    elif kind == "value_error":
        text = str(error["ctx"]["error"])
    elif kind == "literal_error":
        expected = error["ctx"]["expected"].replace("'", '"').replace("True", "true").replace("False", "false")
        text = f"{shown(value)} is not allowed; use {expected}"
    elif kind in _EXPECTED:
        text = f"expected {_EXPECTED[kind]}, got {shown(value)}"
    else:
        text = error["msg"]
    return f"{path}: {text}"


def _path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "input"


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    model = root
    for part in loc:
        model = model.model_fields[part].annotation
    return model


def shown(value: Any) -> str:
    """A value as the client wrote it (JSON), cut short so that a stray base64 string stays readable."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def counted(number: int, noun: str) -> str:
    """``"1 image"``, ``"2 images"``, ``"0 images"``: a count and its noun, plural unless it is one."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
