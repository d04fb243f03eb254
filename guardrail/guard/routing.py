"""``baseline: route`` in a policy: the shipped domain router picks, per text, the baseline of the text's domain
(code, chat, support, legal, medical, wiki…), and its fallback (``global``) when it is unsure.

Every baseline a side may route to is loaded and its tiers checked when the Guard is built, so a request never
loads a file and a tier below any routed baseline's resolution is refused at load, like a named baseline.  The
verdict of each text carries the route (domain, the router's confidence, ``router`` / ``fallback`` /
``explicit``) beside the id of the baseline it was judged by.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..baselines.model import Baseline, BaselineError
from ..baselines.registry import resolve, shipped_dir
from ..baselines.router import Route, Router
from ..errors import ConfigError
from .policy import Policy

__all__ = ["ROUTE", "Routed", "fallback_name", "routed_sides"]

ROUTE = "route"  # the policy's baseline name that asks for routing


def _router(path: str | Path | None = None) -> Router:
    return Router.load(path or shipped_dir() / "router.json")


def fallback_name() -> str:
    """The domain a routed side falls back to (its baseline stands for the side: ids, scorer)."""
    return _router().fallback


class Routed:
    """The router and the baseline of each domain it can answer (its classes and its fallback) for one side."""

    def __init__(self, router: Router, baselines: dict[str, Baseline]) -> None:
        missing = sorted({*router.classes, router.fallback} - set(baselines))
        if missing:
            raise ValueError(f"no baseline for routed domain(s) {', '.join(missing)}")
        self.router, self.baselines = router, baselines

    @classmethod
    def load(cls, side: str, path: str | Path | None = None) -> Routed:
        """The shipped router, each domain's baseline for ``side`` (a side-specific one, else the text one)."""
        router = _router(path)
        return cls(router, {d: resolve(d, side) for d in dict.fromkeys([*router.classes, router.fallback])})

    @property
    def fallback(self) -> Baseline:
        return self.baselines[self.router.fallback]

    def all(self) -> Iterable[Baseline]:
        return self.baselines.values()

    def pick(self, text: str) -> tuple[Baseline, Route]:
        route = self.router.route(text)
        return self.baselines[route.domain], route


def routed_sides(policy: Policy) -> dict[str, Routed]:
    """Side -> :class:`Routed` for each side whose policy baseline is ``route`` (tiers checked against every
    baseline it may route to; errors name the policy file and line)."""
    from .sides import check_tiers

    out = {}
    for side, rules in policy.sides().items():
        if rules.baseline != ROUTE:
            continue
        try:
            out[side] = Routed.load(side)
        except (BaselineError, ValueError) as e:
            raise ConfigError(f"{policy.where(side, 'baseline')}: {side}.baseline: route: {e}") from None
        check_tiers(policy, side, list(out[side].all()))
    return out
