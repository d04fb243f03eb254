"""Converters from OpenAI / vLLM logprob shapes to Segments, checked against recorded real vLLM responses
(tests/fixtures/vllm, see its README) and against synthetic edge cases (NaN, clamps, split UTF-8)."""

import copy
import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.backends.openai_logprobs import (
    Origin,
    chat_output_segment,
    echo_segment,
    output_segment,
    prompt_segment,
    token_from_entry,
)
from guardrail.backends.stream_assembler import StreamAssembler
from guardrail.errors import UnscorableError
from guardrail.scoring import score_segment
from guardrail.types import CLAMP_LOGPROB, Flag, LogprobMode, Side

FIX = Path(__file__).parent / "fixtures" / "vllm"
ORIGIN = Origin("litellm", "hosted_vllm/smollm2-135m", "tok", LogprobMode.RAW, "litellm:test")
USER = "Name three primary colors."
ECHO_PROMPT = "The capital of France is Paris. The capital of Italy is"


def load(name: str):
    return json.loads((FIX / name).read_text(encoding="utf-8"))


def sse_chunks(name: str) -> list[dict]:
    out = []
    for line in (FIX / name).read_text(encoding="utf-8").splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def check_offsets(seg):
    for t in seg.tokens:
        assert 0 <= t.start <= t.end <= len(seg.text)
        if Flag.SPECIAL not in t.flags and Flag.PARTIAL_UTF8 not in t.flags:
            assert seg.text[t.start:t.end] == t.text


# ------------------------------------------------------------------------------------------ chat output
def test_chat_output_matches_recorded_values():
    body = load("a_chat_logprobs.json")
    entries = body["choices"][0]["logprobs"]["content"]
    seg = chat_output_segment(body["choices"][0], ORIGIN)
    assert seg.side is Side.OUTPUT and seg.scorer_id == "litellm:test"
    assert seg.text == body["choices"][0]["message"]["content"]
    assert [t.logprob for t in seg.tokens] == [e["logprob"] for e in entries]
    check_offsets(seg)
    # the end-of-turn token is kept, flagged special, with an empty span at the end of the text
    last = seg.tokens[-1]
    assert last.text == "<|im_end|>" and Flag.SPECIAL in last.flags and last.start == last.end == len(seg.text)
    assert sum(1 for t in seg.tokens if Flag.SPECIAL in t.flags) == 1
    assert seg.entropy_k == len(entries[0]["top_logprobs"])
    assert all(t.entropy is not None and t.entropy >= 0 for t in seg.tokens)
    score = score_segment(seg)
    assert score.whole.n_special == 1 and score.whole.n_scored == len(entries) - 1


@pytest.mark.parametrize("name", ["a_chat_logprobs.json", "b_chat_logprobs_prompt_logprobs.json",
                                  "h_litellm_hosted_vllm_model_dump.json"])
def test_without_alternatives_tokens_keep_their_entropy_and_the_segment_its_k(name):
    """A caller that does not hand the alternatives on (the Guard, unless its client asked for them) reads them
    for their entropy only: every token and the segment equal the full reading but for ``top``, and the same holds
    for a stream of the same entries."""
    choice = load(name)["choices"][0]
    full = chat_output_segment(choice, ORIGIN)
    lean = chat_output_segment(choice, ORIGIN, alternatives=False)
    assert any(t.top for t in full.tokens) and not any(t.top for t in lean.tokens)
    strip = lambda seg: [(t.text, t.bytes, t.logprob, t.token_id, t.start, t.end, t.flags, t.entropy)  # noqa: E731
                         for t in seg.tokens]
    assert strip(lean) == strip(full)
    assert (lean.text, lean.entropy_k, lean.notes) == (full.text, full.entropy_k, full.notes)
    assert lean.entropy_k == max(len(t.top) for t in full.tokens)
    chunks = [{"choices": [{"index": 0, "logprobs": {"content": [e]}, "finish_reason": None}]}
              for e in choice["logprobs"]["content"]]
    segs = []
    for alternatives in (True, False):
        asm = StreamAssembler(ORIGIN, alternatives=alternatives)
        for c in chunks:
            asm.feed(c)
        asm.finish()
        segs.append(asm.segment())
    assert strip(segs[0]) == strip(segs[1]) and segs[0].entropy_k == segs[1].entropy_k == full.entropy_k
    assert not any(t.top for t in segs[1].tokens)


