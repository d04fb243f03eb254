"""Agents checking their own steps: an output the caller already has -- a planned answer, or a tool call
(judged as `name(arguments)`) -- judged as the reply to the conversation, without generating anything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..backends.base import Message
from ..errors import BackendError, ConfigError, InputError
from ..types import Generation, Segment, Side
from .report import SideDecision
from .sides import judged_text, messages_of

if TYPE_CHECKING:
    from .guard import Guard

__all__ = ["check_output"]


async def check_output(guard: Guard, messages: Sequence[Message | Mapping[str, Any]], output: str | Mapping[str, Any],
                       *, temperature: float = 0.0, tools: Sequence[Mapping[str, Any]] | None = None) -> SideDecision:
    """Judge an output the caller already has -- an agent's planned answer, or a tool call (an OpenAI
    ``tool_calls`` entry or an assistant message with them: judged as ``name(arguments)``) -- as the reply to
    ``messages``, without generating anything; with ``tools`` (the tools the agent may call) a tool call is also
    checked against them when the policy says ``invalid_tool_call``.  Teacher-forced by the scorer of the output side; a serving
    backend that cannot score a given text makes the verdict unscorable (the policy's fail mode)."""
    if "output" not in guard._judge_by:
        raise ConfigError(f"policy {guard.policy.name} does not check outputs")
    msgs = messages_of(messages)
    if isinstance(output, str):
        gen_extra: dict[str, Any] = {}
        text = output
    else:
        calls = output.get("tool_calls") or ([output] if "function" in output else [])
        gen_extra, text = {"tool_calls": list(calls)}, str(output.get("content") or "")
    kind, scorer = guard._judge_by["output"]
    seg = Segment(text=text, side=Side.OUTPUT, tokens=[], backend=scorer.scorer.backend,
                  model=scorer.scorer.model, tokenizer=scorer.scorer.tokenizer,
                  logprob_mode=scorer.scorer.logprob_mode, scorer_id=scorer.scorer.id)
    gen = Generation(output=seg, finish_reason="stop", prompt_tokens=0, message_extra=gen_extra)
    if kind == "serving":  # the serving model's own logprobs of this text: teacher-force it there
        judged = judged_text(gen)
        if hasattr(scorer, "score_reply") and judged.strip():
            try:
                gen.output = await scorer.score_reply([m.model_dump() for m in msgs], judged)  # type: ignore[attr-defined]
            except (BackendError, InputError):
                pass  # no tokens: judged unscorable below
    return await guard._judge_output(msgs, gen, temperature, tools)

