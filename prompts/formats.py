"""Output formats: how gold annotations are written as model targets, and how model text is read back.

Each format is a linearizer and a parser. Parsers never raise: whatever the model wrote, the
result is the annotations that could be read and grounded, plus a list of recorded problems.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openie.grounding import Alignment, ground_all
from openie.records import Entity, Event, EventArgument, Record, Relation
from openie.schema import Schema

TASKS = ("ner", "re", "ed", "eae")
NONE_OUTPUT = "None"


@dataclass(frozen=True)
class ParseProblem:
    """One thing in the model output that could not be turned into a grounded annotation."""

    kind: str  # syntax | unknown_type | not_found | invalid | empty
    detail: str
    fragment: str = ""


@dataclass
class ParseResult:
    entities: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    problems: list[ParseProblem] = field(default_factory=list)
    alignments: list[Alignment] = field(default_factory=list)

    @property
    def fuzzy(self) -> int:
        return sum(1 for a in self.alignments if a.status.value == "fuzzy")

    def extend(self, other: ParseResult) -> None:
        self.entities += other.entities
        self.relations += other.relations
        self.events += other.events
        self.problems += other.problems
        self.alignments += other.alignments

    def to_record(self, record: Record) -> Record:
        """A prediction record for ``record``'s input, parse problems kept in ``meta``."""
        pred = record.without_annotations()
        pred.entities = sorted(set(self.entities))
        pred.relations = list(dict.fromkeys(self.relations))
        pred.events = list(dict.fromkeys(self.events))
        pred.meta["parse_problems"] = [vars(p) for p in self.problems]
        pred.meta["alignment"] = {"exact": sum(1 for a in self.alignments if a.status.value == "exact"),
                                  "fuzzy": self.fuzzy,
                                  "not_found": sum(1 for a in self.alignments if not a.found)}
        return pred


class OutputFormat(Protocol):
    name: str

    def linearize(self, record: Record, task: str, event: Event | None = None) -> str:
        """The gold target of ``record`` for ``task`` (for EAE: the arguments of ``event``)."""
        ...

    def parse(self, text: str, record: Record, schema: Schema, task: str, event: Event | None = None) -> ParseResult:
        """Annotations of ``record``'s input read from model ``text``; never raises."""
        ...


def _sorted_entities(record: Record) -> list[Entity]:
    return sorted(record.entities, key=lambda e: (e.start, e.end, e.label))


def _grounded(record: Record, items: Sequence[tuple[str, str]], result: ParseResult,
              groups: Sequence[int] | None = None) -> list[Entity | None]:
    """Ground (label, span text) pairs; spans not found become problems and ``None``."""
    alignments = ground_all(record.text, [t for _, t in items], groups=groups)
    out: list[Entity | None] = []
    for (label, span), a in zip(items, alignments, strict=True):
        result.alignments.append(a)
        if a.found:
            out.append(Entity(a.start, a.end, label, record.text[a.start:a.end]))  # type: ignore[arg-type]
        else:
            result.problems.append(ParseProblem("not_found", f"{span!r} does not occur in the input", span))
            out.append(None)
    return out


def _unquote(value: str, text: str) -> str:
    """Drop quotes a model put around a span, unless the quotes are part of the input's span."""
    if value in text:
        return value
    stripped = value.strip('"\'').strip()
    return stripped or value


def strip_wrapping(text: str) -> str:
    """Remove what models wrap answers in: code fences, leading labels, trailing chatter lines."""
    text = text.strip()
    fence = re.search(r"```(?:json|python|text)?\s*(.*?)(?:```|$)", text, re.S)
    if fence:
        text = fence.group(1).strip()
    return text


# --- RUIE unified format --------------------------------------------------------------------------

