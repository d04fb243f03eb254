"""Comparators, localisation and evaluation records, on hand-made token arrays (no model)."""

import json
import math

import numpy as np
import pytest

from guardrail.baselines.splits import group_hash
from guardrail.errors import InputError
from guardrail.evaluation.data import LabelSpec, drop_trained, load_records, suffix_span
from guardrail.evaluation.methods import (
    CPDOnline,
    Item,
    JainWindow,
    NemoLengthPPL,
    NemoPrefixSuffix,
    WholePPL,
    cusum,
    nemo_parts,
)
from guardrail.evaluation.run import localisation
from guardrail.scoring import TokenArrays


def arrays(nll, ent=None, width=2):
    n = len(nll)
    start = np.arange(n) * width
    return TokenArrays(nll=np.array(nll, float), start=start, end=start + width, nbytes=np.full(n, width),
                       entropy=np.array(ent if ent is not None else [1.0] * n, float))


def item(nll, ent=None):
    a = arrays(nll, ent)
    return Item("x" * int(a.end[-1]), a, {})


def test_whole_and_window_scores():
    it = item([1.0] * 20 + [9.0] * 10)
    assert WholePPL().score(it) == pytest.approx((20 + 90) / 30)
    assert JainWindow().score(it) == pytest.approx(9.0)  # one 10-token window inside the spike
    # flagged windows cover exactly the spike region's windows above the threshold
    spans = JainWindow().spans(it, 8.0)
    assert spans == [(2 * 19, 60)]  # windows starting at tokens 19 and 20 have means 8.2 and 9.0


def test_window_of_a_short_text_is_the_whole_text():
    it = item([2.0, 4.0, np.nan, 6.0])
    assert JainWindow().score(it) == pytest.approx(4.0)


def test_nemo_length_per_perplexity():
    it = item([math.log(4.0)] * 5)  # perplexity 4, 10 characters
    assert NemoLengthPPL().score(it) == pytest.approx(10 / 4)
    assert not NemoLengthPPL().flags(np.array([89.78]), 89.79)[0] and NemoLengthPPL().flags(np.array([89.79]), 89.79)[0]


def test_nemo_parts_follow_the_published_word_windows():
    words = [f"w{i}" for i in range(25)]
    text = " ".join(words)
    parts = nemo_parts(text)
    assert parts["prefix"][1] == " ".join(words[0:19])
    assert parts["suffix"][1] == " ".join(words[-20:-1])
    (a, b), s = parts["suffix"]
    assert text[a:b] == s
    assert nemo_parts(" ".join(words[:19])) is None  # under 20 words: never evaluated


def test_nemo_prefix_suffix_uses_the_larger_part_and_zero_without_parts():
    m = NemoPrefixSuffix()
    it = item([1.0] * 4)
    assert m.score(it) == 0.0
    it.parts = {"prefix": ((0, 4), arrays([1.0, 1.0])), "suffix": ((4, 8), arrays([8.0, 8.0]))}
    assert m.score(it) == pytest.approx(8.0)
    assert m.spans(it, math.log(1845.65)) == [(4, 8)]


def test_cusum_paths():
    up, lo = cusum(np.array([0.0, 2.0, 2.0, -3.0, 0.0]), k=0.5)
    assert up.tolist() == pytest.approx([0.0, 1.5, 3.0, 0.0, 0.0])
    assert lo.tolist() == pytest.approx([0.0, 0.0, 0.0, 2.5, 2.0])


def test_cpd_alarm_span_starts_where_the_excursion_left_zero():
    nll = [1.0] * 10 + [12.0] * 6 + [1.0] * 10
    m = CPDOnline(mu=0.0, sigma=1.0, k=0.5, h=5.0)
    it = item(nll)
    assert m.score(it) > 5.0
    (s, e), = m.spans(it, 5.0)
    assert s == 2 * 10 and e <= 2 * 16  # from the first spike token to the alarm, inside the spike


def test_localisation_precision_recall_overlap():
    loc = localisation([[(10, 20)], [(0, 10)], []], [(10, 30), (20, 30), (0, 5)])
    assert loc["n"] == 2  # the prompt with no flagged characters does not count
    assert loc["precision"] == pytest.approx(0.5) and loc["recall"] == pytest.approx(0.25)
    assert loc["overlap"] == pytest.approx(0.5)


def test_suffix_span_is_the_last_occurrence():
    assert suffix_span("ab xy ab", "ab") == (6, 8)
    assert suffix_span("abc", "zz") is None and suffix_span("abc", "") is None and suffix_span("abc", None) is None


def write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_load_records_labels_groups_and_errors(tmp_path):
    labels = LabelSpec.parse("adversarial", "benign", "harmful_plain")
    f = write(tmp_path, "a.jsonl", [
        {"prompt": "hi there", "label": "benign"},
        {"prompt": "do X zz!!", "label": "adversarial", "goal": "do X", "adv_suffix": "zz!!", "kind": "g"},
        {"prompt": "do Y", "label": "harmful_plain"},
    ])
    recs = load_records([f], text_field="prompt", label_field="label", labels=labels, group_field="kind",
                        span_field="adv_suffix")
    assert [r.group for r in recs] == ["hi there", "do X", "do Y"]
    assert recs[1].span == (5, 9) and recs[1].group_value == "g" and recs[0].span is None
    kept, dropped = drop_trained(recs, {group_hash("do X")})
    assert dropped == 1 and [r.label for r in kept] == ["benign", "harmful_plain"]
    bad = write(tmp_path, "b.jsonl", [{"prompt": "x", "label": "weird"}])
    with pytest.raises(InputError, match=r"b\.jsonl: unknown label 'weird'"):
        load_records([f, bad], text_field="prompt", label_field="label", labels=labels)
    one = write(tmp_path, "c.jsonl", [{"prompt": "x", "label": "benign"}])
    with pytest.raises(InputError, match="only negative records"):
        load_records([one], text_field="prompt", label_field="label", labels=labels)
    nolabel = write(tmp_path, "d.jsonl", [{"prompt": "x"}])
    with pytest.raises(InputError, match=r"d\.jsonl: a record has no label field 'label'"):
        load_records([nolabel], text_field="prompt", label_field="label", labels=labels)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match=r"e\.jsonl: empty corpus"):
        load_records([empty], text_field="prompt", label_field="label", labels=labels)
    with pytest.raises(InputError, match="no field 'text'"):
        load_records([f], text_field="text", label_field="label", labels=labels)


def test_limit_is_a_seeded_sample_per_file(tmp_path):
    rows = [{"prompt": f"p{i}", "label": "benign" if i % 2 else "adversarial"} for i in range(50)]
    f = write(tmp_path, "a.jsonl", rows)
    labels = LabelSpec.parse("adversarial", "benign")
    a = load_records([f], text_field="prompt", label_field="label", labels=labels, limit=10, seed=1)
    b = load_records([f], text_field="prompt", label_field="label", labels=labels, limit=10, seed=1)
    c = load_records([f], text_field="prompt", label_field="label", labels=labels, limit=10, seed=2)
    assert [r.text for r in a] == [r.text for r in b] != [r.text for r in c] and len(a) == 10


def test_label_spec_errors():
    with pytest.raises(InputError, match="at least one positive"):
        LabelSpec.parse("", "benign")
    with pytest.raises(InputError, match="more than one role"):
        LabelSpec.parse("a", "a")
