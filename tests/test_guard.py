"""The Guard with the scripted backend (claiming the embedded scorer's identity) and the real shipped baselines:
every action and tier, the ladder and its budget, fail modes, missing signals, shadow, review modes, message
screening and its cache, the report."""

from __future__ import annotations

import asyncio

import pytest
from guard_helpers import benign, embedded_scorer, generation, gibberish_suffix, segment, word_salad

from guardrail.backends.scripted import ScriptedBackend
from guardrail.errors import ConfigError, InputError, UnscorableError
from guardrail.guard import Guard, GuardRejectedError, InMemoryReviewQueue, SyncGuard, derive_seed, load_policy
from guardrail.guard.policy import parse_policy
from guardrail.types import Side

USER = [{"role": "user", "content": "placeholder: the scripted scorer answers"}]


def make(policy="default", script=(), **kw) -> tuple[Guard, ScriptedBackend]:
    backend = ScriptedBackend(script, scorer=embedded_scorer())
    pol = parse_policy(policy, "test.yaml") if "\n" in policy else load_policy(policy)
    kw.setdefault("output_regimes", [])  # the synthetic outputs are judged by the policy's own output baseline
    return Guard(pol, backend, **kw), backend


def run(coro):
    return asyncio.run(coro)


def custom(**sections: str) -> str:
    base = {
        "name": "name: t",
        "prompt": "prompt:\n  tiers:\n    - {p: 0.01, action: annotate}\n    - {p: 0.001, action: reject}",
        "output": "output:\n  tiers:\n    - {p: 0.05, action: annotate}\n    - {p: 0.01, action: regenerate}",
    }
    base.update(sections)
    return "\n".join(base.values()) + "\n"


def test_benign_request_is_allowed_with_a_full_report():
    guard, be = make("default", [benign(), generation(benign(60, seed=3))])
    res = run(guard.chat(USER, request_id="req-1"))
    r = res.report
    assert r.action == "allow" and res.error is None and res.status == 200
    assert res.completion["choices"][0]["finish_reason"] == "stop"
    assert res.content.startswith("the river")
    assert r.prompt.action == "allow" and r.prompt.p_value > 0.1 and r.prompt.n_tests == 1
    assert r.prompt.verdicts[0].message == 0 and r.prompt.verdicts[0].role == "user"
    assert len(r.attempts) == 1 and r.regenerated == 0
    assert r.attempts[0].sampling.seed == derive_seed("req-1", 0)
    assert r.attempts[0].output.p_value > 0.05 and r.attempts[0].action == "allow"
    assert r.baselines == {"prompt": guard.baselines["prompt"].id, "output": guard.baselines["output"].id}
    assert r.scorers == {"prompt": "serving", "output": "serving"}
    assert r.usage.prompt_tokens == 12 and r.usage.completion_tokens == 60 and r.usage.total_tokens == 72
    assert r.policy == "default" and r.policy_hash.startswith("sha256:")
    assert r.timings.total_ms >= r.timings.screen_ms >= 0
    assert [c[0] for c in be.calls] == ["score", "generate"] and be.remaining == 0


def test_gcg_suffix_is_rejected_before_generation_with_its_span():
    guard, be = make("default", [gibberish_suffix()])
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}]
    res = run(guard.chat(msgs))
    r = res.report
    assert r.action == "reject" and res.completion is None and res.status == 400
    assert res.error["error"]["code"] == "guardrail_rejected"
    assert r.prompt.p_value == pytest.approx(guard.baselines["prompt"].resolution)
    assert r.prompt.top_signal == "excess_cusum" and "reject" in r.reason
    (span,) = r.prompt.verdicts[0].spans
    assert span.message == 1  # the user message, not the system one (roles: [user])
    assert span.text.split()[0] == "x0q" and span.text.split()[-1] == "x23q"
    assert r.attempts == [] and [c[0] for c in be.calls] == ["score"]
    with pytest.raises(GuardRejectedError) as e:
        res.raise_for_error()
    assert e.value.status == 400 and e.value.report is r


def test_annotate_tier_delivers_with_the_report():
    pol = custom(prompt="prompt:\n  tiers:\n    - {p: 0.99, action: annotate}\n    - {p: 0.001, action: reject}")
    guard, _ = make(pol, [benign(), generation(benign(60, seed=3))])
    res = run(guard.chat(USER))
    assert res.report.action == "annotate" and res.report.prompt.tier == 0.99 and res.content


