"""Records as highlighted HTML in notebooks: one record, or gold and prediction side by side."""

from __future__ import annotations

import colorsys
import hashlib
import html
from collections.abc import Sequence

from openie.records import Entity, Record


def label_colour(label: str) -> str:
    """A stable pastel colour per label, so the same type looks the same everywhere."""
    hue = int(hashlib.md5(label.encode("utf-8")).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hls_to_rgb(hue, 0.85, 0.6)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _outermost(entities: Sequence[Entity]) -> list[Entity]:
    """Nested mentions are shown inside their outer span's tooltip, not as overlapping marks."""
    kept: list[Entity] = []
    for e in sorted(entities, key=lambda e: (e.start, -(e.end - e.start))):
        if not kept or e.start >= kept[-1].end:
            kept.append(e)
    return kept


def entities_html(text: str, entities: Sequence[Entity], missing: set[tuple[int, int, str]] | None = None) -> str:
    """The text with each entity marked by its label colour; ``missing`` spans are outlined in red."""
    out, pos = [], 0
    for e in _outermost(entities):
        out.append(html.escape(text[pos:e.start]))
        style = f"background:{label_colour(e.label)};padding:0 2px;border-radius:3px"
        if missing is not None and (e.start, e.end, e.label) in missing:
            style += ";outline:2px solid #d33"
        tip = f"{e.label} [{e.start}:{e.end}]" + (f" score={e.score:.3f}" if e.score is not None else "")
        out.append(f'<mark style="{style}" title="{html.escape(tip)}">{html.escape(text[e.start:e.end])}'
                   f'<sub style="font-size:0.7em;margin-left:2px">{html.escape(e.label)}</sub></mark>')
        pos = e.end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def record_html(record: Record) -> str:
    body = entities_html(record.text, record.entities)
    rels = "".join(f"<li>{html.escape(r.head.text)} —{html.escape(r.label)}→ {html.escape(r.tail.text)}</li>"
                   for r in record.relations)
    return (f'<div style="line-height:1.9"><b>{html.escape(record.id)}</b> ({html.escape(record.lang)})<br>{body}'
            + (f"<ul>{rels}</ul>" if rels else "") + "</div>")


def compare_html(gold: Record, pred: Record) -> str:
    """Gold and predicted entities side by side; what the other side lacks is outlined in red."""
    g = {(e.start, e.end, e.label) for e in gold.entities}
    p = {(e.start, e.end, e.label) for e in pred.entities}
    return ('<table><tr><th>gold</th><th>predicted</th></tr><tr>'
            f'<td style="vertical-align:top;line-height:1.9">{entities_html(gold.text, gold.entities, g - p)}</td>'
            f'<td style="vertical-align:top;line-height:1.9">{entities_html(pred.text, pred.entities, p - g)}</td>'
            "</tr></table>")