class RuieFormat:
    """``type: span; type: span`` (NER, ED), ``relation: head, tail`` (RE), ``role: argument`` (EAE); ``None`` when empty."""

    name = "ruie"

    def linearize(self, record: Record, task: str, event: Event | None = None) -> str:
        if task == "ner":
            items = [f"{e.label}: {e.text}" for e in _sorted_entities(record)]
        elif task == "re":
            rels = sorted(record.relations, key=lambda r: (r.head.start, r.tail.start, r.label))
            items = [f"{r.label}: {r.head.text}, {r.tail.text}" for r in rels]
        elif task == "ed":
            items = [f"{ev.type}: {ev.trigger.text}" for ev in sorted(record.events, key=lambda ev: ev.trigger.start)]
        elif task == "eae":
            if event is None:
                raise ValueError("EAE linearizes the arguments of one event: pass event=")
            items = [f"{a.role}: {a.text}" for a in sorted(event.arguments, key=lambda a: (a.start, a.role))]
        else:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        return "; ".join(items) if items else NONE_OUTPUT

    def schema_text(self, schema: Schema, task: str, record: Record | None = None, event: Event | None = None,
                    order: Sequence[str] | None = None) -> str:
        """The ``Schema:`` line: a Python-style list of type names (EAE: trigger + candidate roles)."""
        if task == "eae":
            if event is None:
                raise ValueError("EAE needs the event whose arguments are asked for")
            roles = order or next((tuple(r.name for r in t.roles) for t in schema.event_types if t.name == event.type), ())
            return f'Given event trigger: "{event.type}: {event.trigger.text}"; Candidate arguments: {list(roles)!r}'
        names = order or {"ner": schema.entity_labels, "re": schema.relation_labels, "ed": schema.event_labels}[task]
        return repr(list(names))

    def labels(self, schema: Schema, task: str) -> list[str]:
        return {"ner": schema.entity_labels, "re": schema.relation_labels, "ed": schema.event_labels,
                "eae": sorted({r.name for t in schema.event_types for r in t.roles})}.get(task, [])

    def read_items(self, text: str, labels: Sequence[str], result: ParseResult) -> list[tuple[str, str]]:
        """``type: value`` items of the first output line; a ``;`` not followed by ``type:`` belongs to the value."""
        body = strip_wrapping(text).split("\n")[0].strip()
        body = re.sub(r"^(?:Output:)\s*", "", body).strip()
        if not body or body.rstrip(".") == NONE_OUTPUT:
            if not body:
                result.problems.append(ParseProblem("empty", "the output is empty"))
            return []
        known = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
        # a piece opens an item when it starts with a schema label, or with something label-like
        # (an unknown type, recorded as a problem below); otherwise the ';' was inside a span
        starts_item = re.compile(rf"^\s*(?:(?:{known})\s*:|[\w][\w .\-/]{{0,39}}:(?:\s|$))" if known
                                 else r"^\s*[\w][\w .\-/]{0,39}:(?:\s|$)")
        parts: list[str] = []
        for piece in body.split(";"):
            if not parts or starts_item.match(piece):
                parts.append(piece)
            else:
                parts[-1] += ";" + piece
        items: list[tuple[str, str]] = []
        for part in parts:
            if not part.strip():
                continue
            label, sep, value = part.partition(":")
            label, value = label.strip(), value.strip()
            if not sep or not value:
                result.problems.append(ParseProblem("syntax", "expected 'type: text'", part.strip()))
                continue
            if labels and label not in labels:
                result.problems.append(ParseProblem("unknown_type", f"{label!r} is not in the schema", part.strip()))
                continue
            items.append((label, value))
        return items

    def parse(self, text: str, record: Record, schema: Schema, task: str, event: Event | None = None) -> ParseResult:
        result = ParseResult()
        items = self.read_items(text, self.labels(schema, task), result)
        items = [(label, _unquote(value, record.text)) for label, value in items]
        if task == "re":
            self._relations(record, items, result)
        elif task in ("ner", "ed", "eae"):
            grounded = _grounded(record, items, result)
            found = [g for g in grounded if g is not None]
            if task == "ner":
                result.entities += found
            elif task == "ed":
                result.events += [Event(g) for g in found]
            elif event is not None:
                args = tuple(EventArgument(g.start, g.end, g.label, g.text) for g in found)
                result.events.append(Event(event.trigger, args))
        return result

    def _relations(self, record: Record, items: list[tuple[str, str]], result: ParseResult) -> None:
        """``head, tail``: entities may contain commas, so every split is tried and one grounding exactly wins."""
        pairs: list[tuple[str, str, str]] = []
        for label, value in items:
            splits = [m.start() for m in re.finditer(",", value)]
            if not splits:
                result.problems.append(ParseProblem("syntax", "expected 'relation: head, tail'", f"{label}: {value}"))
                continue
            best = None
            for pos in splits:
                head, tail = value[:pos].strip(), value[pos + 1:].strip()
                score = (head in record.text) + (tail in record.text)
                if head and tail and (best is None or score > best[0]):
                    best = (score, head, tail)
            if best is None:
                result.problems.append(ParseProblem("syntax", "empty head or tail", f"{label}: {value}"))
                continue
            pairs.append((label, best[1], best[2]))
        resolved = _resolve_pairs(record, [(h, tl) for _, h, tl in pairs], record.entities, result,
                                  [label for label, _, _ in pairs])
        for label, head, tail in resolved:
            if head is not None and tail is not None:
                result.relations.append(Relation(head, tail, label))


