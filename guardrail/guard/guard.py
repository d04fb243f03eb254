"""The Guard: the one orchestrator.  screen the prompt -> generate -> score -> assess -> decide -> act, climbing
the regenerate ladder while the policy and the budget allow, then the policy's escalation.  Which scorer judges a
side follows from its baseline: the serving backend's own logprobs when the baseline was fitted for its scorer,
else the embedded scorer teacher-forcing the text (so the shipped baselines work in front of any backend).  The
clock is injected (budgets are tested without waiting); every text judged afresh feeds the drift monitors.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

from ..backends.base import Backend, GenerationRequest, Message
from ..baselines.model import Baseline
from ..baselines.registry import nearest_regime, regimes
from ..baselines.router import Route
from ..baselines.verdict import ScorerKind, Verdict, judge, unscorable
from ..cache import ScoreCache
from ..errors import BackendError, ConfigError, InputError
from ..types import Generation, Segment, Side
from .actions import ACTION_STRATEGIES, Candidate, deliver
from .check import check_output
from .decide import decide_side, most_severe
from .drift import PROCESS_DRIFT, DriftBoard, observed
from .policy import Policy, SideRules, load_policy
from .report import Attempt, GuardReport, Sampling, Shadow, SideDecision, Usage
from .result import GuardResult
from .review import InMemoryReviewQueue, ReviewQueue
from .routing import routed_sides
from .sides import (
    cancel_task,
    check_calls,
    check_tiers,
    judged_text,
    messages_of,
    n_output,
    pick_scorer,
    resolve_baselines,
)
from .streaming import StreamEvent, stream_chat

__all__ = ["Guard", "derive_seed", "resolve_baselines"]

SideName = Literal["prompt", "output"]


def derive_seed(request_id: str, attempt: int) -> int:
    """The seed of an attempt: from the request id and the attempt number, so a ladder is reproducible."""
    return int(hashlib.sha256(f"{request_id}\x00{attempt}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


class Guard:
    def __init__(
        self, policy: Policy, backend: Backend, *, scorer: Backend | None = None,
        baselines: Mapping[str, Baseline] | None = None, review_queue: ReviewQueue | None = None,
        clock: Callable[[], float] = time.monotonic, cache_size: int = 4096, score_cache: ScoreCache | None = None,
        output_regimes: Sequence[Baseline] | None = None, drift: DriftBoard | None = PROCESS_DRIFT,
    ) -> None:
        """``score_cache``: also keep prompt segments in this disk cache (off by default: it stores the text).
        ``output_regimes``: own-generation output baselines per sampling regime (default: the shipped
        ``<name>~*`` ones of the output baseline's name; ``[]``: none, always the policy's baseline).
        ``drift``: the drift monitors every text judged afresh feeds (default: the process's; None: none)."""
        self.policy, self.backend, self.scorer, self.drift = policy, backend, scorer, drift
        self._policy_hash = policy.hash  # (every report names it)
        self.review_queue: ReviewQueue = review_queue or InMemoryReviewQueue()
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str, str], Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._score_cache = score_cache
        self._judge_by: dict[str, tuple[ScorerKind, Backend]] = {}
        self.baselines = resolve_baselines(policy, baselines)
        for side, b in self.baselines.items():
            self._judge_by[side] = pick_scorer(policy, backend, scorer, side, b)
        self.routed = routed_sides(policy)  # sides whose baseline is `route`: one per domain, picked per text
        for side, routed in self.routed.items():
            if any(pick_scorer(policy, backend, scorer, side, b)[1] is not self._judge_by[side][1] for b in routed.all()):
                raise ConfigError(f"{self.policy.where(side, 'baseline')}: {side}: routed baselines need one scorer")
        # output baselines of the serving model's own generations, one per sampling regime: the nearest is used
        self.regimes: list[Baseline] = []
        if "output" in self.baselines:
            found = regimes(policy.output.baseline) if output_regimes is None else list(output_regimes)
            self.regimes = [b for b in found if b.scorer_id == backend.scorer.id and "temperature" in b.unit]
            check_tiers(policy, "output", self.regimes)

    @classmethod
    def from_policy(cls, name_or_path: str | Policy, backend: Backend | None = None, *,
                    scorer: Backend | None = None, **kw: Any) -> Guard:
        """A Guard for a shipped policy name or a YAML file; without a backend, the embedded model serves and
        scores (offline).  With a backend whose scorer no shipped baseline fits, pass the embedded scorer as
        ``scorer`` (or it is made)."""
        policy = name_or_path if isinstance(name_or_path, Policy) else load_policy(name_or_path)
        if backend is None or scorer is None:
            from ..backends.llamacpp import LlamaCppBackend

            if backend is None:
                backend = scorer if scorer is not None else LlamaCppBackend()
            if scorer is None:
                scorer = backend if isinstance(backend, LlamaCppBackend) else LlamaCppBackend()
        return cls(policy, backend, scorer=scorer, **kw)

    # ------------------------------------------------------------------ public API
    async def chat(
        self, messages: Sequence[Message | Mapping[str, Any]], *, model: str | None = None, max_tokens: int = 256,
        temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None, stop: Sequence[str] | str = (),
        request_id: str | None = None, top_logprobs: int = 0, logprobs: bool = False,
        extra: Mapping[str, Any] | None = None, raw_messages: Sequence[Mapping[str, Any]] | None = None,
        raw_prompt: str | None = None,
    ) -> GuardResult:
        """One guarded chat completion: the completion (or None, or a held/refusal one) and the report.
        ``logprobs`` / ``top_logprobs``: the caller wants the output's logprobs (the delivered generation is on
        the result; otherwise the backend is asked for them only when the serving model's own judge the output).
        ``extra`` / ``raw_messages``: forwarded as they came by a pass-through backend (tools, response_format,
        content parts ...); ``messages`` are then the texts screened.  ``raw_prompt``: a text completion (the
        model continues it without a chat template; ``messages`` holds it for screening)."""
        t0 = self._clock()
        msgs = messages_of(messages)
        report, cand = self._start(request_id, model)
        base = self.request_base(msgs, max_tokens=max_tokens, stop=stop, top_logprobs=top_logprobs,
                                 logprobs=logprobs, extra=extra, raw_messages=raw_messages, raw_prompt=raw_prompt)
        first = None
        if self._screen_concurrently():  # the first attempt starts now; released only once the prompt passes
            sampling = self._sampling(0, report.request_id, max_tokens, temperature, top_p, seed)
            first = asyncio.ensure_future(self._timed_generate(self.attempt_request(base, sampling)))
            report.timings.screen_concurrent = True
        try:
            prompt_action, ended = await self._screen(msgs, report, cand)
        except BaseException:
            await cancel_task(first)
            raise
        if ended is not None:
            await cancel_task(first)
            return self._done(ended, t0)
        out_action, out_reason = await self._ladder(base, report, cand, temperature=temperature, top_p=top_p,
                                                    seed=seed, first=first)
        return await self._finish(report, cand, prompt_action, out_action, out_reason, t0)

    async def _finish(self, report: GuardReport, cand: Candidate, prompt_action: str, out_action: str,
                      out_reason: str, t0: float) -> GuardResult:
        """Combine the sides into the final action (shadow, review, escalation) and act on it."""
        pol = self.policy
        t = self._clock()
        would = most_severe(prompt_action, out_action)
        final = most_severe(prompt_action if prompt_action in ("allow", "annotate") else "allow", out_action)
        if final == "regenerate":  # only in shadow mode: the ladder did not run
            final = pol.regenerate.on_exhausted
        if out_action != "allow" or report.regenerated or not report.reason:
            report.reason = out_reason + (f" (after {report.regenerated} regeneration"
                                          f"{'s' if report.regenerated > 1 else ''})" if report.regenerated else "")
        if pol.shadow:
            report.shadow = Shadow(would=would)
            report.reason = f"shadow: would {would} ({report.reason})" if would != "allow" else "shadow: allow"
            final = "allow"
        elif report.review is not None and final in ("allow", "annotate"):  # prompt under audit / approved
            final = "review" if report.review.mode == "audit" else final
        report.timings.decide_ms = (self._clock() - t) * 1e3
        if report.review is not None and final == "review":
            return self._done(deliver(report, cand, "review"), t0)
        res = await ACTION_STRATEGIES[final].apply(report, cand, "output", pol, self.review_queue)
        assert res is not None
        return self._done(res, t0)

    def _start(self, request_id: str | None, model: str | None) -> tuple[GuardReport, Candidate]:
        pol = self.policy
        report = GuardReport(request_id=request_id or uuid.uuid4().hex[:24], policy=pol.name, policy_hash=self._policy_hash,
                             action="allow", reason="", baselines=self._baseline_ids(),
                             scorers={s: k for s, (k, _) in self._judge_by.items()})
        return report, Candidate(model=model or self.backend.scorer.model, text=None, finish_reason=None)

    async def _screen(self, msgs: list[Message], report: GuardReport,
                      cand: Candidate) -> tuple[str, GuardResult | None]:
        """Screen the prompt into ``report``: its action, and the result when the request ends there."""
        if "prompt" not in self._judge_by:
            return "allow", None
        t = self._clock()
        report.prompt = await self.screen_messages(msgs)
        report.timings.screen_ms = (self._clock() - t) * 1e3
        action = report.prompt.action
        report.reason = report.prompt.reason
        if action in ("reject", "review") and not self.policy.shadow:
            res = await ACTION_STRATEGIES[action].apply(report, cand, "prompt", self.policy, self.review_queue)
            if res is not None:
                return action, res
        return action, None

    def stream(self, messages: Sequence[Message | Mapping[str, Any]], **kw: Any) -> AsyncIterator[StreamEvent]:
        """A guarded streamed chat: :class:`StreamDelta` events of released text (each assessed before it is
        released), then one :class:`StreamEnd` with the result and report (see guard/streaming.py)."""
        return stream_chat(self, messages, **kw)

    async def check_output(self, messages: Sequence[Message | Mapping[str, Any]], output: str | Mapping[str, Any],
                           *, temperature: float = 0.0,
                           tools: Sequence[Mapping[str, Any]] | None = None) -> SideDecision:
        """Judge an output the caller already has (an agent's planned answer or tool call) as the reply to
        ``messages``, without generating anything (see guard/check.py)."""
        return await check_output(self, messages, output, temperature=temperature, tools=tools)

    async def screen_messages(self, messages: Sequence[Message | Mapping[str, Any]]) -> SideDecision:
        """The prompt side alone: each message whose role the policy screens, judged (cached by content hash),
        combined into one request-level decision."""
        rules = self.policy.prompt
        if rules is None or "prompt" not in self._judge_by:
            raise ConfigError(f"policy {self.policy.name} does not screen prompts")
        kind, scorer = self._judge_by["prompt"]
        verdicts, cached = [], 0
        for i, m in enumerate(messages_of(messages)):
            if m.role not in rules.roles or not m.content.strip():
                continue
            b, route = self.baseline_for("prompt", m.content)
            key = (scorer.text_cache_key, b.id, hashlib.sha256(m.content.encode("utf-8", "surrogatepass")).hexdigest())
            v = self._cache.get(key)
            if v is None:
                v = await self._judge_text(kind, scorer, b, m.content)
                self._remember(key, v)
            else:
                cached += 1
                self._cache.move_to_end(key)
            verdicts.append(v.model_copy(update={"message": i, "role": m.role, "route": route, "spans": [
                s.model_copy(update={"message": i}) for s in v.spans]}))
        if not verdicts:
            return SideDecision(side="prompt", action="allow", reason=f"no {'/'.join(rules.roles)} message to screen")
        d = decide_side("prompt", rules, verdicts)
        d.cached = cached
        return d

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self.scorer is not None and self.scorer is not self.backend:
            await self.scorer.aclose()

    # ------------------------------------------------------------------ the ladder
    def request_base(self, msgs: list[Message], *, max_tokens: int, stop: Sequence[str] | str, top_logprobs: int,
                     logprobs: bool, extra: Mapping[str, Any] | None,
                     raw_messages: Sequence[Mapping[str, Any]] | None, raw_prompt: str | None = None) -> GenerationRequest:
        """The generation request every attempt starts from (sampling set per attempt)."""
        own = self._judge_by.get("output", ("", self.backend))[0] == "serving"
        asked = top_logprobs  # the caller's alternatives; the guard's own need only their entropy
        if own and not self.backend.capabilities.exact_entropy:  # as many alternatives as the baselines saw
            ks = [b.entropy_k for b in [self.baselines["output"], *self.regimes]]
            # (a k above 20: entropies over the whole vocabulary, which no top-k request gives)
            top_logprobs = max([top_logprobs, *(k for k in ks if k is not None and k <= 20)])
        return GenerationRequest(messages=msgs, max_tokens=max_tokens, stop=[stop] if isinstance(stop, str) else
                                 list(stop), top_logprobs=top_logprobs, logprobs=logprobs or own or top_logprobs > 0,
                                 alternatives=asked > 0,
                                 extra=dict(extra or {}),
                                 raw_messages=[dict(m) for m in raw_messages] if raw_messages is not None else None,
                                 raw_prompt=raw_prompt)

    def attempt_request(self, base: GenerationRequest, sampling: Sampling) -> GenerationRequest:
        """``base`` with an attempt's sampling (and its corrective system note, if any)."""
        upd: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed}
        if sampling.system_note is not None and base.raw_prompt is None:  # a raw text takes no system note
            upd["messages"] = [Message(role="system", content=sampling.system_note), *base.messages]
            if base.raw_messages is not None:
                upd["raw_messages"] = [{"role": "system", "content": sampling.system_note}, *base.raw_messages]
        return base.model_copy(update=upd)

    def _screen_concurrently(self) -> bool:
        """Generate while the prompt is screened: only when the policy allows it, the prompt is screened at all,
        and by another model than the one generating (the same model would only queue behind itself)."""
        rules = self.policy.prompt
        judged = self._judge_by.get("prompt")
        return rules is not None and judged is not None and rules.concurrent and judged[1] is not self.backend

    async def _timed_generate(self, req: GenerationRequest) -> tuple[Generation, float]:
        t = self._clock()
        gen = await self.backend.generate(req)
        return gen, (self._clock() - t) * 1e3

    async def _ladder(self, base: GenerationRequest, report: GuardReport, cand: Candidate, *, temperature: float,
                      top_p: float, seed: int | None,
                      first: asyncio.Future[tuple[Generation, float]] | None = None) -> tuple[str, str]:
        pol, t0 = self.policy, self._clock()
        attempt, rid, max_tokens = 0, report.request_id, base.max_tokens
        while True:
            sampling = self._sampling(attempt, rid, max_tokens, temperature, top_p, seed)
            req = self.attempt_request(base, sampling)
            req_msgs = req.messages
            if attempt == 0 and first is not None:
                gen, gen_ms = await first
            else:
                gen, gen_ms = await self._timed_generate(req)
            usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=n_output(gen),
                          total_tokens=gen.prompt_tokens + n_output(gen))
            for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
                setattr(report.usage, k, getattr(report.usage, k) + getattr(usage, k))
            t = self._clock()
            decision = (await self._judge_output(req_msgs, gen, sampling.temperature, req.extra.get("tools"))
                        if "output" in self._judge_by else None)
            score_ms = (self._clock() - t) * 1e3
            action = decision.action if decision is not None else "allow"
            report.attempts.append(Attempt(index=attempt, sampling=sampling, action=action, output=decision,
                                           finish_reason=gen.finish_reason, text=gen.output.text, usage=usage,
                                           generate_ms=gen_ms, score_ms=score_ms))
            report.timings.generate_ms += gen_ms
            report.timings.score_ms += score_ms
            cand.text, cand.finish_reason, cand.generation = gen.output.text, gen.finish_reason, gen
            reason = decision.reason if decision is not None else "output not checked"
            if action != "regenerate" or pol.shadow:
                return action, reason
            why = self._exhausted(report, attempt, max_tokens, t0)
            if why is not None:
                report.budget_exhausted = why if why in ("tokens", "seconds") else None
                report.attempts[-1].action = pol.regenerate.on_exhausted
                return pol.regenerate.on_exhausted, f"{reason}; ladder exhausted ({why}): {pol.regenerate.on_exhausted}"
            attempt += 1
            report.regenerated += 1

    def _exhausted(self, report: GuardReport, attempt: int, max_tokens: int, t0: float) -> str | None:
        pol = self.policy
        if attempt >= pol.regenerate.max_attempts:
            return f"{pol.regenerate.max_attempts} retries"
        if pol.budget.tokens is not None:
            need = report.usage.total_tokens + report.attempts[-1].usage.prompt_tokens + max_tokens
            if need > pol.budget.tokens:
                return "tokens"
        if pol.budget.seconds is not None and self._clock() - t0 >= pol.budget.seconds:
            return "seconds"
        return None

    def _sampling(self, attempt: int, rid: str, max_tokens: int, temperature: float, top_p: float,
                  seed: int | None) -> Sampling:
        if attempt == 0:
            return Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                            seed=seed if seed is not None else derive_seed(rid, 0))
        ladder = self.policy.regenerate.ladder
        rung = ladder[min(attempt - 1, len(ladder) - 1)]
        return Sampling(temperature=rung.temperature if rung.temperature is not None else temperature,
                        top_p=rung.top_p if rung.top_p is not None else top_p, max_tokens=max_tokens,
                        seed=derive_seed(rid, attempt), system_note=rung.system_note)

    # ------------------------------------------------------------------ judging
    async def _judge_text(self, kind: ScorerKind, scorer: Backend, b: Baseline, text: str) -> Verdict:
        try:
            seg = await self._score_prompt(scorer, text)
        except BackendError as e:  # no logprobs, unreachable, busy: the fail mode decides
            return unscorable("prompt", str(e), scorer=scorer.text_scorer.id, scorer_kind=kind, baseline=b.id)
        return observed(self.drift, b, judge(b, seg, side="prompt", scorer_kind=kind))

    async def _score_prompt(self, scorer: Backend, text: str) -> Segment:
        if self._score_cache is None:
            return await scorer.score(text, side=Side.PROMPT)
        key = scorer.text_cache_key
        hit = self._score_cache.get_many(key, Side.PROMPT, [text]).get(text)
        if hit is None:
            hit = await scorer.score(text, side=Side.PROMPT)
            self._score_cache.put_many([hit], key=key)
        return hit

    def _baseline_ids(self) -> dict[str, str]:
        return {s: "route" if s in self.routed else b.id for s, b in self.baselines.items()}

    def baseline_for(self, side: str, text: str) -> tuple[Baseline, Route | None]:
        """The baseline ``text`` is judged by on ``side``: the policy's, or, when it routes, its domain's."""
        routed = self.routed.get(side)
        return (self.baselines[side], None) if routed is None else routed.pick(text)

    def _regime(self, temperature: float) -> tuple[Baseline | None, dict[str, Any] | None]:
        """The own-generation baseline of the nearest sampling regime, for the serving model's own output."""
        b = nearest_regime(self.regimes, temperature)
        t = float(b.unit["temperature"]) if b is not None else 0.0
        return b, b and {"baseline": b.id, "fitted_temperature": t, "requested_temperature": temperature,
                         "distance": round(abs(t - temperature), 6)}

    async def _judge_output(self, msgs: list[Message], gen: Generation, temperature: float,
                            tools: Sequence[Any] | None = None) -> SideDecision:
        rules: SideRules = self.policy.output  # type: ignore[assignment]
        kind, scorer = self._judge_by["output"]
        text = judged_text(gen)
        b, regime = self._regime(temperature) if kind == "serving" else (None, None)
        route = None
        if b is None:
            b, route = self.baseline_for("output", text)
        if not text.strip():
            v = unscorable("output", "empty output", scorer=scorer.scorer.id, scorer_kind=kind, baseline=b.id)
        elif kind == "serving" and not any(t.scored for t in gen.output.tokens):
            v = unscorable("output", "the backend returned no output logprobs", scorer=scorer.scorer.id,
                           scorer_kind=kind, baseline=b.id)
        elif kind == "serving":
            v = observed(self.drift, b, judge(b, gen.output, side="output", scorer_kind=kind))
        else:
            try:
                seg = await scorer.score_reply([m.model_dump() for m in msgs], text)  # type: ignore[attr-defined]
            except (BackendError, InputError) as e:
                v = unscorable("output", str(e), scorer=scorer.scorer.id, scorer_kind=kind, baseline=b.id)
            else:
                v = observed(self.drift, b, judge(b, seg, side="output", scorer_kind=kind))
        v.route = route
        d = decide_side("output", rules, [v])
        d.regime = regime
        return check_calls(d, rules, gen, tools)

    def _remember(self, key: tuple[str, str, str], v: Verdict) -> None:
        self._cache[key] = v
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _done(self, res: GuardResult, t0: float) -> GuardResult:
        res.report.timings.total_ms = (self._clock() - t0) * 1e3
        return res
