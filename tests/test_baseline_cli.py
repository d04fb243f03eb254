"""`guardrail baseline fit | show | check` end to end with the real model on a small corpus."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"


def cli(*args):
    p = subprocess.run([sys.executable, "-m", "guardrail.cli", "baseline", *args], capture_output=True, timeout=600)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_fit_show_check(tmp_path):
    out = tmp_path / "b.json"
    common = ("--text-field", "prompt", "--cache-dir", str(tmp_path / "cache"))
    rc, so, se = cli("fit", "--data", str(DATA / "benign_sample.jsonl"), "--domain", "tiny", "--side", "prompt",
                     "--alpha", "0.25", "--out", str(out), "--json", *common)
    assert rc == 0, se
    fit = json.loads(so)
    assert fit["baseline"].startswith("tiny/prompt@") and out.exists()
    assert sum(fit["corpus"]["n_units"].values()) == 40
    rc, so, se = cli("show", str(out), "--json")
    shown = json.loads(so)
    assert shown["baseline"] == fit["baseline"] and shown["side"] == "prompt"
    # check on the GCG sample: every attack flagged at alpha 0.25
    rc, so, se = cli("check", "--domain", str(out), "--data", str(DATA / "attacks_gcg_sample.jsonl"), "--side", "prompt",
                     "--alpha", "0.25", "--json", *common)
    assert rc == 0, se
    doc = json.loads(so)
    assert {"n", "flag_rate", "alpha", "baseline"} <= doc.keys()
    assert doc["n"] == 12 and doc["baseline"] == fit["baseline"] and doc["flag_rate"] == 1.0
    # the training records themselves are dropped by group hash
    rc, so, se = cli("check", "--domain", str(out), "--data", str(DATA / "benign_sample.jsonl"), "--side", "prompt",
                     "--alpha", "0.25", "--json", *common)
    doc = json.loads(so)
    assert doc["n_dropped_training"] == 40 - doc["n"] and doc["n"] < 20


def test_errors_are_one_line(tmp_path):
    rc, _, se = cli("fit", "--data", str(tmp_path / "missing.jsonl"), "--domain", "x", "--out", str(tmp_path / "o.json"))
    assert rc == 2 and se.startswith("error: ") and "missing.jsonl" in se and "Traceback" not in se
    rc, _, se = cli("fit", "--data", str(DATA / "benign_sample.jsonl"), "--domain", "x", "--text-field", "prompt",
                     "--alpha", "0.001", "--out", str(tmp_path / "o.json"), "--cache-dir", str(tmp_path / "c"))
    assert rc == 2 and "needs at least 999" in se and "Traceback" not in se
    rc, _, se = cli("show", str(tmp_path / "nope.json"))
    assert rc == 2 and "cannot read baseline" in se


def test_fit_output_side_from_generations(tmp_path):
    out = tmp_path / "o.json"
    rc, so, se = cli("fit", "--data", str(DATA / "benign_sample.jsonl"), "--text-field", "prompt", "--domain", "chat",
                     "--generate", "--max-tokens", "12", "--alpha", "0.25", "--out", str(out), "--json")
    assert rc == 0, se
    doc = json.loads(so)
    assert doc["baseline"].startswith("chat/output@")
    b = json.loads(out.read_text())
    assert b["side"] == "output" and b["unit"]["kind"] == "generation"
    assert b["calibrator"]["parts"][0]["detector"] is None and "detector skipped" in b["notes"][0]  # 16 training answers are too few
    assert sum(doc["corpus"]["n_units"].values()) == 40


def test_check_cuts_documents_as_the_baseline_was_fitted(tmp_path):
    """A corpus baseline's thresholds hold for chunks of the lengths it was fitted on: `check` cuts documents
    by the baseline's recipe unless told otherwise (whole 4,000-character documents would be another unit)."""
    texts = [json.loads(line)["text"] for line in (DATA / "calibration" / "medical_qa.jsonl").read_text().splitlines()]
    docs = [" ".join(texts[i::4]) for i in range(4)]  # 4 long documents of unseen medical answers
    assert min(len(d) for d in docs) > 4000
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    common = ("--domain", "medical_qa", "--data", str(data), "--alpha", "0.05", "--json", "--cache-dir", str(tmp_path / "c"))
    rc, so, se = cli("check", *common)
    assert rc == 0, se
    doc = json.loads(so)
    fitted = json.loads(subprocess.run([sys.executable, "-m", "guardrail.cli", "baseline", "show", "medical_qa", "--json"],
                                       capture_output=True, check=True).stdout)["unit"]
    assert doc["units"] == {"kind": "chunk", "chunk_chars": fitted["chunk_chars"], "per_doc": fitted["per_doc"]}
    assert doc["n"] == 4 * fitted["per_doc"]
    rc, so, se = cli("check", *common, "--max-per-doc", "3")
    assert json.loads(so)["n"] == 12 and json.loads(so)["units"]["per_doc"] == 3
    rc, so, se = cli("check", *common, "--chunk-chars", "none")
    whole = json.loads(so)
    assert whole["n"] == 4 and whole["units"]["kind"] == "record" and whole["n_beyond_fitted_length"] == 4
    assert doc["n_beyond_fitted_length"] == 0


