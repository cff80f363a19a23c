"""Scores for extraction output, computed on ``Record`` annotations (character offsets).

Gold and predicted records share one type, so every metric here compares sets of hashable
keys built from the annotations of records paired by ``id``:

* Counting follows seqeval: per record, gold and predicted keys are **sets** (a prediction
  repeated twice counts once), ``tp = |gold & pred|``, ``fp = |pred - gold|``,
  ``fn = |gold - pred|`` summed over records, and a ratio whose denominator is zero is 0
  (seqeval's ``zero_division=0``). Strict NER scores agree with ``seqeval`` (``mode='strict'``,
  ``scheme=IOB2``) to floating-point rounding; ``tests/test_metrics.py`` checks this on
  CoNLL-2003 dev.
* Macro averages are plain means over the types that occur in the gold **or** the
  predictions (what seqeval does): a type the model invents but never appears in the gold
  pulls the macro average down with F1 = 0, and a gold type the model never predicts does too.

This module stays on the core floor: no model library, and pandas only inside
``to_dataframe()``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openie.errors import OpenIEError, UnknownNameError
from openie.records import Entity, Record

__all__ = [
    "PRF", "SpanScores", "EventScores", "EvaluationReport", "RecordMismatchError",
    "ENTITY_MODES", "RELATION_MODES", "EVENT_MEASURES", "TASKS",
    "pair_records", "partial_matches",
    "entity_scores", "relation_scores", "event_scores", "evaluate",
    "r_precision", "macro_r_precision",
]

ENTITY_MODES = ("strict", "boundary", "partial")
RELATION_MODES = ("strict", "boundary")
TASKS = ("ner", "re", "ee")


class RecordMismatchError(OpenIEError, ValueError):
    """Gold and predicted records cannot be paired: ids missing on one side, duplicated, or texts differ."""


# ---------------------------------------------------------------------------------------------
# precision / recall / F1
# ---------------------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


@dataclass(frozen=True)
class PRF:
    """Counts and the ratios derived from them; F1 is 0 where precision + recall is 0."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> PRF:
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        # 2PR / (P + R) rather than 2tp / (2tp + fp + fn): the same number, computed the way
        # seqeval computes it, so the two agree to the last bit rather than to rounding.
        f1 = _ratio(2 * precision * recall, precision + recall)
        return cls(tp, fp, fn, precision, recall, f1)

    @property
    def support(self) -> int:
        """Number of gold items (seqeval's ``support``)."""
        return self.tp + self.fn

    @property
    def predicted(self) -> int:
        return self.tp + self.fp

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "support": self.support}


def _fmt_table(title: str, rows: list[tuple[str, float, float, float, int]]) -> str:
    width = max([len("type"), *(len(r[0]) for r in rows)])
    lines = [title, f"{'type':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}"]
    for name, p, r, f, s in rows:
        if name == "micro avg":
            lines.append("-" * len(lines[1]))
        lines.append(f"{name:<{width}}  {p:>9.4f}  {r:>9.4f}  {f:>9.4f}  {s:>8d}")
    return "\n".join(lines)


