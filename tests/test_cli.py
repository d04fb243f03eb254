"""The `guardrail` command, run as a real subprocess: JSON shape, inputs, and one-line errors."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

GUARDRAIL = [sys.executable, "-m", "guardrail.cli"]


def cli(*args, stdin: bytes | None = None):
    p = subprocess.run([*GUARDRAIL, *args], input=stdin, capture_output=True, timeout=300)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def assert_clean_error(rc, out, err, code, needle):
    assert rc == code, (rc, out, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "Traceback" not in err


def test_score_json_document(tmp_path):
    text = "The quick brown fox jumps over the lazy dog. Ünïcødé 🙂"
    rc, out, err = cli("score", text, "--json", "--widths", "4,8", "--top-k", "2")
    assert rc == 0, err
    doc = json.loads(out)  # exactly one JSON document
    assert {"scorer", "tokens", "whole", "windows", "max_window"} <= doc.keys()
    assert {"model", "tokenizer", "logprob_mode", "id"} <= doc["scorer"].keys()
    assert doc["scorer"]["logprob_mode"] == "raw_logprobs"
    toks = doc["tokens"]
    assert toks[0]["logprob"] is None and "no_context" in toks[0]["flags"]
    for t in toks:
        assert {"text", "start", "end", "logprob", "flags"} <= t.keys()
        assert text[t["start"] : t["end"]] == t["text"]
        assert len(t["top"]) == 2 if t["logprob"] is not None else True
    assert [w["width"] for w in doc["windows"]] == [4, 8]
    mw = doc["max_window"]
    assert mw["width"] == 4 and mw == doc["windows"][0]
    assert 0 <= mw["start"] < mw["end"] <= len(text)
    w = doc["whole"]
    assert w["n_scored"] + w["n_excluded"] == len(toks) and w["nll"] > 0 and w["bits_per_byte"] > 0


def test_score_from_file_and_stdin_agree(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Paris is the capital of France.", encoding="utf-8")
    _, a, _ = cli("score", "--file", str(f), "--json", "--no-tokens")
    _, b, _ = cli("score", "--json", "--no-tokens", stdin=f.read_bytes())
    _, c, _ = cli("score", "Paris is the capital of France.", "--json", "--no-tokens")
    assert json.loads(a)["whole"] == json.loads(b)["whole"] == json.loads(c)["whole"]
    assert "tokens" not in json.loads(a)


def test_terminal_view_marks_the_spike():
    rc, out, err = cli("score", "Please summarise this article. heap Pauloame-( IX ISBNancouver [ [ [ [ [")
    assert rc == 0, err
    assert "max window 8" in out and "whole" in out


def test_bad_inputs_give_one_line_errors(tmp_path):
    assert_clean_error(*cli("score", ""), 2, "empty")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    assert_clean_error(*cli("score", "--file", str(bad)), 2, "not valid UTF-8: byte 0xe9 at offset 3")
    assert_clean_error(*cli("score", "--file", str(tmp_path / "missing.txt")), 2, "cannot read")
    assert_clean_error(*cli("score", "hi", "--widths", "0"), 2, "window width must be an integer >= 1")
    assert_clean_error(*cli("score", "hi", "--widths", "8,x"), 2, "--widths takes integers")
    assert_clean_error(*cli("score", "hi", "--model", str(tmp_path / "none.gguf")), 3, "model file not found")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00" * 64)
    assert_clean_error(*cli("score", "hi", "--model", str(corrupt), "--no-bos"), 3, "corrupt.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x89PNG not a model")
    assert_clean_error(*cli("score", "hi", "--model", str(junk)), 3, "not a GGUF")


def test_batch_command_uses_the_cache(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p}) for p in ["one text", "two texts", "one text"]) + "\n")
    args = ("batch", "--data", str(data), "--text-field", "prompt", "--json", "--cache-dir", str(tmp_path / "c"))
    rc, out, err = cli(*args)
    assert rc == 0, err
    first = json.loads(out)
    assert first["n"] == 3 and first["cache"]["hits"] == 0
    rc, out, err = cli(*args)
    second = json.loads(out)
    assert second["cache"]["hits"] == 2 and second["cache"]["misses"] == 0
    assert [r["whole"] for r in first["results"]] == [r["whole"] for r in second["results"]]
    assert_clean_error(*cli("batch", "--data", str(data), "--text-field", "text"), 2, "no field 'text'")