def test_litellm_model_dump_gives_the_same_segments_as_the_raw_body():
    raw = load("b_chat_logprobs_prompt_logprobs.json")
    dumped = load("h_litellm_hosted_vllm_model_dump.json")
    a = chat_output_segment(raw["choices"][0], ORIGIN)
    b = chat_output_segment(dumped["choices"][0], ORIGIN)
    assert a.text == b.text and [t.logprob for t in a.tokens] == [t.logprob for t in b.tokens]
    pa = prompt_segment(raw["prompt_logprobs"], ORIGIN, contents=[USER])
    pb = prompt_segment(dumped["prompt_logprobs"], ORIGIN, contents=[USER])
    assert [t.logprob for t in pa.tokens] == [t.logprob for t in pb.tokens]


def test_no_output_logprobs_is_unscorable():
    choice = copy.deepcopy(load("a_chat_logprobs.json")["choices"][0])
    choice["logprobs"] = None
    with pytest.raises(UnscorableError):
        chat_output_segment(choice, ORIGIN)
    choice["logprobs"] = {"content": []}
    with pytest.raises(UnscorableError):
        chat_output_segment(choice, ORIGIN)


def test_null_nan_and_clamped_values_are_never_zero():
    choice = copy.deepcopy(load("a_chat_logprobs.json")["choices"][0])
    content = choice["logprobs"]["content"]
    content[1]["logprob"] = None
    content[2]["logprob"] = float("nan")
    content[3]["logprob"] = CLAMP_LOGPROB
    content[4]["top_logprobs"][1]["logprob"] = CLAMP_LOGPROB
    seg = chat_output_segment(choice, ORIGIN)
    t = seg.tokens
    assert t[1].logprob is None and Flag.MISSING in t[1].flags
    assert t[2].logprob is None and Flag.MISSING in t[2].flags
    assert t[3].logprob is None and Flag.CLAMPED in t[3].flags
    assert all(math.isfinite(a.logprob) and a.logprob > CLAMP_LOGPROB for a in t[4].top)
    assert len(t[4].top) == len(content[4]["top_logprobs"]) - 1
    w = score_segment(seg).whole
    assert (w.n_missing, w.n_clamped) == (2, 1)
    assert w.n_scored == len(content) - 1 - 3


def test_token_ids_format_has_ids_and_no_offsets():
    entry = {"token": "token_id:5820", "logprob": -1.5, "bytes": list(b"token_id:5820"),
             "top_logprobs": [{"token": "token_id:5820", "logprob": -1.5}, {"token": "token_id:57", "logprob": -2.0}]}
    tok = token_from_entry(entry)
    assert tok.token_id == 5820 and tok.bytes == b"" and [a.token_id for a in tok.top] == [5820, 57]
    seg = output_segment([tok], ORIGIN)
    assert any("offsets unavailable" in n for n in seg.notes)


def test_stop_string_cut_drops_later_tokens():
    choice = copy.deepcopy(load("a_chat_logprobs.json")["choices"][0])
    full = choice["message"]["content"]
    cut = full.index("\n\n")
    choice["message"]["content"] = full[:cut]
    seg = chat_output_segment(choice, ORIGIN)
    assert seg.text == full[:cut]
    assert all(t.end <= cut for t in seg.tokens)
    assert any("cut at character" in n for n in seg.notes)


# ------------------------------------------------------------------------------------------ prompt
def test_prompt_logprobs_score_only_the_user_text():
    body = load("b_chat_logprobs_prompt_logprobs.json")
    pl = body["prompt_logprobs"]
    seg = prompt_segment(pl, ORIGIN, contents=[USER])
    assert len(seg.tokens) == len(pl) == body["usage"]["prompt_tokens"]
    check_offsets(seg)
    scored = [t for t in seg.tokens if t.scored]
    assert "".join(t.text for t in scored) == USER
    # the template's injected system prompt holds the least likely token of the prompt; it is not scored
    worst = min((t for t in seg.tokens if t.logprob is not None), key=lambda t: t.logprob)
    assert Flag.SPECIAL in worst.flags and "SmolLM" in seg.text
    assert Flag.NO_CONTEXT in seg.tokens[0].flags and seg.tokens[0].logprob is None
    # each value is the prompt token's own entry (its first key), with rank-1 alternatives as tops
    for t, entry in zip(seg.tokens[1:], pl[1:], strict=True):
        first = next(iter(entry))
        assert t.token_id == int(first) and t.logprob == entry[first]["logprob"]
        assert {a.token_id for a in t.top} == {int(k) for k in entry}