def _resolve_pairs(record: Record, pairs: Sequence[tuple[str, str]], known: Sequence[Entity],
                   result: ParseResult, labels: Sequence[str] | None = None) -> list[tuple[str, Entity | None, Entity | None]]:
    """Relation arguments -> entities. The same text names the same entity; known entities (given
    with the record, from an NER step, or listed in the same output) supply spans and types first;
    when several known entities share a text, the pair standing closest together is taken."""
    by_text: dict[str, list[Entity]] = {}
    for e in known:
        if e not in by_text.setdefault(e.text, []):
            by_text[e.text].append(e)
    texts = [t for pair in pairs for t in pair]
    unique = [t for t in dict.fromkeys(texts) if t not in by_text]
    for t, g in zip(unique, _grounded(record, [("", t) for t in unique], result), strict=True):
        by_text[t] = [g] if g is not None else []
    out = []
    for i, (h, t) in enumerate(pairs):
        heads, tails = by_text.get(h) or [None], by_text.get(t) or [None]
        best = min(((a, b) for a in heads for b in tails),
                   key=lambda ab: abs(ab[0].start - ab[1].start) if ab[0] is not None and ab[1] is not None else 0)
        out.append(((labels[i] if labels else ""), *best))
    return out


# --- answers cut at the token limit ---------------------------------------------------------------

def complete_prefix(text: str, format_name: str) -> str:
    """The part of an answer cut at the token limit that holds only complete items.

    The last item of a cut answer is unfinished by definition ("Barack Ob", a type cut in half):
    parsed as it stands it becomes a wrong span or a wrong type. JSON keeps the objects (or the
    strings, for a JSON list) closed before the cut, and the parser's repair closes the brackets;
    ``type: span; ...`` keeps the items before the last ``;``; markers keep the last closed ``>>>``.
    """
    if format_name == "json":
        return _closed_json_items(text, item="{")
    if format_name == "question":
        return _closed_json_items(text, item='"')
    if format_name == "markers":
        end = text.rfind(">>>")
        return text[:end + 3] if end >= 0 else ""
    end = text.rfind(";")
    return text[:end] if end >= 0 else ""


def _closed_json_items(text: str, item: str) -> str:
    """``text`` up to the end of the last item (an object, or a string) closed inside a list."""
    depth, in_string, escaped, cut = 0, False, False, -1
    stack: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if item == '"' and stack and stack[-1] == "[":
                    cut = i + 1
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            if not stack:
                start = i
            stack.append(ch)
            depth += 1
        elif ch in "}]" and stack:
            stack.pop()
            depth -= 1
            if item == "{" and ch == "}" and stack and stack[-1] == "[":
                cut = i + 1
    if cut < 0:  # no item finished: the empty container
        opened = text[start:].lstrip()[:1]
        return text[:start + 1] if opened in ("{", "[") else ""
    return text[:cut]


# --- JSON format -----------------------------------------------------------------------------------

