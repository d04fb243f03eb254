"""``guardrail serve`` (the proxy) and ``guardrail keys new`` (an API key and the hash for the config)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .errors import GuardrailError

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys for the proxy's config.")


def serve(
    config: Annotated[Path | None, typer.Option("--config", help="proxy config YAML (default: the embedded model, "
                                                                  "policy default, offline)")] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="port (default 8080; 0: any free one)")] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="default policy of every served model")] = None,
) -> None:
    """Run the OpenAI-compatible guardrail proxy in the foreground (Ctrl-C stops it)."""
    from .cli import _fail
    from .proxy.config import load_config
    from .proxy.serve import override
    from .proxy.serve import serve as run

    try:
        cfg = override(load_config(config), host=host, port=port, policy=policy)
    except GuardrailError as e:
        _fail(e)
    raise typer.Exit(run(cfg))


@keys_app.command("new")
def keys_new(name: Annotated[str, typer.Option("--name", help="who holds the key")] = "app") -> None:
    """Print a fresh API key (give it to the client) and the config entry holding only its SHA-256."""
    from .proxy.config import hash_key, new_key

    key = new_key()
    typer.echo(f"key (shown once; give it to the client): {key}")
    typer.echo(f"config entry:\nkeys:\n  - name: {name}\n    sha256: {hash_key(key)}")