def test_adversarial_suffix_raises_the_user_text_nll():
    plain = load("e_chat_plain_prompt_logprobs.json")
    adv = load("e_chat_adversarial_suffix_prompt_logprobs.json")
    adv_text = adv["_request"]["messages"][0]["content"] if "_request" in adv else None
    if adv_text is None:  # the README holds the request body; the suffix starts after the plain question
        seg = prompt_segment(adv["prompt_logprobs"], ORIGIN)
        start = seg.text.index(USER)
        end = seg.text.index("<|im_end|>", start)
        adv_text = seg.text[start:end]
    seg_a = prompt_segment(adv["prompt_logprobs"], ORIGIN, contents=[adv_text])
    a = score_segment(seg_a, widths=(8,))
    p = score_segment(prompt_segment(plain["prompt_logprobs"], ORIGIN, contents=[USER]), widths=(8,))
    assert a.whole.n_special == p.whole.n_special  # same template around both
    assert a.max_window.nll > p.max_window.nll + 2.0
    # the top window lies in the suffix: after the plain question, inside the user message (offsets are into the
    # rendered prompt, whose template text comes first)
    assert adv_text.startswith(USER) and len(adv_text) > len(USER) + 8
    u0 = seg_a.text.index(adv_text)
    assert u0 > 0  # the template's system prompt precedes it: comparing with len(USER) alone could not fail
    assert u0 + len(USER) - 1 <= a.max_window.start < a.max_window.end <= u0 + len(adv_text)


def test_prompt_content_missing_or_no_prompt_logprobs():
    pl = load("b_chat_logprobs_prompt_logprobs.json")["prompt_logprobs"]
    with pytest.raises(UnscorableError):
        prompt_segment(pl, ORIGIN, contents=["not in the prompt"])
    with pytest.raises(UnscorableError):
        prompt_segment(None, ORIGIN)
    with pytest.raises(UnscorableError):
        prompt_segment([None], ORIGIN)


def test_prompt_content_found_across_replacement_pieces():
    # a byte-level BPE splitting "é" in two decodes each half to U+FFFD
    pieces = ["<|im_start|>", "user", "\n", "caf", "\ufffd", "\ufffd", " ok", "<|im_end|>"]
    pl = [None] + [{str(i): {"logprob": -1.0 - i, "rank": 1, "decoded_token": p}} for i, p in enumerate(pieces[1:], 1)]
    seg = prompt_segment(pl, ORIGIN, contents=["café ok"])
    scored = [t.text for t in seg.tokens if t.scored]
    assert scored == ["caf", "\ufffd", "\ufffd", " ok"]
    assert all(Flag.PARTIAL_UTF8 in t.flags for t in seg.tokens if t.text == "\ufffd")


# ------------------------------------------------------------------------------------------ echo
def test_echo_scoring_matches_token_logprobs_and_drops_the_generated_token():
    d0, d1 = load("d_completions_echo_max_tokens_0.json"), load("d_completions_echo_max_tokens_1.json")
    s0 = echo_segment(d0["choices"][0], ECHO_PROMPT, ORIGIN)
    s1 = echo_segment(d1["choices"][0], ECHO_PROMPT, ORIGIN)
    lp = d0["choices"][0]["logprobs"]
    assert [t.text for t in s0.tokens] == lp["tokens"] == [t.text for t in s1.tokens]
    assert [t.logprob for t in s0.tokens][1:] == lp["token_logprobs"][1:]
    assert [t.start for t in s0.tokens] == lp["text_offset"]
    assert Flag.NO_CONTEXT in s0.tokens[0].flags and s0.tokens[0].logprob is None
    assert len(d1["choices"][0]["logprobs"]["tokens"]) == len(s1.tokens) + 1
    check_offsets(s0)