def test_degenerate_output_is_regenerated_and_the_retry_passes():
    guard, be = make("default", [benign(), generation(word_salad()), generation(benign(60, seed=4))])
    res = run(guard.chat(USER, request_id="r2", temperature=0.0))
    r = res.report
    assert r.action == "allow" and r.regenerated == 1
    assert [a.action for a in r.attempts] == ["regenerate", "allow"]
    s0, s1 = r.attempts[0].sampling, r.attempts[1].sampling
    assert (s0.temperature, s1.temperature, s1.top_p) == (0.0, 0.7, 0.95)  # the first rung of the ladder
    assert s1.seed == derive_seed("r2", 1) != s0.seed
    req = be.calls[2][1]
    assert req.temperature == 0.7 and req.seed == s1.seed
    assert r.attempts[0].output.p_value <= 0.01 and res.content.startswith("the river")
    assert r.usage.completion_tokens == 120


def test_ladder_exhausted_escalates_and_system_note_is_sent():
    guard, be = make("default", [benign(), *(generation(word_salad(seed=s)) for s in range(3))])
    res = run(guard.chat(USER))
    r = res.report
    assert r.action == "reject" and r.regenerated == 2 and res.status == 400
    assert [a.action for a in r.attempts] == ["regenerate", "regenerate", "reject"]
    assert "ladder exhausted (2 retries)" in r.reason
    third = be.calls[3][1]
    assert third.messages[0].role == "system" and "plainly" in third.messages[0].content
    assert r.attempts[2].sampling.system_note == third.messages[0].content


def test_token_budget_stops_the_ladder():
    pol = custom(budget="budget: {tokens: 150}")
    guard, _ = make(pol, [benign(), generation(word_salad())])
    res = run(guard.chat(USER, max_tokens=100))
    assert res.report.budget_exhausted == "tokens" and res.report.action == "reject"
    assert len(res.report.attempts) == 1


def test_time_budget_uses_the_injected_clock():
    now = [0.0]

    def clock():
        now[0] += 40.0  # every reading: 40 s later
        return now[0]

    pol = custom(budget="budget: {seconds: 60}")
    guard, _ = make(pol, [benign(), generation(word_salad())], clock=clock)
    res = run(guard.chat(USER))
    assert res.report.budget_exhausted == "seconds" and len(res.report.attempts) == 1


@pytest.mark.parametrize(("mode", "action"), [("open", "allow"), ("closed", "reject")])
def test_prompt_unscorable_fail_modes(mode, action):
    pol = custom(prompt=f"prompt:\n  unscorable: {mode}\n  tiers:\n    - {{p: 0.001, action: reject}}")
    script = [UnscorableError("no logprobs here")] + ([generation(benign(60))] if mode == "open" else [])
    guard, _ = make(pol, script)
    r = run(guard.chat(USER)).report
    assert r.action == action and r.prompt.fail_mode == f"unscorable: {mode}"
    assert r.prompt.verdicts[0].scorable is False and "no logprobs" in r.prompt.verdicts[0].reason


@pytest.mark.parametrize(("mode", "action"), [("open", "allow"), ("closed", "reject")])
def test_output_unscorable_fail_modes(mode, action):
    empty = segment([], [], Side.OUTPUT)
    pol = custom(output=f"output:\n  unscorable: {mode}\n  tiers:\n    - {{p: 0.01, action: reject}}")
    guard, _ = make(pol, [benign(), generation(empty)])
    r = run(guard.chat(USER)).report
    assert r.action == action and r.attempts[0].output.fail_mode == f"unscorable: {mode}"


def test_missing_signal_is_listed_and_its_fail_mode_applies():
    no_entropy = benign()
    for t in no_entropy.tokens:
        t.entropy = None
    guard, _ = make("default", [no_entropy, generation(benign(60))])
    r = run(guard.chat(USER)).report
    assert "excess_cusum" in r.prompt.missing and r.prompt.fail_mode == "missing_signal: open"
    assert r.action == "allow"
    pol = custom(prompt="prompt:\n  missing_signal: closed\n  tiers:\n    - {p: 0.001, action: reject}")
    guard, _ = make(pol, [no_entropy])
    r = run(guard.chat(USER)).report
    assert r.action == "reject" and r.prompt.fail_mode == "missing_signal: closed"