def test_record_signals_then_recalibrate(tmp_path):
    """A deployment's path: check (or shadow mode) records signal vectors -- no text -- and `baseline recalibrate`
    refits the shipped prompt baseline's calibration on them; the new file loads and checks."""
    data = Path(__file__).parents[1] / "data" / "prompts" / "debian_short.jsonl"
    log = tmp_path / "signals.jsonl"
    common = ("--text-field", "prompt", "--group-field", "group", "--side", "prompt", "--cache-dir", str(tmp_path / "c"))
    rc, so, se = cli("check", "--domain", "general", "--data", str(data), "--limit", "120", "--alpha", "0.05",
                     "--record-signals", str(log), "--json", *common)
    assert rc == 0, se
    checked = json.loads(so)
    lines = log.read_text().splitlines()
    assert len(lines) == checked["n"] == 120 and oct(log.stat().st_mode & 0o777) == "0o600"
    rec = json.loads(lines[0])
    assert rec["baseline"] == checked["baseline"] and "excess_cusum" in rec["features"]
    texts = [json.loads(x)["prompt"] for x in data.read_text().splitlines()]
    body = log.read_text()
    assert not any(t in body for t in texts if len(t) > 12)  # no prompt text at rest
    out = tmp_path / "recal.json"
    rc, so, se = cli("recalibrate", "general", "--side", "prompt", "--from-signals", str(log), "--out", str(out), "--json")
    assert rc == 0, se
    doc = json.loads(so)
    assert doc["from"] == checked["baseline"] and doc["n_vectors"] == 120 and doc["baseline"] != doc["from"]
    assert sum(b["n_calib"] for b in doc["length_buckets"]) == 120
    rc, so, se = cli("check", "--domain", str(out), "--data", str(data), "--limit", "20", "--alpha", "0.05", "--json",
                     *common)
    assert rc == 0, se
    assert json.loads(so)["n"] == 20
    # signals recorded against one baseline never recalibrate another
    rc, _, se = cli("recalibrate", str(out), "--from-signals", str(log), "--out", str(tmp_path / "x.json"))
    assert rc != 0 and "recorded against baseline" in se and "Traceback" not in se
    rc, _, se = cli("check", "--data", str(data), "--text-field", "prompt", "--record-signals", str(log))
    assert rc == 2 and "--record-signals needs --domain" in se


def test_fit_without_data_uses_the_shipped_benign_prompts(tmp_path):
    """No --data: the 600 benign prompts shipped in the package (field prompt) are the fitting data; the
    corpus record names that file and its hash, --max-units takes the first units."""
    from guardrail.baselines.fit import files_sha256
    from guardrail.baselines.registry import shipped_prompts

    rows = [json.loads(x) for x in shipped_prompts().read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 600 and all(r["prompt"] and r["licence"] for r in rows)
    out = tmp_path / "d.json"
    rc, so, se = cli("fit", "--domain", "dflt", "--side", "prompt", "--alpha", "0.1", "--max-units", "120",
                     "--out", str(out), "--json", "--cache-dir", str(tmp_path / "cache"))
    assert rc == 0, se
    fit = json.loads(so)
    assert fit["corpus"]["files"] == ["benign.jsonl"] and fit["corpus"]["sha256"] == files_sha256([shipped_prompts()])
    assert sum(fit["corpus"]["n_units"].values()) == 120
