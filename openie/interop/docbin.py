"""spaCy ``DocBin`` (``.spacy``): gold corpora and openie predictions as spaCy docs, and back.

So that spaCy's tools work on openie data: ``spacy train`` reads the gold files, displaCy draws
predictions, ``spacy.scorer.Scorer`` scores them. How a record becomes a ``Doc``:

* Words are the record's tokens (or, for raw text, spaCy's blank tokenizer for its language),
  split further wherever an entity starts or ends inside one, so every entity is a span.
  ``doc.text == record.text`` always (extra whitespace becomes whitespace tokens).
* Every entity is a span of the span group ``doc.spans["openie"]`` in record order (overlaps and
  duplicates allowed); their scores are the group's ``attrs["scores"]`` (spaCy's spancat
  convention). ``doc.ents`` holds the same entities when they do not overlap, for displaCy's
  ``ent`` style and the ``ents`` scorer; overlapping ones draw with ``style="span"``.
* ``doc.user_data["openie"]`` holds the rest: ``id``, ``lang``, ``meta``, ``relations`` and
  ``events`` (as ``Record.to_dict`` writes them; spaCy has no relation type of its own), and
  ``tokens``: ``True`` when the doc's words are the record's tokens, the token list itself when
  they differ, absent when the record had none.

Docs from elsewhere read too: entities from ``doc.ents`` when there is no ``openie`` span group,
tokens from the non-whitespace words, ids numbered.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from openie.errors import DataFormatError
from openie.records import Entity, Event, Record, Relation

if TYPE_CHECKING:
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

SPANS_KEY = "openie"
USER_DATA_KEY = "openie"


def _tokenizer(lang: str, cache: dict[str, Any]) -> Any:
    if lang not in cache:
        import spacy

        try:
            cache[lang] = spacy.blank(lang).tokenizer
        except (ImportError, ValueError, KeyError):
            cache[lang] = spacy.blank("xx").tokenizer  # a language spaCy does not know: its multi-language rules
    return cache[lang]


def _words(record: Record, token_spans: list[tuple[int, int]]) -> tuple[list[str], list[bool]]:
    """Words and trailing spaces that rebuild ``record.text`` exactly, with a word boundary at every entity edge."""
    text = record.text
    starts = {e.start for e in record.entities}
    ends = {e.end for e in record.entities}
    cuts = sorted(starts | ends)
    pieces: list[tuple[int, int, bool]] = []  # (start, end, is_gap)
    pos = 0
    for s, e in token_spans + [(len(text), len(text))]:
        if s > pos:
            pieces.append((pos, s, True))
        if e > s:
            pieces.append((s, e, False))
        pos = max(pos, e)
    words: list[str] = []
    spaces: list[bool] = []
    for s, e, is_gap in pieces:
        if is_gap and words and not spaces[-1] and text[s] == " " and s not in starts and s + 1 not in ends:
            spaces[-1] = True  # a single space after a word is that word's whitespace, as spaCy keeps it
            s += 1
            if s == e:
                continue
        inner = [c for c in cuts if s < c < e]
        for a, b in zip([s] + inner, inner + [e], strict=True):
            words.append(text[a:b])
            spaces.append(False)
    return words, spaces


def _token_spans(record: Record, tokenizers: dict[str, Any]) -> list[tuple[int, int]]:
    if record.tokens is not None:
        try:
            return record.token_offsets()
        except ValueError:
            raise DataFormatError(f"record {record.id!r}: its tokens do not occur in order in its text",
                                  field="tokens") from None
    doc = _tokenizer(record.lang, tokenizers)(record.text)
    return [(t.idx, t.idx + len(t.text)) for t in doc if t.text.strip()]


def _plain(value: Any) -> Any:
    """msgpack gives lists back as tuples: JSON-like values again, as ``Record`` holds them."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def records_to_docs(records: Iterable[Record], *, vocab: Vocab | None = None,
                    spans_key: str = SPANS_KEY) -> list[Doc]:
    """One spaCy ``Doc`` per record (see the module docstring); refuses entities no span can hold."""
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    vocab = vocab if vocab is not None else Vocab()
    tokenizers: dict[str, Any] = {}
    docs = []
    for record in records:
        problems = record.check_offsets()
        if problems:
            raise DataFormatError(f"record {record.id!r}: {problems[0]}", field="entities")
        for ent in record.entities:
            if ent.start == ent.end or not ent.text.strip():
                raise DataFormatError(f"record {record.id!r}: entity {ent.text!r} [{ent.start}:{ent.end}] is empty "
                                      f"or only whitespace; a spaCy span cannot hold it", field="entities")
        words, spaces = _words(record, _token_spans(record, tokenizers))
        doc = Doc(vocab, words=words, spaces=spaces)
        if doc.text != record.text:  # a guard on _words: never write a doc whose offsets differ
            raise DataFormatError(f"record {record.id!r}: its text cannot be rebuilt from spaCy words", field="text")
        spans = []
        for ent in record.entities:
            span = doc.char_span(ent.start, ent.end, label=ent.label)
            if span is None:
                raise DataFormatError(f"record {record.id!r}: entity {ent.text!r} [{ent.start}:{ent.end}] has "
                                      f"whitespace at an edge; a spaCy span cannot hold it", field="entities")
            spans.append(span)
        doc.spans[spans_key] = spans
        if any(e.score is not None for e in record.entities):
            doc.spans[spans_key].attrs["scores"] = [e.score for e in record.entities]
        try:
            doc.ents = spans
        except ValueError:
            pass  # overlapping or duplicate entities: the span group holds them
        payload: dict[str, Any] = {"id": record.id, "lang": record.lang}
        if record.tokens is not None:
            payload["tokens"] = True if words == record.tokens else list(record.tokens)
        if record.meta:
            payload["meta"] = record.meta
        if record.relations:
            payload["relations"] = [r.to_dict() for r in record.relations]
        if record.events:
            payload["events"] = [e.to_dict() for e in record.events]
        doc.user_data[USER_DATA_KEY] = payload
        docs.append(doc)
    return docs


