"""Render a model's chat template while keeping user content apart from template text.

Each message's content is rendered as a unique sentinel first; the rendered string is then cut at the
sentinels, so we know exactly which characters are template (role markers, special tokens, an injected
default system prompt) and which are message content.  Template pieces are tokenized with special-token
parsing, content pieces without it: a user cannot inject ``<|im_start|>`` as a control token, and only content
is scored as user text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Piece", "render_chat"]

#: Used when the model file carries no template (SmolLM2's own is ChatML).
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    message: int | None  # index of the message whose content this is; None for template text


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
    )

    def raise_exception(msg: str) -> None:
        raise ConfigError(f"chat template refused the messages: {msg}")

    env.globals["raise_exception"] = raise_exception
    return env


def render_chat(
    template: str | None,
    messages: Sequence[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> list[Piece]:
    """Template text and message contents, in prompt order."""
    try:
        import jinja2
    except ImportError as e:  # pragma: no cover
        raise ConfigError("chat templates need jinja2 (installed with the embedded extra)") from e
    tag = uuid.uuid4().hex
    sentinels = [f"\x00{tag}:{i}\x00" for i in range(len(messages))]
    masked = [{**m, "content": s} for m, s in zip(messages, sentinels, strict=True)]
    try:
        tpl = _environment().from_string(template or CHATML)
        out = tpl.render(
            messages=masked, add_generation_prompt=add_generation_prompt,
            bos_token=bos_token, eos_token=eos_token,
        )
    except jinja2.TemplateError as e:
        raise ConfigError(f"chat template failed to render: {e}") from None
    pieces: list[Piece] = []
    rest = out
    for i, s in enumerate(sentinels):
        head, sep, tail = rest.partition(s)
        if not sep:
            raise ConfigError(
                "the chat template transforms message content; cannot separate template from user text"
            )
        if head:
            pieces.append(Piece(head, None))
        if messages[i]["content"]:
            pieces.append(Piece(messages[i]["content"], i))
        rest = tail
    if rest:
        pieces.append(Piece(rest, None))
    return pieces
