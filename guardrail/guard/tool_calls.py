"""Is a tool call one an agent can act on? (pure)  Its function is among the tools the request offered, its
arguments are one JSON object, and that object satisfies the tool's ``parameters`` JSON Schema.

A perplexity verdict says whether the call's text is typical; this says whether it is well-formed: an agent that
would execute ``get_wether({"city": 3})`` learns it before acting.  The policy's ``invalid_tool_call`` action
(output side) decides what a problem means (e.g. ``regenerate`` under ``agent-self-check``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["tool_call_problems"]


def _offered(tools: Sequence[Any]) -> dict[str, Any]:
    out = {}
    for t in tools:
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping) and t["function"].get("name"):
            out[str(t["function"]["name"])] = t["function"].get("parameters")
    return out


def _schema_problems(args: Any, schema: Any) -> list[str]:
    if not isinstance(schema, Mapping) or not schema:
        return []
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        return [f"the tool's parameters are not a valid JSON Schema ({e.message})"]
    errs = sorted(cls(schema).iter_errors(args), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}" for e in errs[:5]]


def tool_call_problems(calls: Sequence[Any], tools: Sequence[Any] | None) -> list[str]:
    """One line per problem, ``[]`` when every call is well-formed.  Without ``tools`` (the request offered
    none) only the arguments' JSON is checked."""
    offered = _offered(tools or [])
    out: list[str] = []
    for i, c in enumerate(calls):
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping):
            out.append(f"tool_calls[{i}]: no function")
            continue
        name = fn.get("name")
        where = f"tool_calls[{i}] {name!r}"
        if tools and name not in offered:
            out.append(f"{where}: not among the tools offered ({', '.join(sorted(offered)) or 'none'})")
            continue
        raw = fn.get("arguments")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as e:
            out.append(f"{where}: arguments are not JSON ({e.msg} at character {e.pos})")
            continue
        if not isinstance(args, dict):
            out.append(f"{where}: arguments are not a JSON object")
            continue
        out.extend(f"{where}: {p}" for p in _schema_problems(args, offered.get(name)))
    return out
