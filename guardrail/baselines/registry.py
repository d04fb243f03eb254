"""Baselines by name: the shipped ones (package data, guardrail/data/baselines/<domain>.<side>.json) and the
user's own (``guardrail baseline fit`` output in a directory registered with :func:`add_dir`, or listed in the
``GUARDRAIL_BASELINES`` environment variable, ``os.pathsep``-separated); a user's file of the same name wins."""

from __future__ import annotations

import os
from pathlib import Path

from .model import Baseline, BaselineError, load_baseline

__all__ = ["add_dir", "nearest_regime", "regimes", "remove_dir", "resolve", "shipped", "shipped_dir", "shipped_prompts"]

_extra_dirs: list[Path] = []


def shipped_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "baselines"


def shipped_prompts() -> Path:
    """The benign prompts shipped with the package: `guardrail baseline fit`'s default fitting data."""
    return Path(__file__).resolve().parents[1] / "data" / "prompts" / "benign.jsonl"


def add_dir(path: str | Path) -> None:
    """Also look up baselines by name in ``path`` (before the shipped ones)."""
    p = Path(path)
    if not p.is_dir():
        raise BaselineError(f"{p}: not a directory of baselines")
    if p not in _extra_dirs:
        _extra_dirs.append(p)


def remove_dir(path: str | Path) -> None:
    """Stop looking in ``path`` (registered with :func:`add_dir`; the registration is process-wide)."""
    p = Path(path)
    if p in _extra_dirs:
        _extra_dirs.remove(p)


def _dirs() -> list[Path]:
    env = [Path(d) for d in os.environ.get("GUARDRAIL_BASELINES", "").split(os.pathsep) if d]
    return [shipped_dir(), *env, *_extra_dirs]  # later wins


def shipped() -> dict[tuple[str, str], Path]:
    """(name, side) -> file, over the shipped and the registered directories."""
    out = {}
    for d in _dirs():
        for p in sorted(d.glob("*.json")):
            parts = p.name.split(".")
            if len(parts) == 3:
                out[(parts[0], parts[1])] = p
    return out


def resolve(name: str, side: str = "text") -> Baseline:
    """A baseline file path, or a shipped domain id (side-specific first, else the ``text`` baseline)."""
    p = Path(name)
    if p.suffix == ".json" or p.is_file():  # a name that is also a directory here is still a name
        return load_baseline(p)
    table = shipped()
    for key in ((name, side), (name, "text")):
        if key in table:
            return load_baseline(table[key])
    sides = sorted(sd for d, sd in table if d == name)
    if sides:
        raise BaselineError(f"no baseline {name!r} for side {side!r}; {name!r} is shipped for side "
                            f"{', '.join(sides)}: pass --side {sides[0]}")
    known = sorted({d for d, _ in table}) or ["(none shipped)"]
    raise BaselineError(f"no baseline {name!r} for side {side!r}; shipped domains: {', '.join(known)}")


def regimes(name: str, side: str = "output") -> list[Baseline]:
    """The sampling regimes fitted under ``name``: shipped files ``<name>~<regime>.<side>.json`` (output baselines
    of a model's own generations, one per sampling setting recorded in ``unit``)."""
    return [load_baseline(p) for (d, sd), p in shipped().items() if sd == side and d.startswith(f"{name}~")]


def nearest_regime(found: list[Baseline], temperature: float) -> Baseline | None:
    """The regime baseline whose fitted temperature is nearest (ties: the lower), None when there is none."""
    if not found:
        return None
    return min(found, key=lambda b: (abs(float(b.unit["temperature"]) - temperature), float(b.unit["temperature"])))
