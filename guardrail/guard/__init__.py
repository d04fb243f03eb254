"""Policies and the Guard: calibrated verdicts turned into the actions a user configured."""

from .guard import Guard, derive_seed
from .policy import Policy, PolicyError, load_policy, parse_policy, shipped_policies
from .report import GuardReport, SideDecision
from .result import GuardRejectedError, GuardResult
from .review import InMemoryReviewQueue, ReviewQueue
from .streaming import StreamDelta, StreamEnd, StreamEvent, StreamStart
from .sync import SyncGuard, run_sync

__all__ = [
    "Guard", "GuardRejectedError", "GuardReport", "GuardResult", "InMemoryReviewQueue", "Policy", "PolicyError",
    "ReviewQueue", "SideDecision", "StreamDelta", "StreamEnd", "StreamEvent", "StreamStart", "SyncGuard", "derive_seed", "load_policy", "parse_policy", "run_sync",
    "shipped_policies",
]