@dataclass(frozen=True)
class SpanScores:
    """Micro and macro scores of one matching criterion, with the per-type breakdown.

    ``per_type`` is empty (and the macro figures ``None``) for criteria that ignore the type,
    such as ``boundary`` entity matching or trigger identification: a per-type table of
    type-blind matches would not mean anything.
    """

    task: str
    mode: str
    micro: PRF
    per_type: dict[str, PRF] = field(default_factory=dict)

    @property
    def macro_precision(self) -> float | None:
        return sum(p.precision for p in self.per_type.values()) / len(self.per_type) if self.per_type else None

    @property
    def macro_recall(self) -> float | None:
        return sum(p.recall for p in self.per_type.values()) / len(self.per_type) if self.per_type else None

    @property
    def macro_f1(self) -> float | None:
        """Mean F1 over the types present in gold or predictions (seqeval's choice)."""
        return sum(p.f1 for p in self.per_type.values()) / len(self.per_type) if self.per_type else None

    # convenience: the headline numbers are the micro ones
    @property
    def precision(self) -> float:
        return self.micro.precision

    @property
    def recall(self) -> float:
        return self.micro.recall

    @property
    def f1(self) -> float:
        return self.micro.f1

    @property
    def name(self) -> str:
        return f"{self.task} ({self.mode})"

    def _rows(self) -> list[tuple[str, float, float, float, int]]:
        rows = [(t, p.precision, p.recall, p.f1, p.support) for t, p in self.per_type.items()]
        m = self.micro
        rows.append(("micro avg", m.precision, m.recall, m.f1, m.support))
        if self.per_type:
            rows.append(("macro avg", self.macro_precision, self.macro_recall, self.macro_f1, m.support))
        return rows  # type: ignore[return-value]

    def __str__(self) -> str:
        return _fmt_table(self.name, self._rows())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        d: dict[str, Any] = {"task": self.task, "mode": self.mode, "micro": self.micro.to_dict()}
        if self.per_type:
            d["macro"] = {"precision": self.macro_precision, "recall": self.macro_recall, "f1": self.macro_f1}
            d["per_type"] = {t: p.to_dict() for t, p in self.per_type.items()}
        return d

    def to_dataframe(self) -> Any:
        """One row per type plus ``micro avg`` (and ``macro avg``); needs pandas."""
        import pandas as pd

        rows = []
        for t, p in self.per_type.items():
            rows.append({"type": t, **p.to_dict()})
        rows.append({"type": "micro avg", **self.micro.to_dict()})
        if self.per_type:
            rows.append({"type": "macro avg", "tp": None, "fp": None, "fn": None,
                         "precision": self.macro_precision, "recall": self.macro_recall,
                         "f1": self.macro_f1, "support": self.micro.support})
        df = pd.DataFrame(rows, columns=["type", "precision", "recall", "f1", "support", "tp", "fp", "fn"])
        df = df.astype({"support": "int64", "tp": "Int64", "fp": "Int64", "fn": "Int64"})  # counts stay integers
        return df.set_index("type")


# ---------------------------------------------------------------------------------------------
# pairing and counting
# ---------------------------------------------------------------------------------------------


def _show_ids(ids: Iterable[str], limit: int = 10) -> str:
    ids = sorted(ids)
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" … ({len(ids)} in all)" if len(ids) > limit else "")


def pair_records(gold: Sequence[Record], pred: Sequence[Record]) -> list[tuple[Record, Record]]:
    """Gold and predicted records matched by ``id``, in gold order.

    Offsets only mean the same thing on the same text, so the sets of ids must be equal and
    the paired texts identical; otherwise a ``RecordMismatchError`` names the offending ids.
    """
    def index(records: Sequence[Record], side: str) -> dict[str, Record]:
        out: dict[str, Record] = {}
        dups = set()
        for r in records:
            if r.id in out:
                dups.add(r.id)
            out[r.id] = r
        if dups:
            raise RecordMismatchError(f"duplicate {side} record id(s): {_show_ids(dups)}")
        return out

    g, p = index(gold, "gold"), index(pred, "predicted")
    missing, extra = set(g) - set(p), set(p) - set(g)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no prediction for gold id(s) {_show_ids(missing)}")
        if extra:
            parts.append(f"predictions for id(s) not in the gold {_show_ids(extra)}")
        raise RecordMismatchError("gold and predicted records differ: " + "; ".join(parts))
    differ = [i for i in g if g[i].text != p[i].text]
    if differ:
        raise RecordMismatchError(f"gold and predicted text differ for id(s) {_show_ids(differ)}")
    return [(g[i], p[i]) for i in g]


_TypeOf = Callable[[Hashable], str] | None


def _count(pairs: Iterable[tuple[set[Hashable], set[Hashable]]], type_of: _TypeOf) -> tuple[PRF, dict[str, PRF]]:
    """Micro and per-type PRF from per-record (gold keys, predicted keys) sets."""
    tp = fp = fn = 0
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for gold, pred in pairs:
        hit = gold & pred
        tp += len(hit)
        fp += len(pred) - len(hit)
        fn += len(gold) - len(hit)
        if type_of is not None:
            for k in hit:
                per[type_of(k)][0] += 1
            for k in pred - hit:
                per[type_of(k)][1] += 1
            for k in gold - hit:
                per[type_of(k)][2] += 1
    per_type = {t: PRF.from_counts(*per[t]) for t in sorted(per)}
    return PRF.from_counts(tp, fp, fn), per_type


