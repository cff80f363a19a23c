"""Records as highlighted HTML in notebooks: one record, or gold and prediction side by side."""

from __future__ import annotations

import colorsys
import hashlib
import html
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


# What display reads of openie.records' Entity and Record. records imports this module for its
# Jupyter display, so this module names the shapes it draws instead of importing records back.
class Entity(Protocol):
    start: int
    end: int
    label: str
    text: str
    score: float | None


class Record(Protocol):
    id: str
    text: str
    lang: str
    entities: Sequence[Entity]
    relations: Sequence[Any]


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


def compare_html(gold: Record, pred: Record, io: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Gold and predicted entities side by side; what the other side lacks is outlined in red.

    The prediction's coverage (what the model saw, answers cut, spans lost) is shown under it, and
    ``io`` (its ``--save-io`` entries: prompts, raw answers, finish reasons) as folded blocks."""
    g = {(e.start, e.end, e.label) for e in gold.entities}
    p = {(e.start, e.end, e.label) for e in pred.entities}
    coverage = getattr(pred, "meta", {}).get("coverage")
    note = ""
    if coverage:
        note = ("<div style='font-size:.85em;color:#555'>coverage: " + html.escape(", ".join(
            f"{k} {v}" for k, v in coverage.items())) + "</div>")
    return ('<table><tr><th>gold</th><th>predicted</th></tr><tr>'
            f'<td style="vertical-align:top;line-height:1.9">{entities_html(gold.text, gold.entities, g - p)}</td>'
            f'<td style="vertical-align:top;line-height:1.9">{entities_html(pred.text, pred.entities, p - g)}</td>'
            f"</tr></table>{note}" + "".join(io_html(entry) for entry in io or ()))


def io_html(entry: Mapping[str, Any], name: str = "") -> str:
    """One prompt and its raw answer (a ``--save-io`` entry), folded."""
    prompt = entry.get("prompt", "")
    shown = prompt if isinstance(prompt, str) else "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in prompt)
    extra = "".join(f", {k} {html.escape(str(entry[k]))}" for k in ("labels", "retried") if k in entry)
    salvaged = (f"<pre>salvaged (complete items): {html.escape(str(entry['salvaged']))}</pre>"
                if "salvaged" in entry else "")
    return (f"<details><summary>{html.escape(name + ': ' if name else '')}prompt ({entry.get('prompt_tokens', '?')} "
            f"tokens) and raw answer (finish: {html.escape(str(entry.get('finish_reason')))}{extra})</summary>"
            f"<pre>{html.escape(shown)}</pre><pre>{html.escape(str(entry.get('answer', '')))}</pre>{salvaged}"
            "</details>")


def comparison_page(title: str, notes: Sequence[str], gold: Sequence[Record],
                    arms: Sequence[tuple[str, Mapping[str, Record], Mapping[str, Sequence[Mapping[str, Any]]]]]) -> str:
    """A standalone HTML page: per record, gold spans, then each arm's predicted spans (errors outlined
    in red, misses listed) with the prompts and raw answers that produced them (``io``: ``--save-io``).

    ``arms`` are (name, predictions by record id, io entries by record id).
    """
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             ".rec{border-top:1px solid #ccc;padding:.8em 0}.row{line-height:1.9;margin:.2em 0}"
             ".tag{display:inline-block;width:8em;color:#555;font-size:.9em}"
             "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;font-size:.8em;max-height:24em;overflow:auto}"
             "summary{cursor:pointer;color:#336;font-size:.9em}.miss{color:#b00;font-size:.85em}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<p>Marks: spans coloured by type; a red outline is a predicted span that is not in the gold "
                 "annotation (wrong boundary or type). Gold spans an arm missed are listed under it.</p>")
    for g in gold:
        gs = {(e.start, e.end, e.label) for e in g.entities}
        rows = [f"<div class='rec'><b>{html.escape(g.id)}</b>",
                f"<div class='row'><span class='tag'>gold</span>{entities_html(g.text, g.entities)}</div>"]
        for name, preds, io in arms:
            p = preds.get(g.id)
            if p is None:
                rows.append(f"<div class='row'><span class='tag'>{html.escape(name)}</span><i>no prediction</i></div>")
                continue
            ps = {(e.start, e.end, e.label) for e in p.entities}
            missed = sorted(gs - ps)
            rows.append(f"<div class='row'><span class='tag'>{html.escape(name)}</span>"
                        f"{entities_html(g.text, p.entities, ps - gs)}</div>")
            if missed:
                rows.append("<div class='miss'>missed: " + "; ".join(
                    f"{html.escape(g.text[s:e])} ({html.escape(lab)})" for s, e, lab in missed) + "</div>")
            rows += [io_html(entry, name) for entry in io.get(g.id, ())]
        rows.append("</div>")
        parts.append("".join(rows))
    parts.append("</body></html>")
    return "\n".join(parts)
