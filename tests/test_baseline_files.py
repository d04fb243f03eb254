"""Baseline persistence: JSON only, checksummed, checked against the scorer; splits and corpora."""

import itertools
import json

import numpy as np
import pytest

from guardrail.backends.base import ScorerInfo
from guardrail.baselines.conformal import fit_calibrator
from guardrail.baselines.corpus import cut_units, read_records
from guardrail.baselines.model import Baseline, BaselineError, load_baseline, save_baseline
from guardrail.baselines.splits import split_of
from guardrail.errors import InputError
from guardrail.types import LogprobMode

SCORER = ScorerInfo(backend="llamacpp", model="m", weights="sha256:1", tokenizer="tok", logprob_mode=LogprobMode.RAW,
                    settings={"bos": "none"})


def _baseline():
    rng = np.random.default_rng(0)
    feats = [{"n_scored": float(n), "max_w8": float(x)} for n, x in zip(rng.integers(5, 50, 400), rng.gamma(3, 1, 400), strict=True)]
    cal = fit_calibrator(feats[:200], feats[200:], {"max_w8": "high"}, 0.05)
    return Baseline(domain="d", side="text", scorer_id=SCORER.id, model="m", tokenizer="tok", logprob_mode="raw_logprobs",
                    widths=[8], unit={"kind": "record"}, corpus={"sha256": "x"}, calibrator=cal, target_alphas=[0.05],
                    fit_date="2026-11-25T00:00:00Z", training_groups=["ab"])


def test_round_trip_and_id(tmp_path):
    b = _baseline()
    p = save_baseline(b, tmp_path / "d.text.json")
    back = load_baseline(p, SCORER)
    assert back.model_dump() == b.model_dump() and back.id == b.id and back.id.startswith("d/text@")


def test_tampered_file_refused(tmp_path):
    p = save_baseline(_baseline(), tmp_path / "b.json")
    data = json.loads(p.read_text())
    data["calibrator"]["parts"][0]["buckets"][0]["calib"][-1] = 1e9
    p.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match=r"b\.json: checksum mismatch.*tampered"):
        load_baseline(p)


@pytest.mark.parametrize(
    "content, needle",
    [(b"{not json", "not a JSON baseline"), (b'{"format": "other"}', "not a guardrail baseline"),
     (b"\xff\xfe", "not a JSON baseline"), (b'{"format": "guardrail.baseline/1"}', "this guardrail reads .* refit it")],
)
def test_unreadable_files(tmp_path, content, needle):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    with pytest.raises(BaselineError, match=needle):
        load_baseline(p)


def test_invalid_field_named(tmp_path):
    p = save_baseline(_baseline(), tmp_path / "b.json")
    data = json.loads(p.read_text())
    data["side"] = "sideways"
    p.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match="invalid baseline at side"):
        load_baseline(p)


def test_other_scorer_refused(tmp_path):
    p = save_baseline(_baseline(), tmp_path / "b.json")
    other = SCORER.model_copy(update={"logprob_mode": LogprobMode.PROCESSED})
    with pytest.raises(BaselineError, match="logprob mode"):
        load_baseline(p, other)
    other = SCORER.model_copy(update={"model": "other-model"})
    with pytest.raises(BaselineError, match="fitted for model 'm'"):
        load_baseline(p, other)


