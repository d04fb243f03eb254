"""Scoring demo (what `make run` shows): a benign prompt, then the same prompt with a GCG suffix appended.

Runs offline on the embedded SmolLM2-135M model.  The suffix's tokens are far more surprising to the model
than the user's words; the top window (reverse video) lands on it.
"""

import asyncio
import json
from pathlib import Path

from rich.console import Console

from guardrail.backends.llamacpp import LlamaCppBackend
from guardrail.render import render_score
from guardrail.scoring import score_segment

HERE = Path(__file__).parent


async def main() -> None:
    console = Console()
    records = [json.loads(line) for line in (HERE / "data" / "demo_prompts.jsonl").read_text().splitlines()]
    backend = LlamaCppBackend()
    console.print(f"[bold]scorer[/]: {backend.scorer.id}\n")
    segments = await backend.score_many([r["prompt"] for r in records])
    for rec, seg in zip(records, segments, strict=True):
        console.rule(f"[bold]{rec['name']}[/] ({rec['label']})")
        score = score_segment(seg)
        render_score(seg, score, backend.scorer, console)
        if "adv_suffix" in rec:
            start = rec["prompt"].rfind(rec["adv_suffix"])
            w = score.max_window
            inside = max(0, min(w.end, len(rec["prompt"])) - max(w.start, start))
            console.print(f"the suffix starts at char {start}; {inside}/{w.end - w.start} chars of the top window lie in it")
        console.print()
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