def load_json_leniently(text: str) -> tuple[Any, str | None]:
    """Parse near-JSON (fences, trailing text, single quotes, missing brackets); returns (value, repair note)."""
    body = strip_wrapping(text)
    start = min([i for i in (body.find("{"), body.find("[")) if i >= 0], default=-1)
    if start < 0:
        return None, "no JSON object or list in the output"
    body = body[start:]
    try:
        value, end = json.JSONDecoder().raw_decode(body)
        return value, None if not body[end:].strip() else "trailing text after the JSON ignored"
    except json.JSONDecodeError:
        pass
    try:
        import json_repair

        value = json_repair.loads(body)
    except Exception as err:  # the repair library can fail in many ways on garbage
        return None, f"unrepairable JSON: {type(err).__name__}"
    if value in ("", None):
        return None, "unrepairable JSON"
    return value, "repaired malformed JSON"


class JsonFormat:
    """``{"entities": [{"text", "type"}], "relations": [...]}``, the shape of ``Schema.json_schema()``."""

    name = "json"

    @staticmethod
    def parts(task: str) -> list[str]:
        return ["entities"] if task == "ner" else ["entities", "relations"]

    def target_object(self, record: Record, task: str) -> dict[str, Any]:
        ents = [{"text": e.text, "type": e.label} for e in _sorted_entities(record)]
        if task == "ner":
            return {"entities": ents}
        if task == "re":
            rels = [{"head": r.head.text, "head_type": r.head.label, "type": r.label, "tail": r.tail.text,
                     "tail_type": r.tail.label} for r in sorted(record.relations, key=lambda r: (r.head.start, r.tail.start, r.label))]
            return {"entities": ents, "relations": rels}
        raise ValueError(f"the JSON format covers tasks ner and re, not {task!r}")

    def linearize(self, record: Record, task: str, event: Event | None = None) -> str:
        return json.dumps(self.target_object(record, task), ensure_ascii=False)

    def parse(self, text: str, record: Record, schema: Schema, task: str, event: Event | None = None) -> ParseResult:
        result = ParseResult()
        value, note = load_json_leniently(text)
        if note:
            result.problems.append(ParseProblem("syntax", note, text[:200]))
        if not isinstance(value, dict):
            if value is not None:
                result.problems.append(ParseProblem("invalid", f"expected a JSON object, got {type(value).__name__}"))
            return result
        for err in schema.validation_errors(value, self.parts(task)):
            result.problems.append(ParseProblem("invalid", err))
        ent_items = [(str(o.get("type", "")), str(o.get("text", ""))) for o in _objects(value.get("entities"))]
        ent_items = self._keep_known(ent_items, schema.entity_labels, result)
        result.entities += [g for g in _grounded(record, ent_items, result) if g is not None]
        if task == "re":
            rels = [o for o in _objects(value.get("relations"))
                    if all(isinstance(o.get(k), str) and o.get(k) for k in ("head", "type", "tail"))]
            known = [o for o in rels if o["type"] in schema.relation_labels]
            for o in rels:
                if o["type"] not in schema.relation_labels:
                    result.problems.append(ParseProblem("unknown_type", f"{o['type']!r} is not in the schema", str(o)))
            resolved = _resolve_pairs(record, [(o["head"], o["tail"]) for o in known],
                                      [*result.entities, *record.entities], result, [o["type"] for o in known])
            for o, (label, head, tail) in zip(known, resolved, strict=True):
                if head is not None and tail is not None:
                    head = head if head.label else Entity(head.start, head.end, str(o.get("head_type", "")), head.text)
                    tail = tail if tail.label else Entity(tail.start, tail.end, str(o.get("tail_type", "")), tail.text)
                    result.relations.append(Relation(head, tail, label))
        return result

    @staticmethod
    def _keep_known(items: list[tuple[str, str]], labels: list[str], result: ParseResult) -> list[tuple[str, str]]:
        kept = []
        for label, span in items:
            if not span.strip():
                result.problems.append(ParseProblem("invalid", "empty entity text", label))
            elif label not in labels:
                result.problems.append(ParseProblem("unknown_type", f"{label!r} is not in the schema", span))
            else:
                kept.append((label, span))
        return kept


def _objects(value: Any) -> list[dict[str, Any]]:
    return [o for o in value if isinstance(o, dict)] if isinstance(value, list) else []


# --- per-type question format ---------------------------------------------------------------------

