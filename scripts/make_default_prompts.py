"""The benign prompts shipped in the package (guardrail/data/prompts/benign.jsonl): the default fitting data of
`guardrail baseline fit` when ``--data`` is not given (a prompt baseline, or an output baseline of a model's own
answers with ``--generate``), so a served model can be fitted for on a bare install.

Taken deterministically from the broad benign corpus (data/prompts, see its README for sources): the first
``PER_SOURCE`` records of each source whose licence allows redistribution without a non-commercial or
share-alike condition, in the corpus's own order (SHA-256 of the group key).  Records keep their ``source``,
``group``, ``licence`` and ``origin``.

    python scripts/make_default_prompts.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["banking77", "certified_safe", "self_instruct", "alpaca_inputs", "code_paste", "debian_short",
           "debian_long", "debian_changelog"]
PER_SOURCE = 75
OUT = ROOT / "guardrail" / "data" / "prompts" / "benign.jsonl"


def main() -> None:
    rows = []
    for name in SOURCES:
        lines = (ROOT / "data" / "prompts" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        rows += [json.loads(x) for x in lines if x.strip()][:PER_SOURCE]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{OUT.relative_to(ROOT)}: {len(rows)} prompts from {len(SOURCES)} sources")


if __name__ == "__main__":
    main()
