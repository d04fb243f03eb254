"""vLLM in-process engine backend (extra ``guardrail[vllm]``): ``AsyncLLM`` with ``SamplingParams(logprobs=…,
prompt_logprobs=…)``, streaming, and abort -- for users who embed vLLM instead of running its server.

The engine's outputs are turned into the same shapes as the server's JSON (token-id keyed prompt logprobs,
chat ``logprobs.content`` entries) and normalized by :mod:`~guardrail.backends.openai_logprobs`, so both
paths give the same Segments.  Differences from the server, handled here:

* values are Python floats and may be ``-inf`` (the server clamps to −9999): both become ``clamped``;
* the engine knows the token ids, so token bytes come from the tokenizer (byte-level BPE pieces decoded to
  raw bytes: partial UTF-8 tokens keep their true bytes) and the first prompt token's text is known;
* chat prompts are rendered with the model's own chat template; template tokens are flagged ``special``.

A stream that its consumer leaves early (``break``, cancellation) aborts the request in the engine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, InputError, UnscorableError
from ..types import Generation, LogprobMode, Segment, Side
from .base import BackendBase, Capabilities, GenerationRequest, ScorerInfo, TokenEvent
from .openai_logprobs import Origin, output_segment, prompt_segment, token_from_entry
from .stream_assembler import StreamAssembler

__all__ = ["VLLMEngineBackend"]


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character standing for each byte (inverse of bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class _Pieces:
    """Token id -> raw bytes, from the engine's tokenizer (cached)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        self._dec = _byte_decoder()
        self._cache: dict[int, bytes] = {}

    def __call__(self, tid: int) -> bytes:
        got = self._cache.get(tid)
        if got is None:
            piece = self.tok.convert_ids_to_tokens(tid)
            if tid not in self.special and piece and all(ch in self._dec for ch in piece):
                got = bytes(self._dec[ch] for ch in piece)
            else:  # special tokens and non-byte-level vocabularies: the decoded text
                got = self.tok.decode([tid]).encode("utf-8")
            self._cache[tid] = got
        return got

    def text(self, tid: int) -> str:
        return self(tid).decode("utf-8", "replace")


def _value(lp: Any) -> float | None:
    v = getattr(lp, "logprob", lp)
    return None if v is None else float(v)