def test_split_rule_is_deterministic_and_balanced():
    keys = [f"doc-{i}" for i in range(5000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]
    frac = {s: splits.count(s) / len(keys) for s in ("train", "calib", "test")}
    assert abs(frac["train"] - 0.4) < 0.03 and abs(frac["calib"] - 0.3) < 0.03 and abs(frac["test"] - 0.3) < 0.03


def test_chunks_keep_their_document_group_and_spread_over_it():
    from guardrail.baselines.corpus import Record

    text = " ".join(f"word{i}" for i in range(2000))
    units = cut_units([Record(text, "doc-A", {}), Record("a short document, one chunk only", "doc-B", {})], [100, 300], max_per_doc=5)
    a = [u for u in units if u.group == "doc-A"]
    assert len(a) == 5 and all(len(u.text) <= 300 for u in a)
    assert all(u.text == u.text.strip() and u.text in text for u in a)
    every = cut_units([Record(text, "doc-A", {})], [100, 300], max_per_doc=10_000)
    assert {len(u.text) <= 100 for u in every[::2]} == {True}  # lengths cycle 100, 300, 100, ...
    # the 5 kept chunks are spread evenly over the document, not its first 5
    pos = [text.index(u.text) for u in a]
    assert pos == sorted(pos) and pos[0] > 0 and pos[-1] > 0.75 * len(text)
    gaps = [b - x for x, b in itertools.pairwise(pos)]
    assert max(gaps) < 1.5 * min(gaps)
    assert [u.text for u in units if u.group == "doc-B"] == ["a short document, one chunk only"]


def test_unit_recipe_round_trips_through_a_baseline_unit():
    from guardrail.baselines.corpus import Record, UnitRecipe, spread_units

    docs = [Record(" ".join(f"w{i}x{j}" for j in range(400)), f"doc{i}", {}) for i in range(30)]
    recipe, units = spread_units(docs, [256, 512], max_units=120)
    assert recipe.kind == "chunk" and recipe.per_doc == 4
    again = UnitRecipe.of({"kind": "chunk", **recipe.model_dump(), "max_units": 120}).cut(docs, 120)
    assert [u.text for u in again] == [u.text for u in units]
    assert UnitRecipe.of({"kind": "record"}).cut(docs) == UnitRecipe.of(None).cut(docs)
    assert len(UnitRecipe.of({"kind": "reply"}).cut(docs)) == 30  # prompt/output baselines: whole records


def test_corpus_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match=r"empty\.jsonl: empty corpus"):
        read_records(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl: not valid UTF-8"):
        read_records(bad)
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"body": "x"}\n')
    with pytest.raises(InputError, match=r"nofield\.jsonl:1: record has no field 'text'"):
        read_records(nofield)


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    """Regression: str.splitlines() cut records at U+2028 / U+0085 inside JSON strings (real jailbreak data)."""
    p = tmp_path / "seps.jsonl"
    texts = ["one\u2028two", "three\x85four", "five\u2029six\x1cseven"]
    p.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\r\n" for t in texts), encoding="utf-8")
    assert [r.text for r in read_records(p)] == texts


def test_spread_units_cap_keeps_every_split():
    """Regression: visiting documents in split-hash order made a cap keep only train (and some calib)."""
    from guardrail.baselines.corpus import Record, spread_units
    from guardrail.baselines.splits import split_of

    docs = [Record(" ".join(f"w{i}x{j}" for j in range(300)), f"doc{i}", {}) for i in range(400)]
    recipe, units = spread_units(docs, [256, 512], max_units=200)
    assert len(units) == 200 and recipe.chunk_chars == [256, 512] and recipe.per_doc == 1
    counts = {s: sum(split_of(u.group) == s for u in units) for s in ("train", "calib", "test")}
    assert counts["test"] >= 40 and counts["calib"] >= 40, counts
    assert len({u.group for u in units}) == 200  # one chunk per document: spread as wide as possible


def test_first_by_group_is_a_reproducible_sample_spread_over_groups():
    from guardrail.baselines.splits import first_by_group, group_hash

    groups = [f"doc{i % 7}" for i in range(40)]
    idx = first_by_group(groups, 10)
    assert len(idx) == 10 and idx == first_by_group(list(groups), 10)
    keys = [(group_hash(groups[i]), i) for i in idx]
    assert keys == sorted(keys)  # hash order, input order within a group
    assert first_by_group(groups, None) == first_by_group(groups, 100) and len(first_by_group(groups, None)) == 40
