"""The Guard's streaming path with the scripted backend (claiming the embedded scorer) and the shipped
own-generation baselines: tokens released only once assessed, a degenerate stream cut at a checkpoint with the
backend's stream closed, the final whole-output decision before the held-back tail, prompt rejection before any
generation, shadow mode."""

from __future__ import annotations

import asyncio

import numpy as np
from guard_helpers import benign, gibberish_suffix, segment

from guardrail.backends.base import TokenEvent
from guardrail.baselines.registry import resolve
from guardrail.guard import Guard, StreamDelta, StreamEnd, StreamStart, load_policy
from guardrail.types import Side

USER = [{"role": "user", "content": "placeholder: the scripted scorer answers"}]


def events(seg, finish="stop") -> list[TokenEvent]:
    out = [TokenEvent(index=i, token=t, text=t.text) for i, t in enumerate(seg.tokens)]
    out[-1].finish_reason = finish
    out[-1].prompt_tokens = 12
    return out


def typical(n: int, seed: int = 3):
    """Output numbers typical of the embedded model's own sampling at T=0.7 (NLL ~ gamma, entropy ~ 2 nats)."""
    rng = np.random.default_rng(seed)
    return segment(list(rng.gamma(1.2, 0.9, n)), list(rng.uniform(1.0, 2.5, n)), Side.OUTPUT)


def salad_after(n_ok: int, n_bad: int, seed: int = 4):
    rng = np.random.default_rng(seed)
    nll = list(rng.gamma(1.2, 0.9, n_ok)) + list(rng.uniform(10, 13, n_bad))
    ent = list(rng.uniform(1.0, 2.5, n_ok)) + list(rng.uniform(1.0, 2.0, n_bad))
    words = [f"ok{i % 7}" for i in range(n_ok)] + [f"z{i}q" for i in range(n_bad)]
    return segment(nll, ent, Side.OUTPUT, words)


def collect(guard: Guard, **kw):
    async def go():
        return [ev async for ev in guard.stream(USER, temperature=0.7, **kw)]
    return asyncio.run(go())


def make(script, policy="default"):
    from guard_helpers import embedded_scorer

    from guardrail.backends.scripted import ScriptedBackend
    be = ScriptedBackend(script, scorer=embedded_scorer())
    return Guard(load_policy(policy) if isinstance(policy, str) else policy, be), be


def test_typical_stream_is_released_checkpoint_by_checkpoint_then_allowed():
    seg = typical(70)
    guard, be = make([benign(), events(seg)])
    out = collect(guard, max_tokens=80)
    deltas = [e for e in out if isinstance(e, StreamDelta)]
    end = out[-1]
    assert isinstance(out[0], StreamStart) and out[0].report.prompt.action == "allow"
    assert isinstance(end, StreamEnd) and not end.aborted and end.streamed
    # the shipped regime baselines carry a whole-stream calibration: its interval (8) and cut-off are used
    assert [len(d.tokens) for d in deltas] == [8] * 8 + [6]  # held back until assessed; the tail at the end
    assert "".join(d.text for d in deltas) == seg.text
    r = end.result.report
    assert r.action in ("allow", "annotate") and end.finish_reason == "stop"
    assert r.stream is not None and [c.tokens for c in r.stream.checkpoints] == list(range(8, 65, 8))
    cal = guard.regimes[-1].stream
    assert r.stream.method == "calibrated" and r.stream.check_every == cal.check_every == 8
    assert r.stream.threshold == cal.threshold(0.01) and r.stream.calibration_n == cal.n
    assert r.stream.planned_checkpoints == 10 and not r.stream.beyond_calibrated
    assert r.stream.released_tokens == 70 and r.stream.aborted_at is None
    assert r.attempts[0].output.regime["fitted_temperature"] == 0.7
    assert r.usage.completion_tokens == 70 and r.usage.prompt_tokens == 12
    assert be.streams == [(70, True)]


def test_degenerate_stream_is_cut_at_a_checkpoint_and_the_backend_stream_closed():
    seg = salad_after(20, 200)
    guard, be = make([benign(), events(seg, "length")])
    out = collect(guard, max_tokens=256)
    end = out[-1]
    assert isinstance(end, StreamEnd) and end.aborted and end.finish_reason == "content_filter"
    r = end.result.report
    assert r.action == "reject" and r.stream.aborted_at is not None and r.stream.aborted_at <= 64
    assert r.stream.checkpoints[-1].abort and r.stream.checkpoints[-1].tail_p <= r.stream.threshold
    released = sum(len(e.tokens) for e in out if isinstance(e, StreamDelta))
    assert released == r.stream.released_tokens < r.stream.aborted_at  # the cut checkpoint's tokens never left
    assert be.streams == [(r.stream.aborted_at, False)]  # closed early: the backend request is cancelled
    assert r.usage.completion_tokens == r.stream.aborted_at
    assert "cut at token" in r.reason


def test_rejected_prompt_ends_before_any_generation():
    guard, be = make([gibberish_suffix()])
    out = collect(guard)
    assert len(out) == 1 and isinstance(out[0], StreamEnd) and not out[0].streamed  # no StreamStart
    assert out[0].result.error is not None and out[0].result.report.action == "reject"
    assert [c[0] for c in be.calls] == ["score"]


def test_shadow_stream_reports_the_would_be_cut_and_delivers_everything():
    seg = salad_after(20, 100)
    guard, be = make([benign(), events(seg, "length")], "shadow")
    out = collect(guard, max_tokens=120)
    end = out[-1]
    assert not end.aborted and end.result.report.action == "allow"
    assert end.result.report.stream.aborted_at is not None  # where it would have been cut
    assert "".join(e.text for e in out if isinstance(e, StreamDelta)) == seg.text
    assert be.streams == [(120, True)]


