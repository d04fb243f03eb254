"""Prometheus metrics of one proxy app (its own registry: two apps in one process never share counters).

Requests by route, model and status; final actions per policy; each side's action per policy; regenerations;
unscorable texts; latency per stage; and every baseline's realised p-values as a histogram, so that the flag
rate at any alpha is ``bucket(le=alpha) / count`` -- what calibration promised, measured on live traffic -- and
each baseline's drift monitor as the reports carry it (guard/drift.py: online conformal p-values, a test
martingale, per process).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..guard.report import GuardReport, SideDecision

__all__ = ["CONTENT_TYPE_LATEST", "ProxyMetrics"]

_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
_P = (0.0005, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


class ProxyMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("guardrail_requests", "HTTP requests answered", ["route", "model", "status"],
                                registry=r)
        self.actions = Counter("guardrail_actions", "final action of each guarded request", ["policy", "action"],
                               registry=r)
        self.side_actions = Counter("guardrail_side_actions", "each side's decision (every attempt on the output "
                                    "side)", ["policy", "side", "action"], registry=r)
        self.regenerations = Counter("guardrail_regenerations", "output regenerations", ["policy"], registry=r)
        self.unscorable = Counter("guardrail_unscorable", "texts judged without usable logprobs",
                                  ["policy", "side"], registry=r)
        self.tokens = Counter("guardrail_tokens", "tokens through the guard", ["model", "kind"], registry=r)
        self.stage_ms = Histogram("guardrail_stage_milliseconds", "time per stage of a guarded request",
                                  ["stage"], buckets=_MS, registry=r)
        self.p_values = Histogram("guardrail_p_value", "conformal p-values per baseline: the realised flag rate at "
                                  "alpha is the bucket le=alpha over the count", ["baseline", "side"], buckets=_P,
                                  registry=r)
        self.aborts = Counter("guardrail_stream_aborts", "streams cut at a checkpoint", ["policy"], registry=r)
        self.tokens_saved = Counter("guardrail_tokens_saved", "output tokens not generated thanks to an early abort "
                                    "(max_tokens minus the tokens generated when cut)", ["model"], registry=r)
        self.drift = Gauge("guardrail_drift_log10_martingale", "test martingale over each baseline's online "
                           "conformal p-values on this process's traffic since its last alarm (log10; an alarm at 2: "
                           "a false alarm with probability <= 1 %, Ville)", ["baseline", "side"], registry=r)
        self.drift_alarm = Gauge("guardrail_drift_alarms", "drift alarms raised by the baseline's monitor (each "
                                 "restarts it)", ["baseline", "side"], registry=r)
        self.in_flight = Gauge("guardrail_in_flight", "requests being handled", ["model"], registry=r)

    def observe(self, model: str, report: GuardReport) -> None:
        pol = report.policy
        self.actions.labels(pol, report.action).inc()
        if report.regenerated:
            self.regenerations.labels(pol).inc(report.regenerated)
        decisions: list[SideDecision] = [report.prompt] if report.prompt is not None else []
        decisions += [a.output for a in report.attempts if a.output is not None]
        for d in decisions:
            self.side_actions.labels(pol, d.side, d.action).inc()
            for v in d.verdicts:
                if not v.scorable:
                    self.unscorable.labels(pol, d.side).inc()
                elif v.p_value is not None and v.baseline:
                    self.p_values.labels(v.baseline, d.side).observe(v.p_value)
                    if v.drift is not None:
                        self.drift.labels(v.baseline, d.side).set(v.drift.log10_martingale)
                        self.drift_alarm.labels(v.baseline, d.side).set(v.drift.alarms)
        t = report.timings
        for stage in ("screen_ms", "generate_ms", "score_ms", "decide_ms", "total_ms"):
            self.stage_ms.labels(stage.removesuffix("_ms")).observe(getattr(t, stage))
        self.stage_ms.labels("overhead").observe(t.overhead_ms)
        self.tokens.labels(model, "prompt").inc(report.usage.prompt_tokens)
        self.tokens.labels(model, "completion").inc(report.usage.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
