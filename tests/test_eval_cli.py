"""`guardrail eval prompts | outputs | calibration` end to end with the real model on small test-split samples."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"
METHODS = ["guardrail", "whole_ppl", "whole_ppl_recal", "jain_window", "jain_window_recal", "nemo_length_ppl",
           "nemo_length_ppl_recal", "nemo_prefix_suffix", "nemo_prefix_suffix_recal", "cpd_online", "cpd_online_recal"]


def cli(*args, cache=None):
    extra = ("--cache-dir", str(cache)) if cache else ()
    p = subprocess.run([sys.executable, "-m", "guardrail.cli", "eval", *args, *extra], capture_output=True,
                       timeout=900)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def prompts_doc(cache_dir, tmp_path_factory):
    plots = tmp_path_factory.mktemp("plots")
    rc, so, se = cli("prompts", "--data", str(DATA / "eval_prompts.jsonl"), "--report-labels", "harmful_plain",
                     "--group-field", "suffix_kind", "--n-boot", "200", "--plots", str(plots), "--json", cache=cache_dir)
    assert rc == 0, se
    return json.loads(so)


def test_prompts_document_has_every_method_and_figure(prompts_doc):
    d = prompts_doc
    assert d["counts"] == {"adversarial": 14, "benign": 40, "harmful_plain": 6}
    assert d["n_dropped_training"] == 0  # the sample is drawn from the test split
    assert list(d["methods"]) == METHODS
    for name, m in d["methods"].items():
        assert 0.0 <= m["auroc"] <= 1.0 and m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1], name
        assert set(m["tpr_at_fpr"]) == {"0.001", "0.01", "0.05"} == set(m["tpr_at_fpr_ci"])
        assert set(m["flag_rate"]) == {"adversarial", "benign", "harmful_plain"}
        assert set(m["by_group"]) == {"filler", "gibberish"}
        assert {"precision", "recall", "overlap"} <= set(m["localisation"])
    assert d["baseline"].startswith("general/prompt@") and d["scorer"]["id"].startswith("llamacpp:")
    for p in d["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prompts_ours_catches_the_suffix_attacks_and_localises_them(prompts_doc):
    ours = prompts_doc["methods"]["guardrail"]
    assert ours["auroc"] >= 0.99
    assert ours["flag_rate"]["adversarial"] == 1.0 and ours["flag_rate"]["benign"] <= 0.05
    assert ours["by_group"]["filler"]["tpr"] == 1.0  # the low side: runs of '!' filler
    loc = ours["localisation"]
    assert loc["n"] == 8 and loc["precision"] >= 0.9 and loc["overlap"] == 1.0  # the 8 GCG records carry adv_suffix
    # one-sided perplexity filters at their published thresholds miss the filler
    for name in ("jain_window", "whole_ppl", "nemo_prefix_suffix"):
        assert prompts_doc["methods"][name]["by_group"]["filler"]["tpr"] == 0.0, name


def test_outputs_with_context(cache_dir):
    rc, so, se = cli("outputs", "--data", str(DATA / "eval_outputs.jsonl"), "--context-field", "instruction",
                     "--positive-labels", "degenerate_candidate_unverified", "--negative-labels", "reference",
                     "--n-boot", "100", "--json", cache=cache_dir)
    assert rc == 0, se
    d = json.loads(so)
    assert d["conditioned_on_context"] is True and d["baseline"].startswith("general/output@")
    assert d["counts"] == {"degenerate_candidate_unverified": 8, "reference": 12}
    assert set(d["methods"]) == {"guardrail", "whole_ppl_recal", "jain_window_recal", "cpd_online_recal"}
    cal = d["methods"]["guardrail"]["calibration"]
    assert 0.0 <= cal["ece"] <= 1.0 and len(cal["bins"]) == 10


def test_calibration_per_domain(cache_dir):
    rc, so, se = cli("calibration", "--data", str(DATA / "calibration" / "medical_qa.jsonl"), "--json",
                     cache=cache_dir)
    assert rc == 0, se
    d = json.loads(so)
    dom = d["domains"]["medical_qa"]
    assert dom["baseline"].startswith("medical_qa/text@") and dom["n_dropped_training"] == 0
    for r in dom["rates"]:
        assert r["n"] > 30 and 0.0 <= r["flag_rate"] <= 0.2 and r["alpha"] in (0.01, 0.05)
    assert d["global"]["medical_qa"]["baseline"].startswith("global/text@")


@pytest.mark.parametrize("args, message", [
    (("prompts", "--data", "/nonexistent.jsonl"), "cannot read"),
    (("prompts", "--data", str(DATA / "benign_sample.jsonl")), "only negative records"),
    (("prompts", "--data", str(DATA / "eval_prompts.jsonl")), "unknown label 'harmful_plain'"),
    (("prompts", "--data", str(DATA / "eval_prompts.jsonl"), "--text-field", "text"), "no field 'text'"),
    (("prompts", "--data", str(DATA / "eval_prompts.jsonl"), "--report-labels", "harmful_plain", "--alpha", "2"),
     "alpha must be in (0, 1)"),
    (("calibration", "--data", str(DATA / "benign_sample.jsonl")), "no baseline 'benign_sample'"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    rc, so, se = cli(*args)
    assert rc == 2 and so == ""
    assert se.startswith("error: ") and message in se and "Traceback" not in se