class QuestionFormat:
    """One question per entity type (UniNER style); the answer is a JSON list of span texts."""

    name = "question"

    def linearize(self, record: Record, task: str, event: Event | None = None, label: str | None = None) -> str:
        if task != "ner":
            raise ValueError(f"the question format covers task ner, not {task!r}")
        if label is None:
            raise ValueError("the question format linearizes one entity type at a time: pass label=")
        return json.dumps([e.text for e in _sorted_entities(record) if e.label == label], ensure_ascii=False)

    def read_items(self, text: str, schema: Schema, label: str | None, result: ParseResult) -> list[tuple[str, str]]:
        """(label, span text) items of one answer; problems recorded in ``result``."""
        if label is None or label not in schema.entity_labels:
            result.problems.append(ParseProblem("unknown_type", f"question asked for unknown type {label!r}"))
            return []
        value, note = load_json_leniently(text)
        if note:
            result.problems.append(ParseProblem("syntax", note, text[:200]))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            if value is not None:
                result.problems.append(ParseProblem("invalid", f"expected a JSON list, got {type(value).__name__}"))
            return []
        spans = [s for s in value if isinstance(s, str) and s.strip()]
        if len(spans) != len(value):
            result.problems.append(ParseProblem("invalid", "list items that are not non-empty strings were skipped"))
        return [(label, s) for s in spans]

    def parse(self, text: str, record: Record, schema: Schema, task: str, event: Event | None = None,
              label: str | None = None) -> ParseResult:
        return self.parse_many([(text, label)], record, schema)

    exact_only = False  # keep only spans found verbatim (the rest become ``not_found`` problems)

    def parse_many(self, answers: Sequence[tuple[str, str | None]], record: Record, schema: Schema) -> ParseResult:
        """All answers of one record, grounded together so types do not claim the same words."""
        result = ParseResult()
        items: list[tuple[str, str]] = []
        groups: list[int] = []
        for i, (text, label) in enumerate(answers):
            got = self.read_items(text, schema, label, result)
            items += got
            groups += [i] * len(got)
        for entity, a in zip(_grounded(record, items, result, groups), result.alignments, strict=True):
            if entity is not None and self.exact_only and a.status.value != "exact":
                result.problems.append(ParseProblem("not_found", f"{a.query!r} is not in the input verbatim", a.query))
            elif entity is not None:
                result.entities.append(entity)
        return result


class MarkersFormat(QuestionFormat):
    """One prompt per entity type (BANER); the answer lists that type's spans between markers.

    ``<<< Paris >>> <<< Rome >>>``; no entity is an empty answer (the model ends at once), so a
    decoder restricted to the input's tokens, the markers and the end token can write every
    answer. Only spans found verbatim in the input are kept (the method's rule); the rest become
    ``not_found`` problems.
    """

    name = "markers"
    exact_only = True
    OPEN, CLOSE = "<<<", ">>>"
    _SPAN = re.compile(r"<<<\s*(.*?)\s*>>>", re.S)

    def linearize(self, record: Record, task: str, event: Event | None = None, label: str | None = None) -> str:
        if task != "ner" or label is None:
            raise ValueError("the markers format linearizes one entity type of task ner at a time: pass label=")
        return " ".join(f"{self.OPEN} {e.text} {self.CLOSE}" for e in _sorted_entities(record) if e.label == label)

    def read_items(self, text: str, schema: Schema, label: str | None, result: ParseResult) -> list[tuple[str, str]]:
        if label is None or label not in schema.entity_labels:
            result.problems.append(ParseProblem("unknown_type", f"prompt asked for unknown type {label!r}"))
            return []
        spans = [s for s in self._SPAN.findall(text) if s.strip()]
        rest = self._SPAN.sub("", text).strip()
        if rest:
            result.problems.append(ParseProblem("syntax", "text outside the markers was ignored", rest[:200]))
        return [(label, s) for s in spans]  # a repeated span is a repeated mention


FORMATS: dict[str, OutputFormat] = {"ruie": RuieFormat(), "json": JsonFormat(), "question": QuestionFormat(),
                                    "markers": MarkersFormat()}


def get_format(name: str) -> OutputFormat:
    from openie.errors import UnknownNameError

    if name not in FORMATS:
        raise UnknownNameError("output format", name, list(FORMATS))
    return FORMATS[name]