class VLLMEngineBackend(BackendBase):
    """``VLLMEngineBackend("path/or/name", dtype="bfloat16", max_model_len=2048)``: engine args as keywords."""

    def __init__(self, model: str, *, top_k: int = 5, revision: str | None = None, **engine_args: Any) -> None:
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:  # pragma: no cover - only without the extra
            raise ConfigError("the vLLM engine backend needs the extra: pip install 'guardrail[vllm]'") from e
        if not 1 <= top_k <= 20:
            raise ConfigError(f"top_k must be in 1..20, got {top_k}")
        engine_args.setdefault("max_logprobs", 20)
        args = AsyncEngineArgs(model=model, **engine_args)
        self._engine = AsyncLLM.from_engine_args(args)
        self.top_k = top_k
        self._pieces = _Pieces(self._engine.get_tokenizer())
        mode = LogprobMode(str(getattr(args, "logprobs_mode", "raw_logprobs") or "raw_logprobs"))
        name = str(engine_args.get("served_model_name") or model).rstrip("/").rsplit("/", 1)[-1]
        vocab = len(self._pieces.tok)
        tokenizer = f"hf-{vocab}-{name}"
        self._scorer = ScorerInfo(
            backend="vllm_engine", model=name, weights=revision or f"path:{name}", tokenizer=tokenizer,
            logprob_mode=mode, settings={"dtype": str(args.dtype), "top_k": top_k},
        )
        self._caps = Capabilities(
            prompt_logprobs=True, output_logprobs=True, max_top_k=int(engine_args["max_logprobs"]),
            logprob_mode=mode, tokenizer=tokenizer,
        )
        self._origin = Origin.of(self._scorer)

    @property
    def engine(self) -> Any:
        return self._engine

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            del engine  # collected now, not at interpreter exit (where vLLM's __del__ fails on torn-down globals)

    # ------------------------------------------------------------------ conversion (engine -> wire shapes)
    def _entry(self, tid: int, dist: Mapping[int, Any] | None) -> dict[str, Any]:
        dist = dist or {}
        tops = [{"token": self._pieces.text(a), "logprob": _value(lp)} for a, lp in dist.items()]
        # -inf / NaN / a missing entry are normalized downstream (clamped / missing), never read as 0
        return {"token": self._pieces.text(tid), "bytes": list(self._pieces(tid)),
                "logprob": _value(dist.get(tid)), "top_logprobs": tops}

    def _prompt_entries(self, ids: Sequence[int], plp: Sequence[Any] | None) -> list[Any]:
        if not plp:
            raise UnscorableError("the vLLM engine returned no prompt logprobs")
        out: list[Any] = [None]
        for tid, dist in zip(ids[1:], plp[1:], strict=True):
            dist = dist or {}
            order = [tid, *(a for a in dist if a != tid)]
            out.append({str(a): {"logprob": _value(dist.get(a)), "decoded_token": self._pieces.text(a)}
                        for a in order})
        return out

    def _render(self, req: GenerationRequest) -> str:
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        return self._pieces.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    # ------------------------------------------------------------------ scoring
    async def _final(self, prompt: str, params: Any) -> Any:
        final = None
        async for out in self._engine.generate(prompt, params, request_id=f"guardrail-{uuid.uuid4().hex}"):
            final = out
        return final

    async def score(self, text: str, *, side: Side = Side.TEXT) -> Segment:
        from vllm import SamplingParams

        if not isinstance(text, str) or not text:
            raise InputError("text is empty: nothing to score")
        out = await self._final(text, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=self.top_k))
        ids = list(out.prompt_token_ids)
        return prompt_segment(self._prompt_entries(ids, out.prompt_logprobs), self._origin, contents=[text],
                              prompt_token_ids=ids, side=side, first_text=self._pieces.text(ids[0]))

    async def score_many(self, texts: Sequence[str], *, side: Side = Side.TEXT) -> list[Segment]:
        return list(await asyncio.gather(*(self.score(t, side=side) for t in texts)))

    # ------------------------------------------------------------------ generation
    def _params(self, req: GenerationRequest, *, delta: bool) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if req.top_logprobs > self._caps.max_top_k:
            raise ConfigError(f"top_logprobs={req.top_logprobs} is above the engine's max_logprobs")
        return SamplingParams(
            max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
            stop=list(req.stop) or None, logprobs=req.top_logprobs,
            prompt_logprobs=1 if req.score_prompt and not delta else None,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        out = await self._final(self._render(request), self._params(request, delta=False))
        comp = out.outputs[0]
        entries = [self._entry(t, d) for t, d in zip(comp.token_ids, comp.logprobs or (), strict=False)]
        if not entries:
            raise UnscorableError("the vLLM engine returned no output logprobs")
        counts: list[int] | None = None if request.alternatives else []
        seg = output_segment([token_from_entry(e, counts) for e in entries], self._origin, comp.text, fresh=True,
                             counts=counts)
        ids = list(out.prompt_token_ids)
        gen = Generation(output=seg, finish_reason=str(comp.finish_reason or "unknown"), prompt_tokens=len(ids))
        if request.score_prompt:
            gen.prompt = prompt_segment(
                self._prompt_entries(ids, out.prompt_logprobs), self._origin,
                contents=[m.content for m in request.messages], prompt_token_ids=ids,
                first_text=self._pieces.text(ids[0]),
            )
        return gen

    async def stream(
        self, request: GenerationRequest, assembler: StreamAssembler | None = None
    ) -> AsyncIterator[TokenEvent]:
        """Token events as the engine produces them; leaving early aborts the request.  Pass an
        ``assembler`` to keep the stream's state: its ``segment()`` is the output segment at the end."""
        asm = assembler or StreamAssembler(self._origin, request.max_tokens, alternatives=request.alternatives)
        rid = f"guardrail-{uuid.uuid4().hex}"
        done = False
        try:
            async for out in self._engine.generate(self._render(request), self._params(request, delta=True), rid):
                comp = out.outputs[0]
                entries = [self._entry(t, d) for t, d in zip(comp.token_ids, comp.logprobs or (), strict=False)]
                chunk = {"choices": [{"index": 0, "logprobs": {"content": entries},
                                      "finish_reason": comp.finish_reason}]}
                for ev in asm.feed(chunk):
                    yield ev
                done = out.finished
            last = asm.finish()
            if last is not None:
                yield last
        finally:
            if not done:
                await self._engine.abort(rid)