def test_shadow_reports_what_would_have_happened_and_allows():
    guard, be = make("shadow", [gibberish_suffix(), generation(word_salad())])
    res = run(guard.chat(USER))
    r = res.report
    assert r.action == "allow" and r.shadow.would == "reject" and res.content
    assert r.regenerated == 0 and len(r.attempts) == 1  # nothing is regenerated in shadow mode
    assert [c[0] for c in be.calls] == ["score", "generate"]


def test_review_defer_holds_the_answer():
    pol = custom(prompt="prompt:\n  tiers:\n    - {p: 0.001, action: review}", review="review: {mode: defer}")
    q = InMemoryReviewQueue()
    guard, _ = make(pol, [gibberish_suffix()], review_queue=q)
    res = run(guard.chat(USER))
    r = res.report
    assert r.action == "review" and r.review.status == "pending" and r.review.mode == "defer"
    assert res.completion["choices"][0]["finish_reason"] == "content_filter"
    assert [i.id for i in q.pending()] == [r.review.id]


def test_review_wait_approved_then_generates():
    pol = custom(prompt="prompt:\n  tiers:\n    - {p: 0.001, action: review}",
                 review="review: {mode: wait, timeout_s: 5}")
    q = InMemoryReviewQueue()
    guard, _ = make(pol, [gibberish_suffix(), generation(benign(60))], review_queue=q)

    async def go():
        task = asyncio.create_task(guard.chat(USER))
        while not q.pending():
            await asyncio.sleep(0.001)
        await q.decide(q.pending()[0].id, "approve")
        return await task

    res = run(go())
    assert res.report.review.status == "approved" and res.report.action == "allow" and res.content


@pytest.mark.parametrize(("on_timeout", "action"), [("reject", "reject"), ("annotate", "annotate")])
def test_review_wait_timeout_takes_the_timeout_action(on_timeout, action):
    pol = custom(output="output:\n  tiers:\n    - {p: 0.01, action: review}",
                 review=f"review: {{mode: wait, timeout_s: 0.01, on_timeout: {on_timeout}}}")
    guard, _ = make(pol, [benign(), generation(word_salad())])
    r = run(guard.chat(USER)).report
    assert r.review.status == "timeout" and r.action == action and r.review.side == "output"


def test_review_audit_delivers_now():
    pol = custom(output="output:\n  tiers:\n    - {p: 0.01, action: review}", review="review: {mode: audit}")
    guard, _ = make(pol, [benign(), generation(word_salad())])
    res = run(guard.chat(USER))
    assert res.report.action == "review" and res.report.review.status == "pending" and res.content.startswith("z0k")


def test_refusal_style_rejects_as_an_assistant_message():
    guard, _ = make("prompt-screen", [gibberish_suffix()])
    res = run(guard.chat(USER))
    assert res.report.action == "reject" and res.error is None and res.status == 200
    assert res.completion["choices"][0]["finish_reason"] == "content_filter"
    assert res.content == "I can't help with that request."


def test_every_screened_message_bonferroni_and_cache():
    guard, be = make("strict", [benign(seed=1), benign(seed=2), benign(seed=3), generation(benign(60))])
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"}, {"role": "tool", "content": "t1"}]
    r = run(guard.chat(msgs)).report
    assert r.prompt.n_tests == 3 and [v.message for v in r.prompt.verdicts] == [0, 1, 3]
    assert r.prompt.p_value == pytest.approx(min(1.0, 3 * min(v.p_value for v in r.prompt.verdicts)))
    # the next turn: only the new message is scored
    be.enqueue(benign(seed=4), generation(benign(60)))
    r2 = run(guard.chat([*msgs, {"role": "user", "content": "u2"}])).report
    assert r2.prompt.n_tests == 4 and r2.prompt.cached == 3
    assert [c[0] for c in be.calls].count("score") == 4


def test_bad_messages_are_input_errors():
    guard, _ = make("default")
    with pytest.raises(InputError, match="at least one message"):
        run(guard.chat([]))
    with pytest.raises(InputError, match=r"messages\[0\]"):
        run(guard.chat([{"role": "wizard", "content": "x"}]))