def test_echo_without_logprobs_is_unscorable():
    with pytest.raises(UnscorableError):
        echo_segment({"text": ECHO_PROMPT, "logprobs": None}, ECHO_PROMPT, ORIGIN)


# ------------------------------------------------------------------------------------------ stream
def test_stream_assembles_the_same_segment_as_the_whole_response():
    whole = chat_output_segment(load("a_chat_logprobs.json")["choices"][0], ORIGIN)
    for chunks in (sse_chunks("c_chat_logprobs_stream.sse"), load("h_litellm_hosted_vllm_stream_chunks.json")):
        asm = StreamAssembler(ORIGIN, max_tokens=24)
        events = [ev for c in chunks for ev in asm.feed(c)]
        assert asm.finish() is None
        assert events[-1].finish_reason == "stop" and all(e.finish_reason is None for e in events[:-1])
        assert "".join(e.text for e in events) == whole.text == asm.text
        seg = asm.segment()
        assert seg.text == whole.text
        assert [(t.logprob, t.start, t.end) for t in seg.tokens] == [(t.logprob, t.start, t.end) for t in whole.tokens]


def test_lost_finish_reason_is_inferred_and_said():
    chunks = copy.deepcopy(sse_chunks("c_chat_logprobs_stream.sse"))
    for c in chunks:
        for ch in c.get("choices", []):
            ch["finish_reason"] = None
    asm = StreamAssembler(ORIGIN, max_tokens=24)
    events = [ev for c in chunks for ev in asm.feed(c)]
    last = asm.finish()
    assert last is not None and last.finish_reason == "stop" and last.token is None
    n_tokens = sum(len((ch.get("logprobs") or {}).get("content") or []) for c in chunks for ch in c["choices"])
    assert len(events) == n_tokens
    assert any("without a finish_reason" in n for n in asm.segment().notes)


def _chunk(piece: bytes, lp: float = -1.0) -> dict:
    token = piece.decode("utf-8", "replace")
    return {"choices": [{"index": 0, "delta": {"content": token},
                         "logprobs": {"content": [{"token": token, "logprob": lp, "bytes": list(piece),
                                                   "top_logprobs": []}]}, "finish_reason": None}]}


def test_partial_utf8_across_chunks_adds_whole_characters_only():
    data = "né 😀".encode()
    pieces = [data[:2], data[2:3], data[3:4], data[4:6], data[6:]]  # é split; the emoji split in two
    asm = StreamAssembler(ORIGIN)
    events = [ev for p in pieces for ev in asm.feed(_chunk(p))]
    assert [e.text for e in events] == ["n", "é", " ", "", "😀"]
    seg = asm.segment()
    assert seg.text == "né 😀"
    flagged = [Flag.PARTIAL_UTF8 in t.flags for t in seg.tokens]
    assert flagged == [True, True, False, True, True]
    assert (seg.tokens[3].start, seg.tokens[3].end) == (3, 4) == (seg.tokens[4].start, seg.tokens[4].end)


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=40), cuts=st.lists(st.integers(1, 200), max_size=12))
def test_stream_text_is_the_text_for_any_byte_split(text, cuts):
    data = text.encode("utf-8")
    bounds = sorted({0, len(data), *[c % (len(data) + 1) for c in cuts]})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    asm = StreamAssembler(ORIGIN)
    events = [ev for p in pieces for ev in asm.feed(_chunk(p))]
    asm.finish()
    assert "".join(e.text for e in events) == text
    seg = asm.segment()
    assert seg.text == text
    for t in seg.tokens:
        assert 0 <= t.start < t.end <= len(text)


