"""DSPy's optimisers with openie's strict F1 as the metric: BootstrapFewShot and MIPROv2 over gold records.

An optimiser needs a metric that scores one prediction against one example. :class:`StrictF1`
is openie's own strict F1 (``openie.metrics``) on the grounded prediction record, so a program
is optimised for exactly the number the reports show, offsets and types included, not for a
string match on the model's JSON.

DSPy's optimisers call the LM from its global settings and, by default, from several threads;
:func:`optimize_program` scopes the LM and adapter to the run and evaluates on one thread, as
openie engines are not all thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dspy

from openie.agent.signatures import check_task, example_from_record, prediction_to_record
from openie.errors import UnknownNameError
from openie.metrics import entity_scores, event_scores, relation_scores
from openie.records import Record
from openie.schema import Schema

OPTIMIZERS = ("bootstrap", "mipro")

#: defaults of each optimiser's options (``optimize_program(..., **options)``)
BOOTSTRAP_OPTIONS: dict[str, Any] = {"max_bootstrapped_demos": 4, "max_labeled_demos": 4, "max_rounds": 1,
                                     "metric_threshold": None, "max_errors": None}
MIPRO_OPTIONS: dict[str, Any] = {"num_candidates": 3, "num_trials": 4, "max_bootstrapped_demos": 2,
                                 "max_labeled_demos": 2, "minibatch": False, "minibatch_size": 35,
                                 "program_aware_proposer": False, "data_aware_proposer": False,
                                 "tip_aware_proposer": True, "fewshot_aware_proposer": True,
                                 "metric_threshold": None, "max_errors": None, "init_temperature": 1.0}


def _annotations(record: Record, task: str) -> int:
    return len({"ner": record.entities, "re": record.relations, "ee": record.events}[task])


def record_f1(gold: Record, pred: Record, task: str = "ner") -> float:
    """Strict F1 of one prediction: NER and RE strict; events the mean of trigger and argument classification.

    Nothing to find and nothing found is a perfect 1.0 (the score a corpus-level F1 would not count).
    """
    check_task(task)
    if not _annotations(gold, task) and not _annotations(pred, task):
        return 1.0
    pred = replace(pred, id=gold.id)  # one pair: the texts must agree, the ids need not
    if task == "ner":
        return entity_scores([gold], [pred], "strict").f1
    if task == "re":
        return relation_scores([gold], [pred], "strict").f1
    scores = event_scores([gold], [pred])
    has_args = any(ev.arguments for r in (gold, pred) for ev in r.events)
    if not has_args:
        return scores.trigger_classification.f1
    return (scores.trigger_classification.f1 + scores.argument_classification.f1) / 2


@dataclass
class StrictF1:
    """openie's strict F1 as a DSPy metric ``(example, prediction, trace) -> float``.

    The gold of an example is the record of its ``record_id`` in ``gold`` (exact offsets); an
    example without one is grounded from its own output fields, like a prediction.
    """

    schema: Schema
    task: str = "ner"
    gold: Mapping[str, Record] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_task(self.task)

    def gold_record(self, example: Any) -> Record:
        record_id = example.get("record_id") if hasattr(example, "get") else None
        if record_id is not None and record_id in self.gold:
            return self.gold[record_id]
        shown = Record(str(record_id or "example"), str(example["text"]))
        return prediction_to_record(example, shown, self.schema, self.task)

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> float:
        gold = self.gold_record(example)
        pred = prediction_to_record(prediction, gold.without_annotations(), self.schema, self.task)
        return record_f1(gold, pred, self.task)


def examples_from_records(records: Sequence[Record], task: str = "ner") -> list[dspy.Example]:
    """Labelled DSPy examples (``text`` in, the gold output out, ``record_id`` kept for the metric)."""
    return [example_from_record(r, task) for r in records]


def _options(defaults: Mapping[str, Any], given: Mapping[str, Any], optimizer: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UnknownNameError(f"option of optimizer {optimizer!r}", unknown[0], sorted(defaults))
    return {**defaults, **given}


def optimize_program(program: dspy.Module, trainset: Sequence[Record], *, schema: Schema, lm: Any, task: str = "ner",
                     optimizer: str = "bootstrap", valset: Sequence[Record] | None = None, prompt_lm: Any = None,
                     adapter: Any = None, seed: int = 0, **options: Any) -> dspy.Module:
    """Compile ``program`` with DSPy's ``optimizer`` on gold records, scored by :class:`StrictF1`.

    * ``bootstrap``: ``dspy.BootstrapFewShot`` (options: :data:`BOOTSTRAP_OPTIONS`): runs the
      program on the training records and keeps the traces whose strict F1 passes
      ``metric_threshold`` (any F1 > 0 when None) as demonstrations, topped up with labelled ones.
    * ``mipro``: ``dspy.MIPROv2`` without its ``auto`` presets (options: :data:`MIPRO_OPTIONS`):
      bootstraps demonstration sets, has ``prompt_lm`` (default ``lm``) propose instructions, and
      searches their combinations with optuna on ``valset`` (default: the last 80% of ``trainset``).

    ``lm`` is a ``dspy.LM``, e.g. ``openie.engines.dspy_lm.openie_lm(engine)`` or a
    ``DSPyExtractor``'s ``lm``; ``adapter`` a DSPy adapter (default DSPy's).
    """
    check_task(task)
    if optimizer not in OPTIMIZERS:
        raise UnknownNameError("DSPy optimizer", optimizer, list(OPTIMIZERS))
    if not trainset:
        raise ValueError("the training set is empty")
    gold = {r.id: r for r in [*trainset, *(valset or [])]}
    metric = StrictF1(schema, task, gold)
    train = examples_from_records(trainset, task)
    settings: dict[str, Any] = {"lm": lm}
    if adapter is not None:
        settings["adapter"] = adapter
    with dspy.context(**settings):
        if optimizer == "bootstrap":
            o = _options(BOOTSTRAP_OPTIONS, options, optimizer)
            teleprompter = dspy.BootstrapFewShot(metric=metric, metric_threshold=o["metric_threshold"],
                                                 max_bootstrapped_demos=o["max_bootstrapped_demos"],
                                                 max_labeled_demos=o["max_labeled_demos"], max_rounds=o["max_rounds"],
                                                 max_errors=o["max_errors"])
            return teleprompter.compile(program, trainset=train)
        o = _options(MIPRO_OPTIONS, options, optimizer)
        teleprompter = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm or lm, task_model=lm, auto=None,
                                    num_candidates=o["num_candidates"], max_bootstrapped_demos=o["max_bootstrapped_demos"],
                                    max_labeled_demos=o["max_labeled_demos"], num_threads=1, max_errors=o["max_errors"],
                                    seed=seed, init_temperature=o["init_temperature"],
                                    metric_threshold=o["metric_threshold"], verbose=False)
        return teleprompter.compile(program, trainset=train,
                                    valset=examples_from_records(valset, task) if valset is not None else None,
                                    num_trials=o["num_trials"], minibatch=o["minibatch"],
                                    minibatch_size=o["minibatch_size"], seed=seed,
                                    program_aware_proposer=o["program_aware_proposer"],
                                    data_aware_proposer=o["data_aware_proposer"],
                                    tip_aware_proposer=o["tip_aware_proposer"],
                                    fewshot_aware_proposer=o["fewshot_aware_proposer"])


__all__ = ["BOOTSTRAP_OPTIONS", "MIPRO_OPTIONS", "OPTIMIZERS", "StrictF1", "examples_from_records", "optimize_program",
           "record_f1"]
