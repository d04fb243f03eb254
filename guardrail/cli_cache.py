"""``guardrail cache info`` and ``guardrail cache purge --older-than DAYS``: the score cache and the generation
store at rest (both hold prompts and outputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

cache_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="The score cache and the generation store (~/.cache/guardrail or $GUARDRAIL_CACHE_DIR): "
                             "they hold scored texts and generated answers.")

PathOpt = Annotated[Path | None, typer.Option("--path", help="the cache file (default: the default cache)")]


def _cache(path: Path | None):
    from .cache import ScoreCache, default_cache_path

    return ScoreCache(path or default_cache_path())


StoreOpt = Annotated[Path | None, typer.Option("--store", help="the generation store (default: generations.jsonl "
                                                               "beside the cache)")]


def _store(path: Path | None, cache: Path | None):
    from .evaluation.generations import GenerationStore, default_store_path

    return GenerationStore(path or (cache.parent / "generations.jsonl" if cache else default_store_path()))


@cache_app.command("info")
def info(path: PathOpt = None, store: StoreOpt = None) -> None:
    """Where the cache is, how many entries, how large, oldest and newest entry (Unix time; 0: no timestamp);
    the generation store's path and size."""
    c = _cache(path)
    g = _store(store, path)
    typer.echo(json.dumps({**c.info(), "generations": {"path": str(g.path), "entries": len(g),
                                                       "bytes": g.path.stat().st_size if g.path.exists() else 0}}))
    c.close()


@cache_app.command("purge")
def purge(older_than: Annotated[float, typer.Option("--older-than", help="days; 0 deletes everything")],
          path: PathOpt = None, store: StoreOpt = None) -> None:
    """Delete the score cache's entries and the stored generations written more than DAYS days ago (those from
    before timestamps count as oldest)."""
    from .cli import _fail

    if older_than < 0:
        _fail("--older-than: a number of days >= 0")
    c = _cache(path)
    n = c.purge(older_than * 86400.0)
    typer.echo(f"purged {n} entries older than {older_than:g} days from {c.path}")
    c.close()
    g = _store(store, path)
    m = g.purge(older_than * 86400.0)
    typer.echo(f"purged {m} generations older than {older_than:g} days from {g.path}")
