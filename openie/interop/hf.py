"""Hugging Face ``datasets``: records as a ``Dataset`` (or a ``save_to_disk`` folder) and back.

Researchers hold corpora as ``datasets`` objects; this module lets them in and out without loss.
Two layouts:

* ``tokens``: what token-classification code expects, ``tokens`` and ``ner_tags`` whose
  ``ClassLabel`` names are tags such as ``B-person``. It needs tokenized records whose entities
  start and end on token boundaries and do not overlap; any other record is refused with an
  error naming it (tags cannot hold it, and dropping an entity would be silent loss).
* ``spans``: ``text`` and an ``entities`` list of character spans; it holds every record
  (raw text, nested or overlapping entities, scores).

Both layouts carry what tags cannot: ``id``, ``lang``, ``text``, ``meta`` (a JSON string, since
meta differs from record to record), ``relations`` and ``events`` (lists of structs, only when
some record has them). The tokens layout adds ``entity_scores`` (scores of predictions, in text
order) and ``entity_order`` (where the records list entities out of text order) only when needed.
Reading accepts datasets from elsewhere too: a missing ``text`` is the tokens joined by spaces,
a missing ``id`` is numbered, and unknown columns (``pos_tags``...) are kept in ``meta``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openie.errors import DataFormatError
from openie.records import Entity, Event, Record, Relation
from openie.tagging import TagSequenceError, normalize_scheme, spans_to_tags, split_tag, tags_to_spans

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict, Features

LAYOUTS = ("tokens", "spans", "auto")
"""``auto`` writes the tokens layout when every record fits it, else the spans layout."""

_KNOWN_COLUMNS = {"id", "lang", "text", "tokens", "ner_tags", "entities", "entity_scores", "entity_order",
                  "relations", "events", "meta"}
_SCHEME_PREFIXES = {"bio": "BI", "iob1": "BI", "bilou": "BILU", "bioes": "BIES"}


# --- features -----------------------------------------------------------------------------------

def _list(feature: Any) -> Any:
    from datasets import List

    return List(feature)


def _entity_feature() -> dict[str, Any]:
    from datasets import Value

    return {"start": Value("int64"), "end": Value("int64"), "label": Value("string"), "text": Value("string"),
            "score": Value("float64")}


def _features(layout: str, tag_names: Sequence[str], *, relations: bool, events: bool, scores: bool,
              order: bool) -> Features:
    from datasets import ClassLabel, Features, Value

    columns: dict[str, Any] = {"id": Value("string"), "lang": Value("string"), "text": Value("string"),
                               "tokens": _list(Value("string"))}
    if layout == "tokens":
        columns["ner_tags"] = _list(ClassLabel(names=list(tag_names)))
        if scores:
            columns["entity_scores"] = _list(Value("float64"))
        if order:
            columns["entity_order"] = _list(Value("int64"))
    else:
        columns["entities"] = _list(_entity_feature())
    if relations:
        columns["relations"] = _list({"head": _entity_feature(), "tail": _entity_feature(),
                                      "label": Value("string"), "score": Value("float64")})
    if events:
        argument = {"start": Value("int64"), "end": Value("int64"), "role": Value("string"),
                    "text": Value("string"), "score": Value("float64")}
        columns["events"] = _list({"trigger": _entity_feature(), "arguments": _list(argument),
                                   "score": Value("float64")})
    columns["meta"] = Value("string")
    return Features(columns)


def tag_names(labels: Iterable[str], scheme: str = "bio") -> list[str]:
    """``ClassLabel`` names for entity labels: ``O`` then each label's tags (``B-person``, ``I-person``...)."""
    prefixes = _SCHEME_PREFIXES[normalize_scheme(scheme)]
    return ["O"] + [f"{prefix}-{label}" for label in labels for prefix in prefixes]


# --- writing ------------------------------------------------------------------------------------

def _check_record(record: Record) -> None:
    problems = record.check_offsets()
    if problems:
        raise DataFormatError(f"record {record.id!r}: {problems[0]}", field="entities")


