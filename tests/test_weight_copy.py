"""The embedded model's F16 compute copy is recorded by hash when made and checked before every use: an
altered copy is made again, never loaded."""

from __future__ import annotations

import pytest

from guardrail.backends.llama_engine import compute_copy
from guardrail.models import default_model_path, file_sha256

pytestmark = pytest.mark.slow


def test_an_altered_compute_copy_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(tmp_path))
    src = default_model_path()
    sha = file_sha256(src)
    out = compute_copy(src, "f16", sha)
    record = out.with_name(out.name + ".sha256")
    good = record.read_text().strip()
    assert good == file_sha256(out)
    made = out.stat().st_mtime_ns
    assert compute_copy(src, "f16", sha) == out and out.stat().st_mtime_ns == made  # a good copy is reused
    with out.open("r+b") as fh:  # flip one byte of the weights
        fh.seek(out.stat().st_size // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))
    assert file_sha256(out) != good
    again = compute_copy(src, "f16", sha)
    assert file_sha256(again) == good  # made again, identical to the first copy
    record.unlink()  # a copy without its record (made before hashes were recorded) is made again too
    compute_copy(src, "f16", sha)
    assert record.read_text().strip() == good
