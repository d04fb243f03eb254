"""The committed starter baselines (made by `make baselines`; CI checks them, it does not refit)."""

import json

import pytest
from scipy.stats import binom

from guardrail.baselines.model import load_baseline
from guardrail.baselines.registry import resolve, shipped, shipped_dir

DOMAINS = ["general_wiki", "general_chat", "code_python", "legal_contracts", "medical_qa", "medical_abstracts",
           "support_dialogues"]
RESULTS = json.loads((shipped_dir() / "results.json").read_text())


def within(rate: dict) -> bool:
    """The issue's rule: [0.5a, 1.5a] where n is large enough for it (>= 1500 units at a = 1 %, >= 300 at
    5 %), else the exact 99 % binomial interval of Binomial(n, a) for the number of flags."""
    a, n, k = rate["alpha"], rate["n"], rate["flags"]
    if n >= (1500 if a <= 0.01 else 300):
        return 0.5 * a <= k / n <= 1.5 * a
    return binom.ppf(0.005, n, a) <= k <= binom.ppf(0.995, n, a)


def test_every_domain_and_the_prompt_side_are_shipped_and_load():
    table = shipped()
    for d in DOMAINS:
        assert (d, "text") in table
    assert ("general", "prompt") in table and ("global", "text") in table
    for path in table.values():
        b = load_baseline(path)  # checksum verified
        assert b.scorer_id == RESULTS["scorer_id"]
        assert b.target_alphas == [0.01, 0.05]
        assert b.training_groups


@pytest.mark.parametrize("domain", DOMAINS)
def test_results_match_the_shipped_files(domain):
    res = RESULTS["per_domain"][domain]
    b = resolve(domain)
    assert res["baseline"] == b.id
    assert [r.model_dump() for r in b.test_rates] == [
        {k: r[k] for k in ("alpha", "n", "flags", "flag_rate")} for r in res["rates"]
    ]


@pytest.mark.parametrize("domain, alpha", [(d, a) for d in DOMAINS for a in (0.01, 0.05)])
def test_per_domain_flag_rate_on_held_back_split_is_calibrated(domain, alpha):
    (rate,) = [r for r in RESULTS["per_domain"][domain]["rates"] if r["alpha"] == alpha]
    assert rate["n"] >= 100
    assert within(rate), rate


def test_one_global_baseline_is_miscalibrated_where_per_domain_ones_are_not():
    """The case for per-domain baselines, measured: pooled, contracts are flagged far above the target and
    support dialogues far below it, on the very test units where their own baselines hold."""
    outside = [(d, r["alpha"]) for d in DOMAINS for r in RESULTS["global"][d]["rates"] if not within(r)]
    assert len(outside) >= 2, outside
    legal = {r["alpha"]: r for r in RESULTS["global"]["legal_contracts"]["rates"]}
    assert legal[0.05]["flag_rate"] > 1.5 * 0.05 and not within(legal[0.05])
    for d, a in outside:
        (own,) = [r for r in RESULTS["per_domain"][d]["rates"] if r["alpha"] == a]
        assert within(own)


def test_cross_conformal_is_shipped_and_compared_with_split():
    for d in DOMAINS:
        b = resolve(d)
        assert b.calibrator.method == "cross" and len(b.calibrator.parts) == 5
        assert len(RESULTS["per_domain"][d]["split_conformal_rates"]) == 2
    # the ablation shows what cross-conformal fixed: split conformal leaves cells outside on these splits
    split_out = [d for d in DOMAINS for r in RESULTS["per_domain"][d]["split_conformal_rates"] if not within(r)]
    assert split_out, "split conformal holds everywhere: the README's comparison would be stale"


def test_prompt_side_baseline_is_calibrated():
    for rate in RESULTS["prompt"]["general"]["rates"]:
        assert rate["n"] >= 900 and within(rate), rate


SHIFT = json.loads((shipped_dir().parents[2] / "eval" / "shift" / "results.json").read_text())


def test_prompt_baseline_is_fitted_on_the_broad_corpus_with_the_recipe_measured_under_shift():
    b = resolve("general", "prompt")
    assert RESULTS["prompt"]["general"]["baseline"] == b.id
    assert len(b.corpus["files"]) == len(SHIFT["n_per_source"]) >= 10
    assert {f.removesuffix(".jsonl") for f in b.corpus["files"]} == set(SHIFT["n_per_source"])
    recipe = SHIFT["recipes"]["shipped"]["recipe"]
    assert sorted(b.calibrator.signals) == sorted(recipe["signals"]) and b.detector is None
    assert len(b.calibrator.buckets) == recipe["max_buckets"] == 1 and not b.calibrator.buckets[0].trend
    # tiers at 1 % and 5 % (and 0.1 %) sit well above the calibration floor
    assert b.resolution < 0.001
    b.check_tier(0.001)