def _token_spans(record: Record) -> list[tuple[int, int, str]]:
    """The record's entities as token spans, in the record's order; refuses what tags cannot hold."""
    if record.tokens is None:
        raise DataFormatError(f"record {record.id!r} has no tokens; the HF tokens layout needs them "
                              f"(write layout 'spans', or 'auto')", field="tokens")
    try:
        offsets = record.token_offsets()
    except ValueError:
        raise DataFormatError(f"record {record.id!r}: its tokens do not occur in order in its text",
                              field="tokens") from None
    by_start = {s: i for i, (s, _) in enumerate(offsets)}
    by_end = {e: i for i, (_, e) in enumerate(offsets)}
    spans = []
    for ent in record.entities:
        if ent.start not in by_start or ent.end not in by_end or by_end[ent.end] < by_start[ent.start]:
            raise DataFormatError(f"record {record.id!r}: entity {ent.text!r} [{ent.start}:{ent.end}] does not start "
                                  f"and end on token boundaries, so the HF tokens layout cannot hold it "
                                  f"(write layout 'spans')", field="entities")
        spans.append((by_start[ent.start], by_end[ent.end] + 1, ent.label))
    ordered = sorted(spans)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b[0] < a[1]:
            raise DataFormatError(f"record {record.id!r}: entities {a} and {b} (token spans) overlap; tags cannot "
                                  f"hold nested or duplicate entities (write layout 'spans')", field="entities")
    return spans


def _entity_row(e: Entity) -> dict[str, Any]:
    return {"start": e.start, "end": e.end, "label": e.label, "text": e.text, "score": e.score}


def _relation_row(r: Relation) -> dict[str, Any]:
    return {"head": _entity_row(r.head), "tail": _entity_row(r.tail), "label": r.label, "score": r.score}


def _event_row(ev: Event) -> dict[str, Any]:
    args = [{"start": a.start, "end": a.end, "role": a.role, "text": a.text, "score": a.score} for a in ev.arguments]
    return {"trigger": _entity_row(ev.trigger), "arguments": args, "score": ev.score}


def _fits_tokens(records: Sequence[Record]) -> bool:
    try:
        for record in records:
            _token_spans(record)
    except DataFormatError:
        return False
    return True