def test_alternatives_and_their_entropy_in_every_shape():
    """_tops over JSON dicts, legacy {token: logprob} maps and client objects: the finite alternatives in order,
    entropy -sum p log p over them with each token text counted once (a server may list the sampled one again)."""
    import random
    from types import SimpleNamespace

    from guardrail.backends.openai_logprobs import _tops

    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 6)
        pairs = [(rng.choice(["a", "b", " c", "token_id:42", "\ufffd"]),
                  rng.choice([-rng.random() * 5, -0.0, None, -9999.0, float("nan"), -rng.random()]))
                 for _ in range(n)]
        kept = [(t, lp) for t, lp in pairs if lp is not None and lp == lp and lp > -9999.0]
        seen, h = set(), 0.0
        for t, lp in kept:
            if t not in seen:
                seen.add(t)
                h -= math.exp(lp) * lp
        want_h = h if kept else None
        shapes = [[{"token": t, "logprob": lp} for t, lp in pairs],
                  [SimpleNamespace(token=t, logprob=lp) for t, lp in pairs]]
        if len({t for t, _ in pairs}) == n:
            shapes.append(dict(pairs))
        for raw in shapes:
            top, ent, k = _tops(raw)
            assert [(a.token, a.logprob) for a in top] == kept and k == len(kept)
            assert [a.token_id for a in top] == [42 if t == "token_id:42" else None for t, _ in kept]
            assert ent == want_h if want_h is None else math.isclose(ent, want_h, rel_tol=1e-12, abs_tol=1e-15)
            # without the alternatives themselves: the same entropy to the bit, and their count
            assert _tops(raw, keep=False) == ((), ent, len(kept))


def _owner_reference(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) for _ in ch.encode("utf-8")]


@settings(max_examples=300, deadline=None)
@given(chars=st.sampled_from([list("ab .\n"), [*"ab .", "é", "€", "😀", "\n"]]).flatmap(  # ASCII, or not
           lambda alphabet: st.lists(st.sampled_from(alphabet), min_size=0, max_size=24)),
       cuts=st.lists(st.integers(0, 80), max_size=10), special=st.lists(st.integers(0, 12), max_size=3),
       content_cut=st.one_of(st.none(), st.integers(0, 30)))
def test_output_segment_offsets_in_place_equal_copies_and_the_byte_reference(chars, cuts, special, content_cut):
    """Offsets of output tokens cut anywhere in ASCII or multi-byte text (a character split across tokens spans
    it whole, flagged partial), special tokens at their place, the server's content cut at a stop string: the same
    with ``fresh`` (offsets set in place) as on copies, the copies leave the given tokens as they were, and each
    span is the characters its bytes touch."""
    text = "".join(chars)
    data = text.encode("utf-8")
    points = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points) if b > a] or [b""]
    entries = [{"token": p.decode("utf-8", "replace"), "bytes": list(p), "logprob": -0.5 - i % 3, "top_logprobs": [
        {"token": p.decode("utf-8", "replace"), "logprob": -0.5 - i % 3}, {"token": f"alt{i}", "logprob": -2.5}]}
               for i, p in enumerate(pieces)]
    for i in sorted(special, reverse=True):
        entries.insert(min(i, len(entries)), {"token": "<|im_end|>", "logprob": -0.1, "top_logprobs": []})
    content = text[:content_cut] if content_cut is not None and content_cut < len(text) else None

    def tokens():
        return [token_from_entry(e) for e in entries]
    given_tokens = tokens()
    before = [(t.text, t.start, t.end, t.flags) for t in given_tokens]
    try:
        copied = output_segment(given_tokens, ORIGIN, content)
    except UnscorableError:
        return
    assert [(t.text, t.start, t.end, t.flags) for t in given_tokens] == before  # copies: the given ones untouched
    fresh = output_segment(tokens(), ORIGIN, content, fresh=True)
    assert fresh.text == copied.text
    assert fresh.tokens == copied.tokens and fresh.entropy_k == copied.entropy_k == 2  # every field
    owner, pos = _owner_reference(text), 0
    for t in copied.tokens:
        if Flag.SPECIAL in t.flags:
            continue
        b0, b1 = pos, pos + len(t.bytes)
        pos = b1
        if b1 > b0 and t.start < len(copied.text):
            assert (t.start, min(t.end, len(copied.text))) == (owner[b0], min(owner[b1 - 1] + 1, len(copied.text)))
            whole = (b0 == 0 or (data[b0] & 0xC0) != 0x80) and (b1 == len(data) or (data[b1] & 0xC0) != 0x80)
            assert (Flag.PARTIAL_UTF8 in t.flags) == (not whole)
