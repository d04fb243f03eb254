"""A real llama-cpp-python OpenAI server (``python -m llama_cpp.server``, started once per session by the
``llamacpp_server`` fixture on 127.0.0.1) called through litellm (``openai/…`` + api_base).

Its greedy output's logprobs are compared with the embedded scorer's teacher-forced logprobs of the same
output (``LlamaCppBackend(compute="native")``: the same Q4_1 weights, ``score_reply(messages, text)``).

Tolerance, measured 2026-11-25 on this 2-core machine (llama-cpp-python 0.3.36, SmolLM2-135M Q4_1), the two
prompts below (23 and 29 output tokens, all aligned): per-token |Δlogprob| max 0.21 and 0.28 nats, mean 0.037
and 0.055 nats.  The two
paths run different kernels on the same weights (the server decodes one token at a time, teacher forcing
runs the reply as one batch), so they are close, not equal.  The test allows max 0.6 and mean 0.12 nats.

Only the common prefix of the two tokenizations is compared: a generated token sequence need not be the
canonical tokenization of its own text (measured: "Écris « café » deux fois 😀" gives 32 generated tokens
that re-tokenize into 31), and past the first difference the positions no longer match.
"""

import asyncio

import numpy as np
import pytest

from guardrail.backends.base import GenerationRequest
from guardrail.backends.litellm import LiteLLMBackend
from guardrail.errors import UnscorableError
from guardrail.types import Flag

pytestmark = pytest.mark.slow

PROMPTS = ["Name three primary colors.", "What is the capital of France?"]
MAX_ABS, MAX_MEAN = 0.6, 0.12


@pytest.fixture(scope="module")
def native():
    from guardrail.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(compute="native")
    yield b
    b.close()


def backend(url: str) -> LiteLLMBackend:
    return LiteLLMBackend("openai/smollm2", api_base=url, timeout=180)


def aligned_diffs(out_tokens, forced_tokens) -> np.ndarray:
    diffs = []
    for a, b in zip(out_tokens, forced_tokens, strict=False):
        if a.bytes != b.bytes:
            break
        diffs.append(a.logprob - b.logprob)
    return np.abs(np.array(diffs))


@pytest.mark.parametrize("question", PROMPTS)
def test_greedy_output_logprobs_equal_teacher_forcing(llamacpp_server, native, question):
    messages = [{"role": "user", "content": question}]
    # llama-cpp-python's server sorts the whole vocabulary in Python for every token's alternatives (measured:
    # 23 tokens in 11-14 s with top_logprobs=5, 3-4 s with 0): ask for few
    req = GenerationRequest(messages=messages, max_tokens=32, top_logprobs=2)
    gen = asyncio.run(backend(llamacpp_server).generate(req))
    out = [t for t in gen.output.tokens if Flag.SPECIAL not in t.flags]
    assert gen.output.text and len(out) >= 5 and all(t.logprob is not None for t in out)
    assert all(1 <= len(t.top) <= 3 for t in out)  # its alternatives are keyed by text: duplicates merge
    assert gen.output.scorer_id.startswith("litellm:openai/smollm2@")
    forced = asyncio.run(native.score_reply(messages, gen.output.text))
    d = aligned_diffs(out, forced.tokens)
    assert len(d) >= 0.8 * len(out), "tokenizations diverge too early to compare"
    assert d.max() <= MAX_ABS and d.mean() <= MAX_MEAN, (d.max(), d.mean())


def test_stream_logprobs_equal_teacher_forcing_of_the_streamed_text(llamacpp_server, native):
    messages = [{"role": "user", "content": PROMPTS[0]}]
    req = GenerationRequest(messages=messages, max_tokens=24, top_logprobs=1)

    async def go():
        return [ev async for ev in backend(llamacpp_server).stream(req)]

    events = asyncio.run(go())
    assert events[-1].finish_reason in {"stop", "length"}
    assert all(ev.finish_reason is None for ev in events[:-1])
    text = "".join(ev.text for ev in events)
    tokens = [ev.token for ev in events if ev.token is not None]
    assert b"".join(t.bytes for t in tokens).decode() == text
    forced = asyncio.run(native.score_reply(messages, text))
    d = aligned_diffs(tokens, forced.tokens)
    assert len(d) >= 0.8 * len(tokens)
    assert d.max() <= MAX_ABS and d.mean() <= MAX_MEAN, (d.max(), d.mean())


def test_non_ascii_stream_gives_whole_characters(llamacpp_server):
    messages = [{"role": "user", "content": "Écris « café » deux fois."}]
    req = GenerationRequest(messages=messages, max_tokens=16, top_logprobs=1)
    b = backend(llamacpp_server)

    async def go():
        return [ev async for ev in b.stream(req)]

    events = asyncio.run(go())
    text = "".join(ev.text for ev in events)
    assert "\ufffd" not in text and any(ord(c) > 127 for c in text)
    assert text == b"".join(ev.token.bytes for ev in events if ev.token).decode("utf-8")


def test_text_scoring_needs_a_separate_scorer(llamacpp_server, native):
    with pytest.raises(UnscorableError):
        asyncio.run(backend(llamacpp_server).score("The capital of France is Paris."))
    b = LiteLLMBackend("openai/smollm2", api_base=llamacpp_server, scorer=native)
    seg = asyncio.run(b.score("The capital of France is Paris."))
    assert seg.backend == "llamacpp" and seg.has_logprobs