def records_from_docs(docs: Iterable[Doc], *, spans_key: str = SPANS_KEY, lang: str = "en",
                      id_prefix: str = "doc", source: str | None = None) -> list[Record]:
    """Records from spaCy docs: those :func:`records_to_docs` wrote, or any (entities from ``doc.ents``)."""
    records = []
    for i, doc in enumerate(docs):
        payload = _plain(doc.user_data.get(USER_DATA_KEY) or {})
        record_id = str(payload.get("id", f"{id_prefix}-{i}"))
        where = f"doc {i} (id {record_id!r})"
        if spans_key in doc.spans:
            group = doc.spans[spans_key]
            scores = list(group.attrs.get("scores") or [None] * len(group))
            if len(scores) != len(group):
                raise DataFormatError(f"{where}: {len(scores)} scores for {len(group)} spans", source,
                                      field=f"spans[{spans_key!r}].attrs['scores']")
            spans = list(group)
        else:
            spans, scores = list(doc.ents), [None] * len(doc.ents)
        entities = [Entity(s.start_char, s.end_char, s.label_, s.text, float(sc) if sc is not None else None)
                    for s, sc in zip(spans, scores, strict=True)]
        tokens = payload.get("tokens")
        if tokens is True:
            tokens = [t.text for t in doc]
        elif tokens is None and USER_DATA_KEY not in doc.user_data:
            tokens = [t.text for t in doc if t.text.strip()]
        try:
            relations = [Relation.from_dict(r) for r in payload.get("relations", [])]
            events = [Event.from_dict(e) for e in payload.get("events", [])]
        except (KeyError, TypeError, ValueError) as err:
            raise DataFormatError(f"{where}: bad relation or event in user_data ({err})", source,
                                  field=f"user_data[{USER_DATA_KEY!r}]") from None
        record = Record(id=record_id, text=doc.text, lang=str(payload.get("lang", lang)), entities=entities,
                        relations=relations, events=events, tokens=tokens, meta=payload.get("meta", {}))
        problems = record.check_offsets()
        if problems:
            raise DataFormatError(f"{where}: {problems[0]}", source, field=f"user_data[{USER_DATA_KEY!r}]")
        records.append(record)
    return records


def write_docbin(records: Iterable[Record], path: str | os.PathLike, *, spans_key: str = SPANS_KEY) -> int:
    """Write the records as a ``.spacy`` file (user data kept); returns how many docs it holds."""
    from spacy.tokens import DocBin

    docbin = DocBin(store_user_data=True)
    for doc in records_to_docs(records, spans_key=spans_key):
        docbin.add(doc)
    docbin.to_disk(os.fspath(path))
    return len(docbin)


def read_docbin(path: str | os.PathLike, *, spans_key: str = SPANS_KEY, lang: str = "en",
                id_prefix: str | None = None) -> list[Record]:
    """Records of a ``.spacy`` file; docs without openie user data are numbered ``{id_prefix}-{n}``."""
    from pathlib import Path

    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    source = os.fspath(path)
    if not Path(source).is_file():
        raise FileNotFoundError(f"{source} does not exist")
    try:
        docbin = DocBin().from_disk(source)
    except (ValueError, KeyError, TypeError) as err:
        raise DataFormatError(f"not a spaCy DocBin file ({type(err).__name__}: {err})", source) from None
    return records_from_docs(docbin.get_docs(Vocab()), spans_key=spans_key, lang=lang,
                             id_prefix=id_prefix or Path(source).stem, source=source)
