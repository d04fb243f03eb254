"""Terminal view of a scored text: tokens coloured by surprise, the top window marked, a summary table."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .backends.base import ScorerInfo
from .scoring import TextScore
from .types import Flag, Segment

__all__ = ["render_score"]

# NLL (nats) upper bounds and styles: predictable -> surprising
_BANDS = ((1.0, "grey62"), (3.0, "green"), (6.0, "yellow"), (9.0, "dark_orange"), (float("inf"), "bold red"))


def _style(nll: float | None) -> str:
    if nll is None:
        return "dim italic"
    for bound, style in _BANDS:
        if nll < bound:
            return style
    return "bold red"


def _legend() -> Text:
    t = Text("NLL: ")
    lo = 0.0
    for bound, style in _BANDS:
        label = f"<{bound:g}" if bound != float("inf") else f">={lo:g}"
        t.append(f" {label} ", style=style)
        lo = bound
    t.append("  excluded ", style="dim italic")
    t.append("  top window ", style="reverse")
    return t


def render_score(seg: Segment, score: TextScore, scorer: ScorerInfo, console: Console | None = None) -> None:
    console = console or Console()
    span = score.max_window
    body = Text()
    pos = 0
    for t in seg.tokens:
        if Flag.SPECIAL in t.flags or t.end <= pos:
            continue
        s = max(t.start, pos)
        style = _style(None if t.logprob is None else -t.logprob)
        if span and span.start <= s < span.end:
            style += " reverse"
        body.append(seg.text[s:t.end], style=style)
        pos = t.end
    if pos < len(seg.text):
        body.append(seg.text[pos:], style="dim")
    console.print(Panel(body, title=f"scored by {scorer.model} ({scorer.logprob_mode.value})", expand=False))
    console.print(_legend())
    w = score.whole
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("signal", "NLL", "PPL", "where", "text"):
        table.add_column(col)
    if w.nll is None:
        console.print(Text("unscorable: no token has a logprob", style="bold red"))
    else:
        bpb = f"{w.bits_per_byte:.3f} bits/byte" if w.bits_per_byte is not None else ""
        table.add_row("whole", f"{w.nll:.3f}", f"{w.ppl:.1f}", bpb, f"{w.n_scored} scored, {w.n_excluded} excluded")
        for win in score.windows:
            snippet = seg.text[win.start:win.end].replace("\n", " ")
            if len(snippet) > 60:
                snippet = snippet[:57] + "..."
            name = f"max window {win.width}" + (f" (short: {win.effective_width})" if win.short else "")
            table.add_row(name, f"{win.nll:.3f}", f"{win.ppl:.1f}", f"[{win.start}:{win.end}]", snippet)
        if w.mean_entropy is not None:
            table.add_row("mean entropy", f"{w.mean_entropy:.3f}", "", f"k={w.entropy_k}", "")
    console.print(Group(table))
    for note in seg.notes:
        console.print(Text(f"note: {note}", style="yellow"))