def records_to_hf(records: Iterable[Record], *, layout: str = "tokens", labels: Sequence[str] | None = None,
                  scheme: str = "bio") -> Dataset:
    """A ``datasets.Dataset`` of the records (see the module docstring for the two layouts).

    ``labels`` orders the ``ClassLabel`` names (e.g. a corpus's registry labels); labels the
    records use beyond it are appended in sorted order. ``scheme`` is the tag scheme of ``ner_tags``.
    """
    from datasets import Dataset

    if layout not in LAYOUTS:
        raise ValueError(f"unknown HF layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    scheme = normalize_scheme(scheme)
    records = list(records)
    for record in records:
        _check_record(record)
    if layout == "auto":
        layout = "tokens" if _fits_tokens(records) else "spans"
    used = {e.label for r in records for e in r.entities}
    label_order = list(dict.fromkeys(labels or [])) + sorted(used - set(labels or []))
    names = tag_names(label_order, scheme)
    index = {name: i for i, name in enumerate(names)}
    columns: dict[str, list[Any]] = {"id": [], "lang": [], "text": [], "tokens": [], "meta": []}
    tags_col: list[list[int]] = []
    scores_col: list[list[float | None]] = []
    order_col: list[list[int]] = []
    entities_col: list[list[dict[str, Any]]] = []
    for record in records:
        columns["id"].append(record.id)
        columns["lang"].append(record.lang)
        columns["text"].append(record.text)
        columns["tokens"].append(list(record.tokens) if record.tokens is not None else None)
        columns["meta"].append(json.dumps(record.meta, ensure_ascii=False))
        if layout == "tokens":
            spans = _token_spans(record)
            try:
                tags = spans_to_tags(spans, len(record.tokens or []), scheme)
            except ValueError as err:
                raise DataFormatError(f"record {record.id!r}: {err}", field="entities") from None
            tags_col.append([index[t] for t in tags])
            # Tags decode in text order; keep the record's own order and scores beside them.
            rank = sorted(range(len(spans)), key=lambda i: spans[i][:2])
            scores_col.append([record.entities[i].score for i in rank])
            position = {i: p for p, i in enumerate(rank)}
            order_col.append([position[i] for i in range(len(spans))])
        else:
            entities_col.append([_entity_row(e) for e in record.entities])
    has_relations = any(r.relations for r in records)
    has_events = any(r.events for r in records)
    has_scores = any(s is not None for row in scores_col for s in row)
    out_of_order = any(row != sorted(row) for row in order_col)
    if layout == "tokens":
        columns["ner_tags"] = tags_col
        if has_scores:
            columns["entity_scores"] = scores_col
        if out_of_order:
            columns["entity_order"] = order_col
    else:
        columns["entities"] = entities_col
    if has_relations:
        columns["relations"] = [[_relation_row(x) for x in r.relations] for r in records]
    if has_events:
        columns["events"] = [[_event_row(x) for x in r.events] for r in records]
    features = _features(layout, names, relations=has_relations, events=has_events, scores=has_scores,
                         order=out_of_order)
    return Dataset.from_dict({name: columns[name] for name in features}, features=features)


def save_hf(records: Iterable[Record], path: str | os.PathLike, *, layout: str = "tokens",
            labels: Sequence[str] | None = None, scheme: str = "bio", progress: bool = True) -> int:
    """Write the records as a ``save_to_disk`` folder (``datasets.load_from_disk`` opens it); returns the count."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    dataset = records_to_hf(records, layout=layout, labels=labels, scheme=scheme)
    shown = not are_progress_bars_disabled()
    if not progress and shown:
        disable_progress_bars()
    try:
        dataset.save_to_disk(os.fspath(path))
    finally:
        if not progress and shown:
            enable_progress_bars()
    return len(dataset)


# --- reading ------------------------------------------------------------------------------------

def _scheme_of(names: Iterable[str]) -> str:
    prefixes = {name[0] for name in names if len(name) > 1 and name[1] == "-"}
    if prefixes & {"L", "U"}:
        return "bilou"
    if prefixes & {"E", "S"}:
        return "bioes"
    return "bio"  # lenient BIO and IOB1 decode alike


def _entity(d: dict[str, Any], text: str) -> Entity:
    start, end = int(d["start"]), int(d["end"])
    label = d.get("label", d.get("type"))
    return Entity(start, end, str(label), str(d["text"]) if d.get("text") is not None else text[start:end],
                  d.get("score"))


def _tags_of(row: dict[str, Any], names: Sequence[str] | None, column: str, where: str, source: str) -> list[str]:
    tags = []
    for value in row[column]:
        if isinstance(value, str):
            tags.append(value)
        elif names is not None and isinstance(value, int) and 0 <= value < len(names):
            tags.append(names[value])
        else:
            raise DataFormatError(f"{where}: tag {value!r} is not a tag name and has no ClassLabel name "
                                  f"(pass label_names=)", source, field=column)
    return tags


def records_from_hf(dataset: Dataset, *, scheme: str = "auto", lang: str = "en", id_prefix: str = "hf",
                    label_names: Sequence[str] | None = None, tokens_column: str = "tokens",
                    tags_column: str = "ner_tags", source: str | None = None) -> list[Record]:
    """Records from a ``Dataset`` in either layout (``entities`` column: spans, else ``tokens`` + tags).

    Tag ids are named by the column's ``ClassLabel`` (or ``label_names``); ``scheme="auto"`` reads
    the scheme from those names. Errors name ``source`` (the folder), the row and the column.
    """
    columns = set(dataset.column_names)
    source = source or "<Dataset>"
    spans_layout = "entities" in columns
    if not spans_layout and not {tokens_column, tags_column} <= columns:
        raise DataFormatError(f"neither an 'entities' column (spans layout) nor {tokens_column!r} and "
                              f"{tags_column!r} columns (tokens layout); columns: {', '.join(sorted(columns))}",
                              source)
    names: Sequence[str] | None = label_names
    if not spans_layout and names is None:
        feature = getattr(dataset.features[tags_column], "feature", None)
        names = getattr(feature, "names", None)
    if not spans_layout:
        scheme = normalize_scheme(scheme, allow_auto=True)
        if scheme == "auto":
            scheme = _scheme_of(names) if names is not None else "auto"
    known = _KNOWN_COLUMNS | {tokens_column, tags_column}
    records = []
    for i, row in enumerate(dataset):
        where = f"row {i}"
        record_id = str(row["id"]) if row.get("id") is not None else f"{id_prefix}-{i}"
        where += f" (id {record_id!r})"
        tokens = row.get(tokens_column)
        tokens = [str(t) for t in tokens] if tokens is not None else None
        text = row.get("text")
        if text is None:
            if tokens is None:
                raise DataFormatError(f"{where}: no 'text' and no tokens", source, field="text")
            text = " ".join(tokens)
        meta_value = row.get("meta")
        try:
            meta = json.loads(meta_value) if isinstance(meta_value, str) else dict(meta_value or {})
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise DataFormatError(f"{where}: meta is not a JSON object ({err})", source, field="meta") from None
        meta.update({k: v for k, v in row.items() if k not in known})
        record = Record(id=record_id, text=text, lang=str(row.get("lang") or lang), tokens=tokens, meta=meta)
        try:
            if spans_layout:
                record.entities = [_entity(e, text) for e in row["entities"] or []]
            else:
                record.entities = _entities_from_tags(record, _tags_of(row, names, tags_column, where, source),
                                                      scheme, row.get("entity_scores"), row.get("entity_order"))
            record.relations = [Relation(_entity(r["head"], text), _entity(r["tail"], text), str(r["label"]),
                                         r.get("score")) for r in row.get("relations") or []]
            record.events = [Event.from_dict(e) for e in row.get("events") or []]
        except TagSequenceError as err:
            raise DataFormatError(f"{where}: {err}", source, field=tags_column) from None
        except DataFormatError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise DataFormatError(f"{where}: bad annotation ({err})", source) from None
        problems = record.check_offsets()
        if problems:
            raise DataFormatError(f"{where}: {problems[0]}", source, field="entities")
        records.append(record)
    return records


def _entities_from_tags(record: Record, tags: list[str], scheme: str, scores: list | None,
                        order: list | None) -> list[Entity]:
    if len(tags) != len(record.tokens or []):
        raise ValueError(f"{len(tags)} tags for {len(record.tokens or [])} tokens")
    for i, tag in enumerate(tags):
        split_tag(tag, i)  # a malformed tag name fails here with its token index
    offsets = record.token_offsets()
    spans = tags_to_spans(tags, scheme)
    scores = list(scores) if scores is not None else [None] * len(spans)
    if len(scores) != len(spans):
        raise ValueError(f"{len(scores)} entity_scores for {len(spans)} entities")
    entities = [Entity(offsets[s][0], offsets[e - 1][1], label, record.text[offsets[s][0]:offsets[e - 1][1]], score)
                for (s, e, label), score in zip(spans, scores, strict=True)]
    if order:
        if sorted(order) != list(range(len(entities))):
            raise ValueError(f"entity_order {order} is not a permutation of the {len(entities)} entities")
        entities = [entities[p] for p in order]
    return entities


def load_hf(path: str | os.PathLike | Dataset | DatasetDict, *, split: str | None = None,
            **kwargs: Any) -> list[Record]:
    """Records of a ``save_to_disk`` folder (or an in-memory ``Dataset`` / ``DatasetDict``).

    A ``DatasetDict`` needs ``split`` unless it has only one; other keywords go to :func:`records_from_hf`.
    """
    from datasets import Dataset, DatasetDict, load_from_disk

    source = None
    data = path
    if not isinstance(path, Dataset | DatasetDict):
        source = os.fspath(path)
        if not Path(source).is_dir():
            raise FileNotFoundError(f"{source} is not a folder written by datasets' save_to_disk")
        try:
            data = load_from_disk(source)
        except FileNotFoundError as err:
            raise DataFormatError(f"not a datasets save_to_disk folder ({err})", source) from None
    if isinstance(data, DatasetDict):
        splits = list(data)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in data:
            raise DataFormatError(f"a DatasetDict with splits {', '.join(splits)}: "
                                  f"{'name one' if split is None else f'no split {split!r}'} (split=)", source)
        data = data[split]
        source = f"{source or '<DatasetDict>'}[{split}]"
    elif split is not None:
        raise DataFormatError(f"a single Dataset has no split {split!r}", source)
    return records_from_hf(data, source=source, **kwargs)