def test_shift_evidence_is_recorded_and_better_than_the_previous_recipe():
    """The leave-one-source-out table of docs/prompt-screening.md: the shipped recipe's worst source is flagged
    less than the previous recipe's and than the previous shipped baseline's, and attack detection holds."""
    new, prev = SHIFT["recipes"]["shipped"], SHIFT["recipes"]["previous_recipe"]
    for a in ("0.01", "0.05"):
        hi = new["loso"]["highest"][a]["rate"]
        assert hi < prev["loso"]["highest"][a]["rate"] and hi < SHIFT["shipped_before"]["highest"][a]["rate"]
    assert sum(not r["0.01"]["within"] and r["0.01"]["rate"] > 0.02 for r in new["loso"]["sources"].values()) <= 1
    atk = new["attacks"]["0.01"]
    assert atk["gcg"]["tpr_at_0.001"] >= 0.99 and atk["random_search"]["tpr_at_0.001"] >= 0.99
    assert atk["filler"]["tpr_at_0.001"] >= 0.9 and atk["harmful_plain"]["flag_rate"] <= 0.01


@pytest.mark.slow
def test_check_without_domain_routes_each_text(tmp_path):
    """`baseline check` without --domain: the router picks a shipped baseline per text (here: our own source
    code, which no baseline was fitted on)."""
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "guardrail"
    data = tmp_path / "code.jsonl"
    texts = [p.read_text()[:1500] for p in sorted(src.glob("*.py"))[:6]]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    p = subprocess.run([sys.executable, "-m", "guardrail.cli", "baseline", "check", "--data", str(data), "--alpha", "0.05",
                        "--json", "--cache-dir", str(tmp_path / "c")], capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout)
    # cut as the shipped corpus baselines were: 1,500 characters make 2-4 chunks of 256/512/1024
    assert doc["baseline"] == "router" and doc["units"]["kind"] == "chunk" and doc["n_dropped_training"] == 0
    assert 12 <= doc["n"] <= 24
    assert "code_python" in doc["baselines"] and sum(v["n"] for v in doc["baselines"].values()) == doc["n"]
    assert sum(doc["routed_by"].values()) == doc["n"]


def test_output_side_baseline_is_shipped_and_calibrated():
    b = resolve("general", "output")
    assert b.side == "output" and b.unit["kind"] == "reply"
    res = RESULTS["output"]["general"]
    assert res["baseline"] == b.id
    for r in res["rates"]:
        assert r["n"] >= 100 and within(r), r


def test_eval_reference_is_shipped_for_the_same_scorer(tmp_path):
    from guardrail.baselines.model import BaselineError
    from guardrail.evaluation.reference import load_reference, reference_path

    ref = load_reference()
    assert ref.scorer_id == RESULTS["scorer_id"] and ref.training_groups
    assert ref.cpd_sigma > 0 and ref.n_benign_tokens > 10000 and ref.n_harmful > 100
    bad = tmp_path / "ref.json"
    doc = json.loads(reference_path().read_text())
    doc["cpd_sigma"] = "wide"
    bad.write_text(json.dumps(doc))
    with pytest.raises(BaselineError, match=r"ref\.json: not an evaluation reference"):
        load_reference(bad)


def test_resolve_names_the_sides_a_domain_is_shipped_for():
    from guardrail.baselines.model import BaselineError

    assert resolve("general", "prompt").side == "prompt"
    assert resolve("code_python", "prompt").side == "text"  # no prompt-side code baseline: the corpus one serves
    with pytest.raises(BaselineError, match=r"'general' is shipped for side output, prompt: pass --side output"):
        resolve("general", "text")
    with pytest.raises(BaselineError, match=r"shipped domains: code_python, general, general_chat"):
        resolve("klingon", "text")


def test_own_generation_output_baselines_per_sampling_regime():
    """Output baselines of the embedded model's own answers (greedy and T = 0.7), loops kept out; the realised
    rate on held-back prompts' generations is recorded (eval/generations/fit.json)."""
    from pathlib import Path

    from guardrail.baselines.registry import regimes

    fit = json.loads((Path(__file__).resolve().parents[1] / "eval" / "generations" / "fit.json").read_text())
    bs = {b.unit["temperature"]: b for b in regimes("general")}
    assert set(bs) == {0.0, 0.7}
    for t, b in bs.items():
        res = fit["regimes"][f"{t:g}"]
        assert res["baseline"] == b.id and b.unit["kind"] == "generation" and b.side == "output"
        assert b.scorer_id == resolve("general", "prompt").scorer_id and b.entropy_k == 49152
        for r in res["test"]:
            assert r["n"] >= 40 and within(r), (t, r)
