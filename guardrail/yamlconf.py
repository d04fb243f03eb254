"""YAML documents validated by pydantic, every error in one line naming the file, the line and the field.

Used by policies and by the proxy's config: ``yaml.SafeLoader`` only (no tags, no objects), a line map of the
document so that a pydantic error's location points at the line a user has to change.
"""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

__all__ = ["line_map", "parse_yaml_model"]

M = TypeVar("M", bound=BaseModel)


def line_map(node: yaml.Node, path: tuple[Any, ...] = (), out: dict | None = None) -> dict[tuple[Any, ...], int]:
    """``{path: line}`` for every key and item of a composed YAML document (1-based lines)."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[(*path, k.value)] = k.start_mark.line + 1
            line_map(v, (*path, k.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[(*path, i)] = v.start_mark.line + 1
            line_map(v, (*path, i), out)
    return out


def _duplicate_key(node: yaml.Node, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], int] | None:
    """The first key given twice in one mapping (its path and line): YAML keeps the last silently, so a setting
    written twice would be half-ignored."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            if k.value in seen:
                return (*path, k.value), k.start_mark.line + 1
            seen.add(k.value)
            found = _duplicate_key(v, (*path, k.value))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found = _duplicate_key(v, (*path, i))
            if found:
                return found
    return None


def parse_yaml_model(text: str, source: str, model: type[M], *, what: str,
                     error: type[ConfigError] = ConfigError) -> tuple[M, dict[tuple[Any, ...], int]]:
    """Validate a YAML document as ``model``; returns it with its line map.  ``what`` names the document in the
    message for a non-mapping (``"a policy"``)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise error(f"{where}: malformed YAML: {getattr(e, 'problem', None) or e}") from None
    lines = line_map(node) if node is not None else {}
    dup = _duplicate_key(node) if node is not None else None
    if dup is not None:
        raise error(f"{source}:{dup[1]}: {'.'.join(str(x) for x in dup[0])}: key given twice")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{source}: {what} is a YAML mapping")
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        line = next((lines[loc[:k]] for k in range(len(loc), -1, -1) if loc[:k] in lines), None)
        field = ".".join(str(x) for x in loc) or f"({what})"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        raise error(f"{source}{f':{line}' if line else ''}: {field}: {msg}") from None
    return obj, lines