def _scores(task: str, mode: str, pairs: Iterable[tuple[set[Hashable], set[Hashable]]],
            type_of: _TypeOf) -> SpanScores:
    micro, per_type = _count(pairs, type_of)
    return SpanScores(task, mode, micro, per_type)


# ---------------------------------------------------------------------------------------------
# entities
# ---------------------------------------------------------------------------------------------


_Span = tuple[int, int, str]  # (start, end, label)


def _key(e: Entity) -> _Span:
    return (e.start, e.end, e.label)


def _overlap(a: _Span, b: _Span) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def partial_matches(gold: Iterable[_Span], pred: Iterable[_Span]) -> dict[_Span, _Span]:
    """One-to-one pairs (pred -> gold) of same-label spans that overlap, for ``partial`` scoring.

    Greedy: candidate pairs are taken by decreasing overlap (in characters), ties broken by
    gold then predicted position, and a pair is kept when neither side is matched yet. Greedy
    is not always a maximum matching, but it is deterministic and cheap, and it prefers the
    reading a person would give: the prediction covering most of a gold span is the one that
    found it. Empty spans overlap nothing.
    """
    gold, pred = set(gold), set(pred)
    cands = sorted(((_overlap(g, p), g, p) for g in gold for p in pred if g[2] == p[2] and _overlap(g, p) > 0),
                   key=lambda c: (-c[0], c[1], c[2]))
    matched: dict[_Span, _Span] = {}
    used_gold: set[_Span] = set()
    for _, g, p in cands:
        if p not in matched and g not in used_gold:
            matched[p] = g
            used_gold.add(g)
    return matched


def _partial_sets(gold: set[_Span], pred: set[_Span]) -> tuple[set[Hashable], set[Hashable]]:
    # A matched prediction takes its gold partner's key, so the common set counter sees a hit;
    # the side tags keep unmatched keys from colliding by accident.
    matched = partial_matches(gold, pred)
    return ({("g", g) for g in gold},
            {("g", matched[p]) if p in matched else ("p", p) for p in pred})


def entity_scores(gold: Sequence[Record], pred: Sequence[Record], mode: str = "strict") -> SpanScores:
    """Entity (NER) precision, recall and F1 over records paired by id.

    Modes:

    * ``strict``: a prediction is correct when start, end and label equal those of a gold
      entity (CoNLL / seqeval strict). Per-type table by label.
    * ``boundary``: start and end must match, the label is ignored (how well spans are found);
      micro only. Two gold entities with different labels on one span count as one span.
    * ``partial``: a prediction is correct when it overlaps a gold entity of the same label;
      each gold and each prediction takes part in at most one match (greedy by overlap length,
      see ``partial_matches``). Per-type table by label.
    """
    if mode not in ENTITY_MODES:
        raise UnknownNameError("entity scoring mode", mode, list(ENTITY_MODES))
    paired = pair_records(gold, pred)
    if mode == "boundary":
        spans = (({e.span for e in g.entities}, {e.span for e in p.entities}) for g, p in paired)
        return _scores("ner", mode, spans, None)
    keys = [({_key(e) for e in g.entities}, {_key(e) for e in p.entities}) for g, p in paired]
    if mode == "strict":
        return _scores("ner", mode, keys, lambda k: k[2])
    return _scores("ner", mode, (_partial_sets(g, p) for g, p in keys), lambda k: k[1][2])


# ---------------------------------------------------------------------------------------------
# relations
# ---------------------------------------------------------------------------------------------


def relation_scores(gold: Sequence[Record], pred: Sequence[Record], mode: str = "strict") -> SpanScores:
    """Relation extraction precision, recall and F1 over records paired by id (per-type by relation label).

    * ``strict``: head span and type, tail span and type, and the relation label all match
      (the "strict" criterion of SpERT / Taillé et al. 2020).
    * ``boundary``: head and tail spans and the relation label match; entity types are ignored
      (the "boundaries" criterion).

    Direction matters in both: (a, r, b) does not match (b, r, a).
    """
    if mode not in RELATION_MODES:
        raise UnknownNameError("relation scoring mode", mode, list(RELATION_MODES))
    paired = pair_records(gold, pred)
    if mode == "strict":
        def key(r: Any) -> tuple:
            return (r.head.start, r.head.end, r.head.label, r.tail.start, r.tail.end, r.tail.label, r.label)
    else:
        def key(r: Any) -> tuple:
            return (r.head.start, r.head.end, r.tail.start, r.tail.end, r.label)
    sets = (({key(r) for r in g.relations}, {key(r) for r in p.relations}) for g, p in paired)
    return _scores("re", mode, sets, lambda k: k[-1])


# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------

EVENT_MEASURES = ("trigger_identification", "trigger_classification",
                  "argument_identification", "argument_classification")


@dataclass(frozen=True)
class EventScores:
    """The four ACE-style event measures (Li et al. 2013, as used by DyGIE++, OneIE, Text2Event).

    * trigger identification: the trigger span matches a gold trigger span (micro only);
    * trigger classification: span and event type match (per event type);
    * argument identification: the argument span and the event type of its event match a
      gold argument (per event type);
    * argument classification: span, event type and role match (per role).

    The trigger of an argument's event need not be matched itself; two events of one type that
    share an argument span contribute one argument key (set semantics, as everywhere here).
    """

    trigger_identification: SpanScores
    trigger_classification: SpanScores
    argument_identification: SpanScores
    argument_classification: SpanScores

    def items(self) -> list[tuple[str, SpanScores]]:
        return [(m, getattr(self, m)) for m in EVENT_MEASURES]

    def __str__(self) -> str:
        return "\n\n".join(str(s) for _, s in self.items())

    def to_dict(self) -> dict[str, Any]:
        return {m: s.to_dict() for m, s in self.items()}


def event_scores(gold: Sequence[Record], pred: Sequence[Record]) -> EventScores:
    """Trigger and argument identification / classification over records paired by id."""
    paired = pair_records(gold, pred)

    def trig_i(r: Record) -> set[Hashable]:
        return {ev.trigger.span for ev in r.events}

    def trig_c(r: Record) -> set[Hashable]:
        return {(ev.trigger.start, ev.trigger.end, ev.type) for ev in r.events}

    def arg_i(r: Record) -> set[Hashable]:
        return {(a.start, a.end, ev.type) for ev in r.events for a in ev.arguments}

    def arg_c(r: Record) -> set[Hashable]:
        return {(a.start, a.end, ev.type, a.role) for ev in r.events for a in ev.arguments}

    def run(measure: str, keys: Callable[[Record], set[Hashable]], type_of: _TypeOf) -> SpanScores:
        return _scores("ee", measure, ((keys(g), keys(p)) for g, p in paired), type_of)

    return EventScores(
        run("trigger_identification", trig_i, None),
        run("trigger_classification", trig_c, lambda k: k[2]),
        run("argument_identification", arg_i, lambda k: k[2]),
        run("argument_classification", arg_c, lambda k: k[3]),
    )


# ---------------------------------------------------------------------------------------------
# retrieval: R-precision
# ---------------------------------------------------------------------------------------------


def r_precision(ranked_ids: Sequence[str], relevant_ids: set[str] | frozenset[str]) -> float:
    """Precision of the top R of a ranking, where R is the number of relevant items.

    R-precision needs no cut-off chosen by hand, which is why entity retrieval work (e.g. NER
    Retriever) reports it per type. A ranking shorter than R counts the missing places as
    misses; an id repeated in the ranking counts at its first place only. An empty relevant set
    leaves the measure undefined and raises ``ValueError``.
    """
    relevant = set(relevant_ids)
    if not relevant:
        raise ValueError("R-precision is undefined for an empty set of relevant ids")
    seen: set[str] = set()
    top: list[str] = []
    for i in ranked_ids:
        if i not in seen:
            seen.add(i)
            top.append(i)
            if len(top) == len(relevant):
                break
    return sum(1 for i in top if i in relevant) / len(relevant)


def macro_r_precision(by_type: Mapping[str, tuple[Sequence[str], set[str] | frozenset[str]]]) -> float:
    """Mean R-precision over types, each given as ``type -> (ranked ids, relevant ids)``."""
    if not by_type:
        raise ValueError("macro R-precision of no types is undefined")
    total = 0.0
    for t, (ranked, relevant) in by_type.items():
        if not relevant:
            raise ValueError(f"type {t!r} has no relevant ids: R-precision is undefined")
        total += r_precision(ranked, relevant)
    return total / len(by_type)


