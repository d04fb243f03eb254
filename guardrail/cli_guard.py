"""``guardrail policy check|list``, ``guardrail screen`` and ``guardrail chat``: the Guard from the command line.

Same rules as every command: ``--json`` prints one JSON document; errors are one line on stderr with a
non-zero exit (2 bad input/config, 3 model, 4 backend), never a traceback.  ``chat`` exits 0 whatever the
action (the action is in the output).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from .cli_baseline import _fail
from .errors import ConfigError, GuardrailError, InputError

policy_app = typer.Typer(no_args_is_help=True, help="Validate and explain policies.")

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document to stdout")]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="GGUF file (default: the embedded SmolLM2)")]


@policy_app.command("check")
def policy_check(
    policy: Annotated[str, typer.Argument(help="a shipped policy name or a YAML file")],
    as_json: JsonOpt = False,
) -> None:
    """Validate a policy (schema, baselines, tiers against their resolution), then explain it in plain words."""
    from .guard.explain import explain
    from .guard.guard import resolve_baselines
    from .guard.policy import load_policy
    from .guard.routing import routed_sides

    try:
        pol = load_policy(policy)
        bl = resolve_baselines(pol)
        routed = routed_sides(pol)  # `baseline: route`: every domain's baseline, tiers checked against each
        lines = explain(pol, bl, routed)
        if as_json:
            typer.echo(json.dumps({"ok": True, "policy": pol.name, "source": pol.source, "hash": pol.hash,
                                   "baselines": {s: "route" if s in routed else b.id for s, b in bl.items()},
                                   "routed": {s: {d: b.id for d, b in r.baselines.items()} for s, r in routed.items()},
                                   "resolution": {s: max(x.resolution for x in routed[s].all()) if s in routed
                                                  else b.resolution for s, b in bl.items()},
                                   "explanation": lines, "schema": pol.model_dump(mode="json")}))
        else:
            typer.echo(f"{pol.source}: ok")
            for line in lines:
                typer.echo(line)
    except GuardrailError as e:
        _fail(e)


@policy_app.command("list")
def policy_list(as_json: JsonOpt = False) -> None:
    """The shipped policies."""
    from .guard.policy import load_policy, shipped_policies

    rows = {n: load_policy(p).description for n, p in shipped_policies().items()}
    typer.echo(json.dumps(rows) if as_json else "\n".join(f"{n}: {d}" for n, d in rows.items()))


def _screen_policy(policy: str | None, baseline: str | None, alpha: float | None):
    from .guard.policy import load_policy, parse_policy

    if baseline is not None or alpha is not None:
        if policy is not None:
            raise ConfigError("give --policy, or --baseline/--alpha, not both")
        a = 0.01 if alpha is None else alpha
        if not 0 < a < 1:
            raise ConfigError(f"--alpha must be in (0, 1), got {a}")
        name = baseline or "general"
        return parse_policy(f"name: screen\nprompt:\n  baseline: {json.dumps(name)}\n  tiers:\n"
                            f"    - {{p: {a!r}, action: reject}}\n", f"--baseline {name} --alpha {a:g}")
    return load_policy(policy or "prompt-screen")


def screen(
    text: Annotated[str | None, typer.Argument(help="one prompt to screen")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="JSONL file of prompts")] = None,
    text_field: Annotated[str, typer.Option("--text-field")] = "prompt",
    policy: Annotated[str | None, typer.Option("--policy", help="policy name or file (default prompt-screen)")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="screen against this baseline instead")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="with --baseline: reject at p <= alpha")] = None,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not use the score cache")] = False,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Screen prompts without generating: per text the action, p-value, top signal and flagged spans."""
    from .backends.llamacpp import LlamaCppBackend
    from .baselines.corpus import read_records
    from .batch import score_texts
    from .cache import ScoreCache, default_cache_path
    from .cli_baseline import _progress
    from .guard.guard import Guard
    from .types import Side

    try:
        if (text is None) == (data is None):
            raise InputError("give one TEXT or --data FILE.jsonl")
        texts = [text] if text is not None else [r.text for r in read_records(data, text_field, skip_empty=False)]
        texts = texts[:limit] if limit is not None else texts
        pol = _screen_policy(policy, baseline, alpha)
        if pol.prompt is None or not pol.prompt.enabled:
            raise ConfigError(f"policy {pol.name} does not screen prompts")
        backend = LlamaCppBackend(model)
        cache = None if no_cache else ScoreCache(default_cache_path())
        guard = Guard(pol, backend, scorer=backend, score_cache=cache)
        with _progress() as bar:
            task = bar.add_task("screening", total=len(texts))

            async def go():
                if cache is not None and len(texts) > 1:  # score in packed batches first; the Guard reads the cache
                    await score_texts(backend, [t for t in texts if t.strip()], side=Side.PROMPT, cache=cache,
                                      errors="skip")
                out = []
                for t in texts:
                    out.append(await guard.screen_messages([{"role": "user", "content": t}]) if t.strip() else None)
                    bar.advance(task, 1)
                return out

            decisions = asyncio.run(go())
        results, counts = [], {}
        for i, d in enumerate(decisions):
            if d is None:
                results.append({"index": i, "action": None, "error": "empty text"})
                continue
            v = d.verdicts[0] if d.verdicts else None
            results.append({"index": i, "action": d.action, "p_value": d.p_value, "tail_p": d.tail_p,
                            "top_signal": d.top_signal, "reason": d.reason, "fail_mode": d.fail_mode,
                            "missing": d.missing,
                            "spans": [s.model_dump(exclude={"message"}) for s in (v.spans if v else [])]})
            counts[d.action] = counts.get(d.action, 0) + 1
        summary = {"n": len(texts), "actions": counts, "policy": pol.name, "policy_hash": pol.hash,
                   "baseline": guard.baselines["prompt"].id, "resolution": guard.baselines["prompt"].resolution}
        if as_json:
            typer.echo(json.dumps({"results": results, "summary": summary}, ensure_ascii=False))
        else:
            for r in results:
                spans = "; ".join(repr(s["text"][:60]) for s in r.get("spans", []))
                p = f"p={r['p_value']:.3g}" if r.get("p_value") is not None else ""
                typer.echo(f"[{r['index']}] {r['action']} {p} {r.get('top_signal') or ''} {spans}".rstrip())
            typer.echo(f"{summary['n']} screened by {pol.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        backend.close()
    except GuardrailError as e:
        _fail(e)


def chat(
    prompt: Annotated[str, typer.Argument(help="the user message")],
    policy: Annotated[str, typer.Option("--policy", help="policy name or file")] = "default",
    domain: Annotated[str | None, typer.Option("--domain", help="judge both sides by this domain's baselines")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 128,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="print the answer as the Guard releases it (assessed "
                                                           "every 16 tokens; a degenerate answer is cut)")] = False,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One guarded chat on the embedded model.  --json prints {"completion": ..., "guardrail": <report>}."""
    from .backends.llamacpp import LlamaCppBackend
    from .guard.guard import Guard
    from .guard.policy import load_policy

    try:
        pol = load_policy(policy).with_baseline(domain)
        backend = LlamaCppBackend(model)
        guard = Guard(pol, backend, scorer=backend)
        msgs = [{"role": "user", "content": prompt}]
        if stream and not as_json:
            _stream_chat(guard, msgs, max_tokens=max_tokens, temperature=temperature, seed=seed)
            backend.close()
            return
        res = asyncio.run(guard.chat(msgs, max_tokens=max_tokens, temperature=temperature, seed=seed))
        if as_json:
            typer.echo(json.dumps(res.to_json(), ensure_ascii=False))
        else:
            if res.content is not None:
                typer.echo(res.content)
            elif res.error is not None:
                typer.echo(f"[rejected] {res.error['error']['message']}")
            typer.echo(f"-- guardrail: {res.report.summary()}", err=True)
        backend.close()
    except GuardrailError as e:
        _fail(e)


def _stream_chat(guard, msgs, **kw) -> None:
    """Print released text as it comes; the end: [cut] or [rejected] and the report's summary on stderr."""
    from .guard.streaming import StreamDelta, StreamEnd

    async def go() -> None:
        async for ev in guard.stream(msgs, **kw):
            if isinstance(ev, StreamDelta):
                typer.echo(ev.text, nl=False)
            elif isinstance(ev, StreamEnd):
                res = ev.result
                if ev.aborted:
                    typer.echo(" [cut]")
                elif res.error is not None and not ev.streamed:
                    typer.echo(f"[rejected] {res.error['error']['message']}")
                else:
                    typer.echo("")
                typer.echo(f"-- guardrail: {res.report.summary()}", err=True)

    asyncio.run(go())