def test_without_a_stream_calibration_the_policy_interval_and_bonferroni_apply():
    from guard_helpers import embedded_scorer

    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.baselines.registry import regimes

    seg = typical(70)
    be = ScriptedBackend([benign(), events(seg)], scorer=embedded_scorer())
    plain = [b.model_copy(update={"stream": None}) for b in regimes("general")]
    guard = Guard(load_policy("default"), be, output_regimes=plain)
    out = collect(guard, max_tokens=80)
    deltas = [e for e in out if isinstance(e, StreamDelta)]
    assert [len(d.tokens) for d in deltas] == [16, 16, 16, 16, 6]
    info = out[-1].result.report.stream
    assert info.method == "bonferroni" and info.planned_checkpoints == 5 and info.threshold == 0.01 / 5


def test_a_stream_without_checkpoints_passes_through_and_is_judged_at_the_end():
    pol = load_policy("default")
    pol = pol.model_copy(update={"stream": pol.stream.model_copy(update={"enabled": False})})
    seg = typical(20)
    guard, _be = make([benign(), events(seg)], pol)
    out = collect(guard, max_tokens=32)
    assert [len(e.tokens) for e in out if isinstance(e, StreamDelta)] == [1] * 19 + [1]
    assert out[-1].result.report.stream is None and out[-1].result.report.attempts[0].output.p_value is not None


def _remote(scorer_script, backend_script, gen_delay=0.0):
    from guard_helpers import embedded_scorer

    from guardrail.backends.scripted import ScriptedBackend
    scorer = ScriptedBackend(scorer_script, scorer=embedded_scorer())
    remote = ScriptedBackend(backend_script, delay=gen_delay)
    return Guard(load_policy("default"), remote, scorer=scorer, output_regimes=[]), remote, scorer


def test_remote_stream_starts_while_the_prompt_is_screened_and_releases_nothing_before():
    seg = typical(20)
    guard, remote, scorer = _remote([benign(), benign(20, seed=5, side=Side.OUTPUT)], [events(seg)], gen_delay=0.01)
    scorer.delay = 0.15  # the stream has begun when the verdict comes
    out = collect(guard, max_tokens=32)
    assert isinstance(out[0], StreamStart) and out[0].report.timings.screen_concurrent
    assert "".join(e.text for e in out if isinstance(e, StreamDelta)) == seg.text
    assert out[-1].result.report.action in ("allow", "annotate") and remote.streams == [(20, True)]


def test_remote_stream_of_a_rejected_prompt_is_cancelled():
    seg = typical(200)
    guard, remote, scorer = _remote([gibberish_suffix()], [events(seg, "length")], gen_delay=0.01)
    scorer.delay = 0.15
    out = collect(guard, max_tokens=256)
    assert len(out) == 1 and isinstance(out[0], StreamEnd) and out[0].result.report.action == "reject"
    assert len(remote.streams) == 1 and remote.streams[0][1] is False and 0 < remote.streams[0][0] < 200


def test_embedded_checkpoints_teacher_force_a_remote_stream_and_cut_it():
    """stream.embedded_every = 10: every 10 streamed tokens of another backend the answer so far is teacher-forced
    by the (embedded-identity) scorer and its settled tokens (before the last word) assessed by the output
    baseline's calibration over every prefix; the second checkpoint reads word salad: the stream is cut there,
    the client got the first 10 tokens only, the backend's stream was closed."""
    from guard_helpers import embedded_scorer, word_salad

    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.guard.policy import parse_policy

    pol = parse_policy("name: tf\nprompt:\n  baseline: general\n  tiers: [{p: 0.001, action: reject}]\n"
                       "output:\n  baseline: general\n  tiers: [{p: 0.01, action: reject}]\n"
                       "stream: {embedded_every: 10, abort_p: 0.01}\n", "tf.yaml")
    seg = typical(40)
    scorer = ScriptedBackend([benign(), benign(10, seed=6, side=Side.OUTPUT), word_salad(20)],
                             scorer=embedded_scorer())
    remote = ScriptedBackend([events(seg, "length")], delay=0.01)  # still generating when the cut comes
    guard = Guard(pol, remote, scorer=scorer, output_regimes=[])
    out = collect(guard, max_tokens=40)
    released = "".join(e.text for e in out if isinstance(e, StreamDelta))
    text10 = "".join(t.text for t in seg.tokens[:10])
    assert released == text10  # held back until the first checkpoint passed; nothing after
    end = out[-1]
    st = end.result.report.stream
    assert end.finish_reason == "content_filter" and end.aborted and end.result.report.action == "reject"
    cal = resolve("general", "output").stream
    assert cal.every_prefix and cal.source == "teacher_forced" and st.check_every == 10 and st.method == "calibrated"
    assert st.threshold == cal.threshold(0.01) and st.calibration_n == cal.n
    assert [c.tokens for c in st.checkpoints] == [10, 20] and st.aborted_at == 20 and not st.checkpoints[0].abort
    assert "teacher-forced" in end.result.report.attempts[0].output.reason
    replies = [arg[1] for name, arg in scorer.calls if name == "score_reply"]
    assert replies == [text10, "".join(t.text for t in seg.tokens[:20])]
    assert remote.streams[0][1] is False and remote.streams[0][0] < 40  # the backend's stream was closed


def test_embedded_checkpoints_off_by_default_a_remote_stream_is_judged_at_its_end():
    seg = typical(20)
    guard, _remote_be, scorer = _remote([benign(), benign(20, seed=5, side=Side.OUTPUT)], [events(seg)])
    out = collect(guard, max_tokens=32)
    assert guard.policy.stream.embedded_every == 0 and out[-1].result.report.stream is None
    assert [name for name, _ in scorer.calls] == ["score", "score_reply"]  # the whole answer, once