# ---------------------------------------------------------------------------------------------
# one call for everything that is annotated
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationReport:
    """Every score ``evaluate`` computed, keyed ``task.mode`` (e.g. ``ner.strict``, ``ee.trigger_classification``)."""

    scores: dict[str, SpanScores]
    n_records: int
    skipped: tuple[str, ...] = ()  # requested tasks whose gold carries no annotation

    def __getitem__(self, name: str) -> SpanScores:
        try:
            return self.scores[name]
        except KeyError:
            raise UnknownNameError("score", name, list(self.scores)) from None

    def __contains__(self, name: object) -> bool:
        return name in self.scores

    def summary(self) -> dict[str, float]:
        """Micro F1 of every score: the one number per line a results table wants."""
        return {name: s.f1 for name, s in self.scores.items()}

    def __str__(self) -> str:
        width = max([len("score"), *(len(n) for n in self.scores)])
        head = f"{'score':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'macro f1':>9}  {'support':>8}"
        lines = [f"evaluation of {self.n_records} records", head]
        for name, s in self.scores.items():
            macro = f"{s.macro_f1:>9.4f}" if s.macro_f1 is not None else f"{'-':>9}"
            lines.append(f"{name:<{width}}  {s.precision:>9.4f}  {s.recall:>9.4f}  {s.f1:>9.4f}  {macro}  "
                         f"{s.micro.support:>8d}")
        if self.skipped:
            lines.append(f"skipped (no gold annotation): {', '.join(self.skipped)}")
        details = [str(s) for s in self.scores.values() if s.per_type]
        return "\n\n".join(["\n".join(lines), *details])

    def to_dict(self) -> dict[str, Any]:
        return {"n_records": self.n_records, "skipped": list(self.skipped),
                "scores": {n: s.to_dict() for n, s in self.scores.items()}}

    def to_dataframe(self) -> Any:
        """Long table: one row per (score, type), the averages included; needs pandas."""
        import pandas as pd

        frames = [s.to_dataframe().reset_index().assign(score=name) for name, s in self.scores.items()]
        if not frames:
            return pd.DataFrame(columns=["score", "type", "precision", "recall", "f1", "support", "tp", "fp", "fn"])
        return pd.concat(frames, ignore_index=True).set_index(["score", "type"])


def evaluate(gold: Sequence[Record], pred: Sequence[Record], tasks: Sequence[str] = TASKS,
             entity_modes: Sequence[str] = ENTITY_MODES,
             relation_modes: Sequence[str] = RELATION_MODES) -> EvaluationReport:
    """Score every requested task the gold is annotated for.

    ``tasks`` draws from ``ner`` (entities, every mode in ``entity_modes``), ``re`` (relations,
    every mode in ``relation_modes``) and ``ee`` (the four event measures). A task is scored
    when at least one gold record carries an annotation of its kind; otherwise it is listed in
    ``skipped`` (a corpus without relations says nothing about predicted relations).
    """
    for t in tasks:
        if t not in TASKS:
            raise UnknownNameError("evaluation task", t, list(TASKS))
    for m in entity_modes:
        if m not in ENTITY_MODES:
            raise UnknownNameError("entity scoring mode", m, list(ENTITY_MODES))
    for m in relation_modes:
        if m not in RELATION_MODES:
            raise UnknownNameError("relation scoring mode", m, list(RELATION_MODES))
    pair_records(gold, pred)  # fail before any work when the records do not pair
    annotated = {"ner": any(r.entities for r in gold), "re": any(r.relations for r in gold),
                 "ee": any(r.events for r in gold)}
    scores: dict[str, SpanScores] = {}
    skipped = []
    for t in dict.fromkeys(tasks):
        if not annotated[t]:
            skipped.append(t)
        elif t == "ner":
            for m in entity_modes:
                scores[f"ner.{m}"] = entity_scores(gold, pred, m)
        elif t == "re":
            for m in relation_modes:
                scores[f"re.{m}"] = relation_scores(gold, pred, m)
        else:
            for m, s in event_scores(gold, pred).items():
                scores[f"ee.{m}"] = s
    return EvaluationReport(scores, len(gold), tuple(skipped))