def test_nearest_regime_baseline_judges_the_serving_models_own_output():
    from guardrail.baselines.registry import regimes

    shipped = regimes("general")
    guard, _ = make("default", [benign(), generation(benign(60, seed=3))], output_regimes=shipped)
    r = run(guard.chat(USER, temperature=0.5)).report
    reg = r.attempts[0].output.regime
    assert reg["fitted_temperature"] == 0.7 and reg["requested_temperature"] == 0.5 and reg["distance"] == 0.2
    assert r.attempts[0].output.verdicts[0].baseline == reg["baseline"] == next(
        b.id for b in shipped if b.unit["temperature"] == 0.7)


def test_alternatives_are_kept_only_when_the_caller_asks_for_them():
    """The output is judged by its tokens' entropy: the backend is told to keep each token's alternatives only
    when the caller wants them back (top_logprobs > 0)."""
    guard, be = make("default", [benign(), generation(benign(60, seed=3))])
    run(guard.chat(USER))
    guard2, be2 = make("default", [benign(), generation(benign(60, seed=3))])
    run(guard2.chat(USER, logprobs=True, top_logprobs=2))
    asked = [[arg for m, arg in b.calls if m == "generate"] for b in (be, be2)]
    assert [len(a) for a in asked] == [1, 1]
    assert asked[0][0].logprobs and not asked[0][0].alternatives
    assert asked[1][0].logprobs and asked[1][0].alternatives and asked[1][0].top_logprobs >= 2


def test_sync_facade_and_reproducible_seeds():
    guard, _ = make("default", [benign(), generation(word_salad()), generation(benign(60))])
    sync = SyncGuard(guard)
    r = sync.chat(USER, request_id="same").report
    assert [a.sampling.seed for a in r.attempts] == [derive_seed("same", 0), derive_seed("same", 1)]

    async def inside():
        with pytest.raises(RuntimeError, match="running event loop"):
            sync.chat(USER)

    run(inside())


def test_baseline_refuses_another_scorer_side_or_entropy_kind():
    from guardrail.backends.base import ScorerInfo
    from guardrail.baselines.model import BaselineError
    from guardrail.baselines.registry import resolve
    from guardrail.baselines.verdict import judge
    from guardrail.types import LogprobMode

    b = resolve("general", "prompt")
    other = ScorerInfo(backend="vllm", model="m", weights="w", tokenizer="t", logprob_mode=LogprobMode.RAW)
    with pytest.raises(BaselineError, match="fitted for scorer"):
        judge(b, segment([2.0] * 5, [2.0] * 5, scorer=other), side="prompt", scorer_kind="serving")
    top5 = benign()
    top5.entropy_k = 5
    with pytest.raises(BaselineError, match=r"entropies over 49152 alternatives \(exact\); this text has entropies "
                                            r"over 5 alternatives \(a top-k lower bound\)"):
        judge(b, top5, side="prompt", scorer_kind="serving")
    with pytest.raises(BaselineError, match="is for the prompt side"):
        judge(b, benign(side=Side.OUTPUT), side="output", scorer_kind="serving")


def test_report_schema_in_docs_is_current():
    import json
    from pathlib import Path

    from guardrail.guard import GuardReport

    doc = Path(__file__).resolve().parents[1] / "docs" / "guard-report.schema.json"
    assert json.loads(doc.read_text()) == GuardReport.model_json_schema(), (
        "regenerate: python -m guardrail.guard.report > docs/guard-report.schema.json")


def _remote_and_scorer(gen_delay: float, scorer_script, backend_script):
    """A serving backend of another scorer (its own logprobs fit no baseline) and the embedded-identity scorer."""
    scorer = ScriptedBackend(scorer_script, scorer=embedded_scorer())
    remote = ScriptedBackend(backend_script, delay=gen_delay)
    return Guard(load_policy("default"), remote, scorer=scorer, output_regimes=[]), remote, scorer


