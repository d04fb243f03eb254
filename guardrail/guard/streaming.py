"""Guarded streaming: the Guard's screen -> generate -> assess -> decide loop over a token stream.

The prompt is screened first (nothing is generated if it is rejected).  Output tokens are held back until a
checkpoint (every ``stream.check_every`` tokens) has assessed them; a checkpoint past the whole-stream abort
threshold ends the stream and closes the backend's stream (the request is cancelled there).  When the backend
finishes, the whole output gets the same decision as a non-streamed one before the held-back tail is released.

What a stream cannot do: regenerate once text has been released (a ``regenerate`` tier then takes the ladder's
``on_exhausted`` action).  With the embedded scorer teacher-forcing another backend's output (no own-logprob
baseline for the serving model), checkpoints need the scorer's logprobs of the answer so far: with the policy's
``stream.embedded_every`` = k, every k tokens the answer so far is teacher-forced and assessed
(:class:`~guardrail.guard.stream_assess.TeacherForcedCheckpoints`, held back until then); with 0 such a stream
passes through and is judged at its end (the report has no ``stream`` checkpoints).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backends.base import Message, TokenEvent
from ..backends.openai_logprobs import Origin
from ..types import Generation, Side, Token
from .report import Attempt, GuardReport, SideDecision, Usage
from .result import GuardResult
from .sides import messages_of
from .stream_assess import StreamAssessor, TeacherForcedCheckpoints

if TYPE_CHECKING:
    from .guard import Guard

__all__ = ["StreamDelta", "StreamEnd", "StreamEvent", "StreamStart", "merge_tool_calls", "stream_chat"]


@dataclass(slots=True)
class StreamDelta:
    """Text released to the client (every token of it assessed), with its tokens, and the tool-call deltas
    released with them (OpenAI ``delta.tool_calls`` entries as the backend sent them)."""

    text: str
    tokens: list[Token] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class StreamStart:
    """The prompt passed: generation starts (the report so far: the prompt's decision, ids, baselines)."""

    report: GuardReport


@dataclass(slots=True)
class StreamEnd:
    result: GuardResult
    finish_reason: str  # what the client's last chunk says: content_filter when cut, held or rejected
    aborted: bool = False  # cut at a checkpoint
    streamed: bool = False  # some text was released (False: it ended before generation, e.g. prompt rejected)


StreamEvent = StreamStart | StreamDelta | StreamEnd


class _Prefetch:
    """A backend stream read ahead into a queue while the prompt is screened (nothing leaves the Guard before
    the screen passes); closing it cancels the read and closes the backend's stream."""

    _END = object()

    def __init__(self, source: AsyncIterator[TokenEvent]) -> None:
        self._source = source
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            async for ev in self._source:
                self._q.put_nowait(ev)
            self._q.put_nowait(self._END)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # handed to the reader, raised where it reads
            self._q.put_nowait(e)
        finally:
            await self._source.aclose()  # type: ignore[attr-defined]

    def __aiter__(self) -> _Prefetch:
        return self

    async def __anext__(self) -> TokenEvent:
        item = await self._q.get()
        if item is self._END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return item

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _release(held: list[TokenEvent]) -> StreamDelta:
    return StreamDelta("".join(e.text for e in held if e.tool_calls is None),
                       [e.token for e in held if e.token is not None],
                       [c for e in held if e.tool_calls for c in e.tool_calls])


def _pieces(held: list[TokenEvent]) -> int:
    """Output tokens in ``held``: the events with a token, or with text where the backend sent no logprobs."""
    return sum(1 for e in held if e.token is not None or (e.text and e.tool_calls is None))


def merge_tool_calls(events: Sequence[TokenEvent]) -> list[dict[str, Any]]:
    """The streamed ``delta.tool_calls`` pieces put together, as a non-streamed message has them: per ``index``
    the first id, type and name, the arguments concatenated."""
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        for d in e.tool_calls or ():
            c = calls.setdefault(int(d.get("index") or 0), {"id": None, "type": "function",
                                                            "function": {"name": None, "arguments": ""}})
            c["id"] = c["id"] or d.get("id")
            c["type"] = d.get("type") or c["type"]
            fn = d.get("function") or {}
            c["function"]["name"] = c["function"]["name"] or fn.get("name")
            c["function"]["arguments"] += fn.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


async def stream_chat(
    guard: Guard, messages: Sequence[Message | Mapping[str, Any]], *, model: str | None = None, max_tokens: int = 256,
    temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None, stop: Sequence[str] | str = (),
    request_id: str | None = None, top_logprobs: int = 0, logprobs: bool = False,
    extra: Mapping[str, Any] | None = None, raw_messages: Sequence[Mapping[str, Any]] | None = None,
    raw_prompt: str | None = None,
) -> AsyncIterator[StreamEvent]:
    t0 = guard._clock()
    msgs = messages_of(messages)
    report, cand = guard._start(request_id, model)
    pol = guard.policy
    sampling = guard._sampling(0, report.request_id, max_tokens, temperature, top_p, seed)
    req = guard.attempt_request(guard.request_base(msgs, max_tokens=max_tokens, stop=stop, top_logprobs=top_logprobs,
                                                   logprobs=logprobs, extra=extra, raw_messages=raw_messages,
                                                   raw_prompt=raw_prompt),
                                sampling)
    early = _Prefetch(guard.backend.stream(req)) if guard._screen_concurrently() else None
    report.timings.screen_concurrent = early is not None
    try:
        prompt_action, ended = await guard._screen(msgs, report, cand)
    except BaseException:
        if early is not None:
            await early.aclose()
        raise
    if ended is not None:
        if early is not None:
            await early.aclose()  # the generation started alongside the screen is cancelled
        res = guard._done(ended, t0)
        yield StreamEnd(res, "content_filter" if res.completion is not None else "stop")
        return
    kind = guard._judge_by["output"][0] if "output" in guard._judge_by else None
    assessor = None
    out_baseline = guard.baselines.get("output")
    if kind == "serving" and pol.stream.enabled:
        regime, _ = guard._regime(sampling.temperature)
        # a routed output side has no text yet: the stream is assessed against the domain of the last message
        out_baseline = regime or guard.baseline_for("output", msgs[-1].content)[0]
        assessor = StreamAssessor(out_baseline, pol.stream, max_tokens)
        report.stream = assessor.info
    teacher = None
    if kind == "embedded" and pol.stream.enabled and pol.stream.embedded_every and raw_prompt is None:
        b_out = guard.baseline_for("output", msgs[-1].content)[0]
        teacher = TeacherForcedCheckpoints(b_out, pol.stream, max_tokens, guard._judge_by["output"][1],
                                           [m.model_dump() for m in msgs])
        report.stream = teacher.info
    checking = assessor is not None or teacher is not None
    events: list[TokenEvent] = []
    held: list[TokenEvent] = []
    released, aborted, finish, n_prompt = 0, False, None, None
    assess_s = 0.0
    yield StreamStart(report)
    t = guard._clock()
    agen = early if early is not None else guard.backend.stream(req)
    try:
        async for ev in agen:
            events.append(ev)
            held.append(ev)
            finish = ev.finish_reason or finish
            n_prompt = ev.prompt_tokens or n_prompt
            cp = None
            if assessor is not None and ev.token is not None:
                ta = guard._clock()
                cp = assessor.push(ev.token)
                assess_s += guard._clock() - ta
            elif teacher is not None and ev.tool_calls is None and (ev.text or ev.token is not None):
                ta = guard._clock()
                cp = await teacher.push(ev.text)
                assess_s += guard._clock() - ta
            if cp is not None and cp.abort and not pol.shadow:
                aborted = True
                break
            if (not checking or cp is not None) and not ev.finish_reason:
                delta = _release(held)
                released += _pieces(held)
                held.clear()
                yield delta
    finally:
        await agen.aclose()  # on an abort or a client gone: the backend's request is cancelled
    gen_ms = (guard._clock() - t - assess_s) * 1e3
    if teacher is not None:  # its session's cells are free for the final judgement (a client gone: evicted later)
        await teacher.aclose()
    tokens = [e.token for e in events if e.token is not None]
    text = "".join(e.text for e in events)  # what the tokens spell (tool-call markup included)
    content = "".join(e.text for e in events if e.tool_calls is None)  # what the client got as content
    calls = merge_tool_calls(events)
    entropy_k = (out_baseline.entropy_k if out_baseline is not None and guard.backend.capabilities.exact_entropy
                 else top_logprobs or None)
    seg = Origin.of(guard.backend.scorer).segment(text, Side.OUTPUT, tokens, entropy_k, [])
    gen = Generation(output=seg, finish_reason=finish or ("content_filter" if aborted else "length"),
                     prompt_tokens=n_prompt or 0, message_extra={"tool_calls": calls} if calls else {})
    t = guard._clock()
    if aborted:
        info = report.stream
        assert info is not None
        cp = info.checkpoints[-1]
        out_action = "reject"
        how = (f"calibrated on {info.calibration_n} streams" if info.method == "calibrated" else
               f"Bonferroni over {info.planned_checkpoints} checkpoints")
        tf = "; the embedded scorer teacher-forced the answer so far" if teacher else ""
        decision: SideDecision | None = SideDecision(
            side="output", action="reject", p_value=cp.p_value, tail_p=cp.tail_p, top_signal=cp.top_signal,
            reason=f"output cut at token {cp.tokens}: tail_p={cp.tail_p:.3g} <= {info.threshold:.3g} "
                   f"(stream budget {pol.stream.abort_p:g}, {how}; top signal {cp.top_signal}{tf})")
    else:
        decision = (await guard._judge_output(msgs, gen, sampling.temperature, req.extra.get("tools"))
                    if kind is not None else None)
        out_action = decision.action if decision is not None else "allow"
        if out_action == "regenerate" and not pol.shadow:
            out_action = pol.regenerate.on_exhausted
            decision.reason += f"; a streamed answer cannot be regenerated: {out_action}"  # type: ignore[union-attr]
    score_ms = (guard._clock() - t + assess_s) * 1e3
    n_out = len(tokens) or sum(1 for e in events if e.text or e.tool_calls)  # without logprobs: one per piece
    usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=n_out, total_tokens=gen.prompt_tokens + n_out)
    report.usage = usage
    report.attempts.append(Attempt(index=0, sampling=sampling, action=out_action, output=decision,
                                   finish_reason=gen.finish_reason, text=content, usage=usage, generate_ms=gen_ms,
                                   score_ms=score_ms))
    report.timings.generate_ms, report.timings.score_ms = gen_ms, score_ms
    cand.text, cand.finish_reason, cand.generation = content, gen.finish_reason, gen
    res = await guard._finish(report, cand, prompt_action, out_action,
                              decision.reason if decision is not None else "output not checked", t0)
    delivered = res.report.action in ("allow", "annotate") or (res.report.action == "review" and
                                                               res.report.review is not None and
                                                               res.report.review.mode == "audit")
    if held and delivered and not aborted:
        delta = _release(held)
        released += _pieces(held)
        yield delta
    if report.stream is not None:
        report.stream.released_tokens = released
    cut = aborted or not delivered
    yield StreamEnd(res, "content_filter" if cut else gen.finish_reason, aborted=aborted, streamed=released > 0)
