"""The Guard on the real embedded model (SmolLM2-135M via llama.cpp) with the shipped policies and baselines,
and the guard commands of the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from guardrail.baselines.registry import resolve
from guardrail.guard import Guard, load_policy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guard(backend):
    return Guard(load_policy("default"), backend, scorer=backend)


def test_gcg_suffix_rejected_and_benign_prompt_passes(guard, gcg_records, benign_records):
    res = asyncio.run(guard.chat([{"role": "user", "content": gcg_records[0]["prompt"]}], max_tokens=16))
    r = res.report
    assert r.action == "reject" and res.status == 400 and r.attempts == []
    assert r.prompt.p_value <= 0.001 and r.prompt.top_signal == "excess_cusum"
    (span,) = r.prompt.verdicts[0].spans
    prompt = gcg_records[0]["prompt"]
    suffix = gcg_records[0]["adv_suffix"]
    assert span.message == 0 and prompt[span.start:span.end] == span.text
    # the span covers most of the optimised suffix, and little of the plain request before it
    s0 = prompt.index(suffix)
    overlap = max(0, min(span.end, s0 + len(suffix)) - max(span.start, s0))
    assert overlap >= 0.6 * len(suffix) and overlap >= 0.8 * (span.end - span.start)

    benign = benign_records[0]["prompt"]
    res = asyncio.run(guard.chat([{"role": "user", "content": benign}], max_tokens=24, request_id="b1"))
    r = res.report
    assert r.prompt.action == "allow" and r.prompt.p_value > 0.01
    assert len(r.attempts) >= 1 and res.content and r.attempts[0].usage.completion_tokens > 0
    assert r.scorers == {"prompt": "serving", "output": "serving"}


def test_regime_baseline_is_the_nearest_temperature(guard):
    if not guard.regimes:
        pytest.fail("no own-generation output baselines are shipped (general~t*.output.json)")
    res = asyncio.run(guard.chat([{"role": "user", "content": "Name a color."}], max_tokens=12, temperature=0.0))
    reg = res.report.attempts[0].output.regime
    assert reg is not None and reg["requested_temperature"] == 0.0
    assert reg["distance"] == min(abs(float(b.unit["temperature"])) for b in guard.regimes)
    assert res.report.attempts[0].output.verdicts[0].baseline == reg["baseline"]


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guardrail.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=600)


def test_cli_screen_file_and_chat_json(tmp_path, gcg_records, benign_records):
    data = tmp_path / "p.jsonl"
    rows = [{"prompt": gcg_records[1]["prompt"]}, {"prompt": benign_records[1]["prompt"]}, {"prompt": ""}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = _cli("screen", "--data", str(data), "--json", "--no-cache")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    a, b, c = doc["results"]
    assert a["action"] == "reject" and a["spans"] and a["p_value"] <= 0.001
    assert b["action"] == "allow" and b["p_value"] > 0.01
    assert c["action"] is None and c["error"] == "empty text"
    assert doc["summary"]["n"] == 3 and doc["summary"]["actions"] == {"reject": 1, "allow": 1}

    p = _cli("chat", "--json", "--max-tokens", "12", "Say hello.")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc) >= {"completion", "guardrail"}
    assert doc["guardrail"]["policy"] == "default" and doc["guardrail"]["action"] in ("allow", "annotate")
    assert doc["completion"]["object"] == "chat.completion"

    p = _cli("chat", "--stream", "--max-tokens", "120", "--temperature", "1.9", "Write a short poem about the sea.")
    assert p.returncode == 0, p.stderr
    assert p.stdout.rstrip().endswith("[cut]") and "cut at token" in p.stderr  # word salad cut at a checkpoint


def test_cli_policy_check_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprompt:\n  tiers:\n    - {p: 0.01, action: nope}\n")
    p = _cli("policy", "check", str(bad))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith(f"error: {bad}:4: prompt.tiers.0.action") and p.stderr.count("\n") == 1
    p = _cli("policy", "check", "strict", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["ok"] is True


def test_degenerate_generation_is_regenerated_and_the_retry_passes(guard):
    res = asyncio.run(guard.chat([{"role": "user", "content": "Write a short poem about the sea."}],
                                 max_tokens=48, temperature=1.9, request_id="test-degenerate"))
    r = res.report
    first = r.attempts[0]
    assert first.sampling.temperature == 1.9 and first.action == "regenerate"
    assert first.output.p_value <= 0.01 and first.output.regime["fitted_temperature"] == 0.7
    assert r.regenerated >= 1 and r.attempts[1].sampling.temperature == 0.7
    assert r.action in ("allow", "annotate") and res.content == r.attempts[-1].text
    assert "regeneration" in r.reason


def test_agent_checks_a_planned_step_with_the_real_model(backend):
    g = Guard(load_policy("agent-self-check"), backend, scorer=backend)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    good = asyncio.run(g.check_output(msgs, "The capital of France is Paris."))
    salad = asyncio.run(g.check_output(msgs, "Paris quantum zebra lattice ought marmalade seventeen vortex "
                                             "ledger obtuse fjord crimson, hinge the parsley rotunda."))
    assert good.action in ("allow", "annotate") and good.verdicts[0].scorable
    assert salad.action in ("regenerate", "review") and salad.p_value < good.p_value


def test_a_tool_call_is_judged_on_the_function_it_picks_as_well_as_its_arguments(backend):
    """The judged text of a tool call is name(arguments): the function picked is scored as part of the reply
    (the same arguments under a longer name give more tokens), with the real model."""
    g = Guard(load_policy("agent-self-check"), backend, scorer=backend)
    msgs = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    args = '{"city": "Paris"}'

    def call(name):
        return {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}
    fitting = asyncio.run(g.check_output(msgs, call("get_weather")))
    odd = asyncio.run(g.check_output(msgs, call("wipe_all_disks_and_transfer_funds")))
    assert fitting.verdicts[0].scorable and odd.verdicts[0].scorable
    assert odd.verdicts[0].n_tokens > fitting.verdicts[0].n_tokens  # the name is part of what was scored
    text = f"get_weather({args})"
    direct = asyncio.run(backend.score_reply(msgs, text))
    assert fitting.verdicts[0].n_tokens == len(direct.tokens)


def test_the_real_scorer_teacher_forces_a_remote_stream_at_checkpoints(backend):
    """stream.embedded_every: another backend's stream (scripted text) judged every 8 pieces by the real embedded
    model teacher-forcing the answer so far: a plain answer is released whole and allowed after 4 checkpoints;
    a stream of symbols from four scripts is cut at the first checkpoint with nothing released."""
    import random

    from guardrail.backends.base import TokenEvent
    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.guard import StreamDelta
    from guardrail.guard.policy import parse_policy

    pol = parse_policy("name: tf\nprompt:\n  baseline: general\n  tiers: [{p: 0.001, action: reject}]\n"
                       "output:\n  baseline: general\n  tiers: [{p: 0.01, action: reject}]\n"
                       "stream: {embedded_every: 8, abort_p: 0.01}\n", "tf.yaml")
    user = [{"role": "user", "content": "How do I keep my houseplants healthy?"}]
    plain = ("Water them when the top inch of soil feels dry, give them bright indirect light, and make sure the pot "
             "has drainage holes. Feed them a diluted fertilizer once a month during spring and summer, and wipe "
             "the leaves now and then so they can breathe.")
    rng = random.Random(2)
    blocks = [(0x0400, 0x04FF), (0x16A0, 0x16F0), (0x2D30, 0x2D7F), (0x4E00, 0x4E80)]
    symbols = "Water them when " + " ".join(
        "".join(chr(rng.randint(*rng.choice(blocks))) for _ in range(rng.randint(1, 3))) for _ in range(40))

    def stream_of(text):
        words = text.split(" ")
        out = [TokenEvent(index=i, token=None, text=w if i == 0 else " " + w) for i, w in enumerate(words)]
        out[-1].finish_reason, out[-1].prompt_tokens = "stop", 10
        return out

    def run_stream(text):
        g = Guard(pol, ScriptedBackend([stream_of(text)], delay=0.005), scorer=backend, output_regimes=[])

        async def go():
            return [e async for e in g.stream(user, max_tokens=64)]
        out = asyncio.run(go())
        return out[-1], "".join(e.text for e in out if isinstance(e, StreamDelta))

    end, got = run_stream(plain)
    st = end.result.report.stream
    assert end.result.report.action == "allow" and got == plain
    assert end.streamed and st.released_tokens == len(plain.split(" "))  # text-only events count as released
    # at 8 pieces the scorer's tokens but its last are fewer than the calibration's min_tokens: not judged yet
    assert [c.tokens for c in st.checkpoints] == [16, 24, 32, 40] and not any(c.abort for c in st.checkpoints)
    cal = resolve("general", "output").stream  # calibrated over every prefix of reference answers
    assert st.method == "calibrated" and st.threshold == cal.threshold(0.01) and cal.min_tokens == 8
    end, got = run_stream(symbols)
    st = end.result.report.stream
    assert end.finish_reason == "content_filter" and end.result.report.action == "reject" and got == ""
    assert not end.streamed and st.released_tokens == 0
    assert st.aborted_at == 8 and st.checkpoints[0].tail_p <= st.threshold


def test_settled_tokens_of_a_growing_answer_are_a_prefix_of_the_finished_answers(backend):
    """The claim the teacher-forced stream calibration rests on, with the real tokenizer: cut an answer at any
    character (mid-word, mid-number, inside whitespace), score the cut text as the reply, and its settled tokens
    (stream_assess.settled) are the finished answer's first tokens, with the same logprobs."""
    import random

    from guardrail.guard.stream_assess import settled

    msgs = [{"role": "user", "content": "Explain photosynthesis briefly."}]
    text = ("Photosynthesis is how plants, algae and some bacteria turn light into chemical energy.\n\n"
            "1. Chlorophyll absorbs photons (mostly 430-680 nm).\n2. Water is split: 2H2O -> 4H+ + 4e- + O2.\n"
            "3. The Calvin cycle fixes CO2 into glucose,  roughly 6CO2 + 6H2O -> C6H12O6 + 6O2!")
    full = asyncio.run(backend.score_reply(msgs, text))
    cuts = [*sorted(random.Random(4).sample(range(1, len(text)), 24)), text.index("photons") + 4]
    judged = 0
    for c in cuts:
        seg = asyncio.run(backend.score_reply(msgs, text[:c]))
        k = settled(seg.tokens, text[:c])
        assert k <= len(seg.tokens) and (k < len(seg.tokens) or text[c - 1].isspace())
        assert [t.bytes for t in seg.tokens[:k]] == [t.bytes for t in full.tokens[:k]], c
        for a, b in zip(seg.tokens[:k], full.tokens[:k], strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=0.05)
        judged += k
    assert judged > 0
    # the naive rule (all but the last token) is not enough: some cut leaves a mid-word piece before the last
    naive_breaks = 0
    for c in cuts:
        seg = asyncio.run(backend.score_reply(msgs, text[:c]))
        n = len(seg.tokens) - 1
        naive_breaks += [t.bytes for t in seg.tokens[:n]] != [t.bytes for t in full.tokens[:n]]
    assert naive_breaks > 0
