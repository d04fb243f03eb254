"""Loading llama.cpp and the model file: the library and its log, the GGUF check, and the one-time copy of the
weights in the compute type the engine runs.  No decoding here (llama_engine.py)."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from ..errors import ConfigError, ModelError
from ..models import file_sha256, models_cache_dir

log = logging.getLogger("guardrail.llama")

__all__ = ["COMPUTE_TYPES", "check_gguf", "compute_copy"]

#: weight types the embedded scorer can compute in.  "native" runs the file as it is; "f16" runs a one-time
#: F16 copy of its weights: on AVX2 CPUs llama.cpp's batched F16 kernels score ~2x faster than Q4_1's, and
#: the numbers match an F32 de-quantisation (no 8-bit activation quantisation); see bench/results.json.
COMPUTE_TYPES: dict[str, int | None] = {"native": None, "f16": 1, "f32": 0, "q8_0": 7}

_GGUF_MAGIC = b"GGUF"
_LOG_TAIL: list[str] = []  # last llama.cpp error lines, to explain a failed load


def _install_log_callback(L) -> None:  # noqa: N803
    """Route llama.cpp's own logging to Python logging; keep error lines for error messages."""
    if getattr(_install_log_callback, "cb", None) is not None:
        return

    @L.llama_log_callback
    def _cb(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        msg = text.decode("utf-8", errors="replace").rstrip()
        if level in (2, 3) and msg:  # WARN, ERROR
            _LOG_TAIL.append(msg)
            del _LOG_TAIL[:-8]
        log.debug("%s", msg)

    _install_log_callback.cb = _cb  # keep a reference: ctypes callbacks must outlive their use
    L.llama_log_set(_cb, ctypes.c_void_p(0))




def check_gguf(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
    if magic != _GGUF_MAGIC:
        raise ModelError(f"not a GGUF model file (bad magic {magic!r}): {path}")


def _llama():
    try:
        import llama_cpp as L
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ModelError("the embedded backend needs llama-cpp-python: pip install 'guardrail[embedded]'") from e
    _install_log_callback(L)
    return L


def _why(default: str) -> str:
    return "; ".join(_LOG_TAIL[-2:]) if _LOG_TAIL else default


def compute_copy(path: Path, compute: str, sha256: str) -> Path:
    """A copy of the GGUF at ``path`` with its weights in ``compute`` type, made once and cached.

    Made with llama.cpp's own ``llama_model_quantize`` (which de-quantises and re-encodes every tensor),
    written under a temporary name and renamed, so concurrent first runs are safe.  Its SHA-256 is recorded
    beside it (``.sha256``) and checked before every use: a copy that does not match (altered, truncated, or
    made before hashes were recorded) is made again.
    """
    if compute not in COMPUTE_TYPES:
        raise ConfigError(f"unknown compute type {compute!r}; choose from {', '.join(COMPUTE_TYPES)}")
    ftype = COMPUTE_TYPES[compute]
    check_gguf(path)
    if ftype is None:
        return path
    out = models_cache_dir() / f"{sha256[:16]}-{compute}.gguf"
    record = out.with_name(out.name + ".sha256")
    if out.exists():
        try:
            if record.read_text().strip() == file_sha256(out):
                return out
        except OSError:
            pass
        # not the copy that was made (altered, or made before hashes were recorded): made again below and
        # swapped in atomically -- never unlinked, so another process loading it meanwhile is not disturbed
    L = _llama()  # noqa: N806
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    rec_tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = max(1, os.cpu_count() or 1)
    del _LOG_TAIL[:]
    try:
        rc = L.llama_model_quantize(str(path).encode(), str(tmp).encode(), params)
        if rc != 0 or not tmp.exists():
            raise ModelError(f"cannot load model {path}: {_why(f'llama.cpp code {rc}')}")
        rec_tmp.write_text(file_sha256(tmp) + "\n")
        os.replace(tmp, out)
        os.replace(rec_tmp, record)
    finally:
        tmp.unlink(missing_ok=True)
        rec_tmp.unlink(missing_ok=True)
    return out