def test_prompt_is_screened_while_a_remote_backend_generates():
    import time

    out = generation(benign(30, seed=3))
    guard, remote, scorer = _remote_and_scorer(0.3, [benign(), benign(30, seed=4, side=Side.OUTPUT)], [out])
    scorer.delay = 0.3
    t = time.perf_counter()
    res = run(guard.chat(USER))
    took = time.perf_counter() - t
    assert res.report.timings.screen_concurrent and res.report.action in ("allow", "annotate")
    assert took < 0.8, took  # screen (0.3 s) and generation (0.3 s) overlapped, then the output scored (0.3 s)
    assert [c[0] for c in scorer.calls] == ["score", "score_reply"] and [c[0] for c in remote.calls] == ["generate"]


def test_a_rejected_prompt_cancels_the_concurrent_generation():
    guard, remote, scorer = _remote_and_scorer(5.0, [gibberish_suffix()], [generation(benign(30))])
    scorer.delay = 0.2  # the generation has started when the verdict comes
    import time

    t = time.perf_counter()
    res = run(guard.chat(USER))
    assert res.report.action == "reject" and res.error is not None and res.report.attempts == []
    assert time.perf_counter() - t < 2.0  # the 5 s generation was cancelled, not awaited
    assert [c[0] for c in remote.calls] == ["generate"] and remote.remaining == 1  # started, never finished


def test_no_concurrent_generation_when_the_policy_says_so_or_the_model_screens_itself():
    pol = parse_policy(custom(prompt="prompt:\n  concurrent: false\n  tiers:\n    - {p: 0.01, action: reject}"), "t.yaml")
    scorer = ScriptedBackend([gibberish_suffix()], scorer=embedded_scorer())
    remote = ScriptedBackend([generation(benign(30))])
    res = run(Guard(pol, remote, scorer=scorer, output_regimes=[]).chat(USER))
    assert res.report.action == "reject" and remote.calls == [] and not res.report.timings.screen_concurrent
    guard, _be = make("default", [benign(), generation(benign(60, seed=3))])
    res = run(guard.chat(USER))
    assert not res.report.timings.screen_concurrent  # the same model screens and generates: one after the other


def test_check_output_judges_a_given_answer_or_tool_call_without_generating():
    call = {"id": "c1", "type": "function", "function": {"name": "transfer", "arguments": '{"to": "acct-9", "eur": 5}'}}
    # embedded kind: a remote serving backend, the scorer teacher-forces the given text
    guard, remote, scorer = _remote_and_scorer(0.0, [benign(30, seed=4, side=Side.OUTPUT), word_salad()], [])
    d = run(guard.check_output(USER, {"role": "assistant", "content": None, "tool_calls": [call]}))
    assert d.side == "output" and d.p_value is not None and d.action in ("allow", "annotate")
    assert scorer.calls[0] == ("score_reply", ([{"role": "user", "content": USER[0]["content"]}],
                                               f"transfer({call['function']['arguments']})"))
    d = run(guard.check_output(USER, "zq xv kk pl"))
    assert d.action in ("regenerate", "reject", "review") and remote.calls == []  # flagged; nothing generated
    # serving kind: the backend's own logprobs of the given text
    guard, be = make("agent-self-check", [word_salad()])
    d = SyncGuard(guard).check_output(USER, "some planned answer")
    assert d.action in ("regenerate", "review", "reject")  # the tier's action: the caller regenerates or holds
    assert be.calls[0] == ("score_reply", ([{"role": "user", "content": USER[0]["content"]}], "some planned answer"))


def test_check_output_needs_an_output_side():
    guard, _ = make("prompt-screen", [])
    with pytest.raises(ConfigError, match="does not check outputs"):
        run(guard.check_output(USER, "x"))


def test_a_backend_that_hands_prompts_to_its_own_scorer_is_judged_with_that_scorers_baseline():
    """LiteLLMBackend(scorer=X) with no separate Guard scorer: the prompt side is X's (its id is the one its
    segments carry), so the shipped prompt baseline applies; it was refused before (ids compared with litellm's)."""
    from guardrail.backends.litellm import LiteLLMBackend

    inner = ScriptedBackend([gibberish_suffix()], scorer=embedded_scorer())
    backend = LiteLLMBackend("openai/some-model", scorer=inner)
    guard = Guard(load_policy("prompt-screen"), backend, output_regimes=[])
    d = run(guard.screen_messages(USER))
    assert d.action == "reject" and d.verdicts[0].scorer == embedded_scorer().id
    assert [c[0] for c in inner.calls] == ["score"]
