"""``guardrail cache info`` and ``guardrail cache purge --older-than DAYS``: the score cache at rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

cache_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="The score cache (~/.cache/guardrail or $GUARDRAIL_CACHE_DIR): it holds scored texts.")

PathOpt = Annotated[Path | None, typer.Option("--path", help="the cache file (default: the default cache)")]


def _cache(path: Path | None):
    from .cache import ScoreCache, default_cache_path

    return ScoreCache(path or default_cache_path())


@cache_app.command("info")
def info(path: PathOpt = None) -> None:
    """Where the cache is, how many entries, how large, oldest and newest entry (Unix time; 0: no timestamp)."""
    c = _cache(path)
    typer.echo(json.dumps(c.info()))
    c.close()


@cache_app.command("purge")
def purge(older_than: Annotated[float, typer.Option("--older-than", help="days; 0 deletes everything")],
          path: PathOpt = None) -> None:
    """Delete the entries written more than DAYS days ago (entries from before timestamps count as oldest)."""
    from .cli import _fail

    if older_than < 0:
        _fail("--older-than: a number of days >= 0")
    c = _cache(path)
    n = c.purge(older_than * 86400.0)
    typer.echo(f"purged {n} entries older than {older_than:g} days from {c.path}")
    c.close()
