"""Shipped baselines (package data, guardrail/data/baselines/<domain>.<side>.json) and lookup by name."""

from __future__ import annotations

from pathlib import Path

from .model import Baseline, BaselineError, load_baseline

__all__ = ["regimes", "resolve", "shipped", "shipped_dir"]


def shipped_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "baselines"


def shipped() -> dict[tuple[str, str], Path]:
    out = {}
    for p in sorted(shipped_dir().glob("*.json")):
        parts = p.name.split(".")
        if len(parts) == 3:
            out[(parts[0], parts[1])] = p
    return out


def resolve(name: str, side: str = "text") -> Baseline:
    """A baseline file path, or a shipped domain id (side-specific first, else the ``text`` baseline)."""
    p = Path(name)
    if p.suffix == ".json" or p.exists():
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
