"""``openie extract``: a whole corpus through one method into a JSONL of grounded predictions, resumably.

Real corpora are large and runs get killed (pre-emption, out of memory, a closed laptop). A
researcher must be able to trust that a finished output file holds exactly what one uninterrupted
run would have written, so the job is built around that:

- **Streaming, tolerant input.** A JSONL input is read line by line, twice: a first pass checks
  every line (a malformed one is written with its line number, raw text and reason to
  ``<output>.errors.jsonl`` and skipped, never fatal), counts the records for the progress bar and
  checks the gold labels against the schema, all before a model is loaded; the second pass feeds
  the model. Memory holds record ids (duplicates are malformed too), never the file.
- **Ordered, durable output.** One prediction per input record, in input order, written batch by
  batch, each batch flushed and fsync'ed. Gold annotations are used for F1 only: the model sees
  ``record.without_annotations()``.
- **Resume.** ``<output>.run.json`` holds the resolved configuration: everything that changes an
  output (template name and version hash, model, backend, adapters with content hashes, schema,
  demonstration settings and seed, max_tokens, ...). A restart with the same configuration cuts a
  partial last line (a write interrupted by SIGKILL), checks that the output is a prefix of the
  input (same ids, same order) and continues after it. Batches stay aligned to multiples of
  ``batch_size`` in the input, so a resumed run sends the engine exactly the batches an
  uninterrupted run sends (batched decoding is then bit-identical, padding included). Another
  configuration is refused naming the differing keys; ``overwrite=True`` starts afresh. The output
  file is locked while a run writes it.
- **Summary.** Records, entities, parse problems, spans not found in the text, cache hits and
  misses, throughput and strict micro F1 where gold exists, over the whole output (the resumed part
  included; throughput and cache figures are this run's). Saved in the sidecar too.

The same job runs on a Ray cluster (``ray_address=``, see :mod:`openie.experiments.ray_extract`):
only the step "batches of records -> predictions" changes, reading, resuming and writing do not.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from openie.engines import close_engine
from openie.engines.base import Engine, adapter_content_hash, adapter_hash_or_path
from openie.engines.hardware import announce, dtype_name, resolve_dtype
from openie.errors import SchemaError
from openie.experiments.job import (  # noqa: F401  (re-exported: the job's parts, shared with Ray and grid cells)
    INDEX_EVERY,
    JSONL_SUFFIXES,
    BatchCounts,
    ExtractError,
    ExtractorSpec,
    InputScan,
    RecordSource,
    _parse_line,
    model_input,
    pool_fingerprint,
    predict_batch,
)
from openie.methods.demonstrations import DemonstrationSpec, demonstration_selector, spec_fingerprints
from openie.methods.icl import Demonstrations
from openie.methods.icl.pipeline import COVERAGE_LOSSES
from openie.methods.registry import EngineRequest, MethodContext, MethodError, MethodSetup, get_method
from openie.metrics import entity_scores, relation_scores
from openie.predictions import (
    PredictionsError,
    append_predictions,
    keep_lines,
    lock,
    truncate_partial_line,
    write_json_atomic,
)
from openie.records import Record
from openie.schema import Schema
from prompts.builder import PromptBuilder
from prompts.formats import FORMATS

CONFIG_VERSION = 1


class ConfigMismatchError(ExtractError):
    """Resuming an output with another configuration than the one that wrote it."""

    def __init__(self, output: Path, differing: dict[str, tuple[Any, Any]]):
        self.differing = differing
        shown = "; ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, (old, new) in differing.items())
        super().__init__(f"{output} was written with another configuration (differing keys: "
                         f"{', '.join(differing)}). {shown}. Resume with the original settings, choose another "
                         f"output, or pass --overwrite (overwrite=True) to start afresh.")


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


# =============================================================================================
# output, sidecar, resume
# =============================================================================================

def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".run.json")


def errors_file_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def io_path(output: Path) -> Path:
    """``--save-io``: one line per prediction, in the same order, with its prompts and raw answers."""
    return output.with_name(output.name + ".io.jsonl")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExtractError(f"{path} is not valid JSON ({err}); delete it or pass --overwrite") from None


def _lock_output(fh: IO[bytes], output: Path) -> None:
    try:
        lock(fh, output)
    except PredictionsError as err:
        raise ExtractError(str(err)) from None


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Top-level keys whose values differ (JSON-normalised), with (old, new) values."""
    def norm(v: Any) -> str:
        return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)

    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if norm(old.get(k)) != norm(new.get(k))}


# =============================================================================================
# the summary
# =============================================================================================

@dataclass
class ExtractSummary:
    """What a run produced. Counts cover the whole output; timing, tokens and cache this run only."""

    output: str
    records: int = 0  # predictions in the output
    resumed: int = 0  # already there when this run started
    processed: int = 0  # predicted by this run
    input_records: int = 0  # valid input records (before ``limit``)
    malformed_lines: int = 0
    entities: int = 0
    relations: int = 0
    parse_problems: int = 0
    not_found: int = 0  # predicted spans not found in the text
    cut_at_max_tokens: int = 0  # answers that ended at max_tokens (their complete items salvaged)
    coverage: dict[str, int] = field(default_factory=dict)  # meta["coverage"] counters summed over the output
    incomplete_records: int = 0  # predictions whose coverage reports a loss (input not seen, answer cut, span lost)
    records_without_coverage: int = 0  # predictions of a method that reports no coverage
    dtype: str | None = None  # the engine's resolved dtype
    prompts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int | None = None
    cache_misses: int | None = None
    seconds: float = 0.0  # wall clock of this run, model loading included
    extract_seconds: float = 0.0  # the batch loop only
    records_per_s: float = 0.0
    tokens_per_s: float = 0.0  # generated tokens per second
    f1: float | None = None  # strict micro entity F1 (None: no gold)
    precision: float | None = None
    recall: float | None = None
    relation_f1: float | None = None
    gold_labels_outside_schema: dict[str, int] = field(default_factory=dict)
    errors_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"extracted {self.records} records -> {self.output}"
                 + (f" ({self.resumed} resumed, {self.processed} new)" if self.resumed else ""),
                 f"  entities {self.entities}" + (f", relations {self.relations}" if self.relations else "")
                 + f"; parse problems {self.parse_problems}; spans not found {self.not_found}"
                 + f"; answers cut at max_tokens {self.cut_at_max_tokens}"]
        if self.coverage:
            c = self.coverage
            lines.append(f"  coverage: {c.get('chars_seen', 0)}/{c.get('chars', 0)} characters seen"
                         + (f", {c['tokens']} tokens" if "tokens" in c else "")
                         + f", {c.get('chunks', 0)} chunks, {c.get('prompts', 0)} prompts"
                         + (f" ({c['retried']} retried)" if c.get("retried") else "")
                         + f"; {self.incomplete_records} records with a loss (not seen {c.get('chars_not_seen', 0)} "
                         f"chars, cut {c.get('cut_at_max_tokens', 0)} answers, salvaged {c.get('salvaged', 0)}, "
                         f"not grounded {c.get('not_grounded', 0)} spans)")
        if self.records_without_coverage:
            lines.append(f"  {self.records_without_coverage} predictions of a method that reports no coverage")
        if self.malformed_lines:
            lines.append(f"  malformed input lines {self.malformed_lines} (see {self.errors_path})")
        lines.append(f"  {self.prompts} prompts, {self.prompt_tokens} prompt + {self.completion_tokens} generated tokens "
                     f"in {self.extract_seconds:.1f} s: {self.records_per_s:.2f} records/s, "
                     f"{self.tokens_per_s:.1f} tokens/s ({self.seconds:.1f} s in all)")
        if self.cache_hits is not None:
            total = self.cache_hits + (self.cache_misses or 0)
            rate = self.cache_hits / total if total else 0.0
            lines.append(f"  cache: {self.cache_hits} hits, {self.cache_misses} misses ({rate:.0%} hit rate)")
        if self.f1 is not None:
            lines.append(f"  strict micro F1 {self.f1:.4f} (P {self.precision:.4f} R {self.recall:.4f})"
                         + (f"; relation F1 {self.relation_f1:.4f}" if self.relation_f1 is not None else ""))
        if self.gold_labels_outside_schema:
            lines.append("  gold labels outside the schema (not scored): "
                         + ", ".join(f"{k} ({v})" for k, v in sorted(self.gold_labels_outside_schema.items())))
        return "\n".join(lines)


@dataclass
class _Tally:
    """Running counts over written predictions, F1 counts included (streamed: nothing kept)."""

    schema: Schema
    score_relations: bool
    summary: ExtractSummary
    tp: int = 0
    fp: int = 0
    fn: int = 0
    rtp: int = 0
    rfp: int = 0
    rfn: int = 0

    def _scored_gold(self, record: Record) -> Record:
        known = set(self.schema.entity_labels)
        mapped = [e for e in record.entities if self.schema.label_map.get(e.label, e.label) in known]
        gold = Record(record.id, record.text, record.lang)
        gold.entities = [replace(e, label=self.schema.label_map.get(e.label, e.label)) for e in mapped]
        gold.relations = record.relations
        return gold

    def add(self, gold: Sequence[Record], preds: Sequence[Record], has_gold: bool) -> None:
        s = self.summary
        for p in preds:
            s.records += 1
            s.entities += len(p.entities)
            s.relations += len(p.relations)
            s.parse_problems += len(p.meta.get("parse_problems", []))
            s.not_found += int(p.meta.get("alignment", {}).get("not_found", 0))
            s.cut_at_max_tokens += int(p.meta.get("cut_at_max_tokens", 0))
            coverage = p.meta.get("coverage")
            if coverage is None:
                s.records_without_coverage += 1
            else:
                for key, value in coverage.items():
                    if isinstance(value, int) and not isinstance(value, bool) and key != "labels_per_prompt":
                        s.coverage[key] = s.coverage.get(key, 0) + value
                s.coverage["labels_per_prompt"] = max(s.coverage.get("labels_per_prompt", 0),
                                                      int(coverage.get("labels_per_prompt", 0)))
                s.incomplete_records += not coverage.get("complete", True)
        if has_gold:
            golds = [self._scored_gold(g) for g in gold]
            m = entity_scores(golds, preds, "strict").micro
            self.tp, self.fp, self.fn = self.tp + m.tp, self.fp + m.fp, self.fn + m.fn
            if self.score_relations:
                rm = relation_scores(golds, preds, "strict").micro
                self.rtp, self.rfp, self.rfn = self.rtp + rm.tp, self.rfp + rm.fp, self.rfn + rm.fn

    def finish(self, has_gold: bool) -> None:
        from openie.metrics import PRF

        if has_gold:
            prf = PRF.from_counts(self.tp, self.fp, self.fn)
            self.summary.f1, self.summary.precision, self.summary.recall = prf.f1, prf.precision, prf.recall
            if self.score_relations:
                self.summary.relation_f1 = PRF.from_counts(self.rtp, self.rfp, self.rfn).f1


# =============================================================================================
# the job
# =============================================================================================

def resolve_schema(schema: Schema | str | Path | Sequence[str] | None, source: RecordSource) -> Schema:
    """A Schema, a schema file (JSON/YAML), a list of entity labels, or the corpus's own schema."""
    if isinstance(schema, Schema):
        resolved = schema
    elif isinstance(schema, str | Path):
        if not Path(schema).is_file():
            raise SchemaError(f"schema file {schema} does not exist")
        resolved = Schema.load(schema)
    elif schema is not None:
        resolved = Schema.from_labels([str(x).strip() for x in schema])
    elif source.dataset is not None:
        from openie.datasets import dataset_schema

        resolved = dataset_schema(source.dataset)
    else:
        raise SchemaError(f"no schema for {source.spec}: pass a schema file (--schema FILE) or entity labels "
                          f"(--labels a,b,c); only a registered corpus NAME:SPLIT brings its own")
    if not (resolved.entity_types or resolved.relation_types or resolved.event_types):
        raise SchemaError("the schema defines no types: nothing to extract")
    return resolved


def _check_gold_labels(scan: InputScan, schema: Schema) -> dict[str, int]:
    """Gold labels the schema does not know (after its label map); none known at all is an error."""
    if not scan.entity_labels or not schema.entity_types:
        return {}
    known = set(schema.entity_labels)
    mapped: Counter[str] = Counter()
    for label, n in scan.entity_labels.items():
        mapped[schema.label_map.get(label, label)] += n
    outside = {k: v for k, v in mapped.items() if k not in known}
    if len(outside) == len(mapped):
        raise SchemaError(f"none of the input's gold entity labels ({', '.join(sorted(mapped))}) is in the schema "
                          f"({', '.join(schema.entity_labels)}): F1 would be 0 whatever the model does. Use the "
                          f"corpus's labels, or a schema whose label_map maps them")
    return outside


def _aligned_batches(records: Iterable[Record], start: int, size: int) -> Iterator[list[Record]]:
    """Batches whose boundaries fall on multiples of ``size`` counted from the input's first record."""
    it = iter(records)
    n = size - start % size
    while True:
        batch = [r for _, r in zip(range(n), it, strict=False)]
        if not batch:
            return
        yield batch
        n = size


def _verify_done(output: Path, source: RecordSource, scan: InputScan, tally: _Tally, batch_size: int) -> int:
    """Check the output is a prefix of the input, count it in the tally; returns its length."""
    done = 0
    gold_it = source.records(scan)
    gold_batch: list[Record] = []
    pred_batch: list[Record] = []
    with open(output, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                raise ExtractError(f"{output}, line {lineno} is blank: the file was edited by hand; pass --overwrite")
            item = _parse_line(raw)
            if not isinstance(item, Record):
                raise ExtractError(f"{output}, line {lineno} is not a prediction record ({item}); "
                                   f"the file was changed by something else: pass --overwrite")
            gold = next(gold_it, None)
            if gold is None:
                raise ExtractError(f"{output} has more predictions ({lineno}+) than the input has records "
                                   f"({scan.total}): it was not written from this input; pass --overwrite")
            if gold.id != item.id:
                raise ExtractError(f"{output}, line {lineno} is record {item.id!r} but input record {done + 1} is "
                                   f"{gold.id!r}: the output was not written from this input; pass --overwrite")
            gold_batch.append(gold)
            pred_batch.append(item)
            done += 1
            if len(pred_batch) >= batch_size:
                tally.add(gold_batch, pred_batch, scan.has_gold)
                gold_batch, pred_batch = [], []
    if pred_batch:
        tally.add(gold_batch, pred_batch, scan.has_gold)
    return done


class CoverageError(ExtractError):
    """``strict_coverage``: a prediction lost part of its input or its answer (the message says which)."""


def _check_coverage(preds: Sequence[Record]) -> None:
    for p in preds:
        coverage = p.meta.get("coverage")
        if coverage is None:
            raise CoverageError(f"record {p.id!r}: the method reports no coverage, so a loss cannot be ruled out "
                                "(strict coverage); its prediction is written")
        if not coverage.get("complete", True):
            losses = {k: v for k, v in coverage.items() if k in COVERAGE_LOSSES and v}
            raise CoverageError(f"record {p.id!r}: coverage lost ({', '.join(f'{k} {v}' for k, v in losses.items())}) "
                                "(strict coverage); its prediction is written, the run stops here")


def _resolved_if_exists(path: str) -> str:
    """An option naming an existing file or folder is recorded absolute (a resume from elsewhere finds it)."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def extract_file(
    input: str | Path | RecordSource,
    output: str | Path,
    *,
    schema: Schema | str | Path | Sequence[str] | None = None,
    method: str = "icl",
    template: str = "ner.ruie.v1",
    backend: str = "auto",
    model: str = "gemma-3-270m",
    adapters: Mapping[str, str | Path] | None = None,
    adapter: str | None = None,
    demonstrations: str | Sequence[str] | None = None,
    k: int = 4,
    seed: int = 0,
    retriever: str = "random",
    retriever_path: str | Path | None = None,
    retriever_options: Mapping[str, Any] | None = None,
    rerank: str | Path | None = None,
    rerank_candidates: int | None = None,
    method_options: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    max_tokens: int = 128,
    constrained: bool = True,
    cache: str | Path | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    errors_path: str | Path | None = None,
    save_io: bool = False,
    data_root: str | None = None,
    engine: Engine | None = None,
    engine_factory: Callable[[], Engine] | None = None,
    engine_options: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    ray_gpus_per_worker: float = 0.0,
    ray_cpus_per_worker: float = 1.0,
    max_prompt_tokens: int | None = None,
    task: str | None = None,
    default_pool: str | None = None,
    shared_dir: str | Path | None = None,
    workdir: str | Path | None = None,
    engine_for: Callable[[EngineRequest], Engine] | None = None,
    strict_coverage: bool = False,
) -> ExtractSummary:
    """Extract every record of ``input`` (JSONL file, records file or ``NAME:SPLIT``) into ``output``.

    ``demonstrations`` (``None``: zero-shot) is a pool (records file or ``NAME:SPLIT``, or a list of
    them as one pool) from which ``k`` demonstrations are drawn per record, seeded by ``seed``, or
    retrieved: ``retriever`` names a strategy of ``openie.methods.demonstrations`` (``bm25``,
    ``bm25s``, ``dense``, ``entity_knn`` with ``retriever_options``; ``ruie`` or ``saved`` with
    ``retriever_path``), optionally reranked by ``rerank`` (a reward model or cross-encoder folder).
    ``retriever="ruie"`` with a fitted RUIE work folder as ``retriever_path`` draws from the pool it
    was trained on unless one is given. ``method`` is any registered method
    (:mod:`openie.methods.registry`), built from ``method_options`` by its registration; one that
    picks its own demonstrations (``el4ner``, ``dspy``) takes ``demonstrations`` as its pool and ``k``
    as its k. ``task`` (default: the template's) names the task of a method that writes its own
    prompts; ``max_prompt_tokens`` drops the least relevant demonstrations until a prompt fits;
    ``default_pool`` (default: the input corpus's train split) is the pool of a method that picks
    its own demonstrations when none is given; ``shared_dir`` is where runs may share a method's
    caches (grid cells: the experiment folder), ``workdir`` where it keeps this run's files (default:
    ``OUTPUT.METHOD/``; grid cells: the cell folder); ``engine_for`` starts the other engines a method
    asks for (default: one per request, closed at the end). ``engine`` injects a built engine
    (its ``model_id`` is recorded as the model; ``cache`` then wraps it); ``engine_factory`` builds one per process
    (needed with Ray); otherwise ``create_engine(backend, model, adapters, cache=cache,
    **engine_options)``; ``engine_options["dtype"]`` (default ``auto``) is resolved for this
    machine (:mod:`openie.engines.hardware`) and recorded as ``dtype``. ``save_io`` writes each
    record's prompts, raw answers and finish reasons to ``<output>.io.jsonl`` (in-context methods).
    ``strict_coverage`` stops the run at the first prediction whose coverage reports a loss (input
    the model did not see, an answer cut at ``max_tokens``, a span not grounded) or that reports
    no coverage, after writing its batch (resuming continues after it).
    ``limit`` extracts the first N valid records. ``ray_address`` (``"local"``
    starts a local Ray) runs the batches on a Ray Data actor pool of ``ray_workers`` engines.
    Raises :class:`ConfigMismatchError` when ``output`` was written with another configuration.
    """
    t0 = time.perf_counter()
    try:
        registration = get_method(method)
    except MethodError as err:
        raise ExtractError(str(err)) from None
    if batch_size < 1 or max_tokens < 1:
        raise ExtractError(f"batch_size and max_tokens must be >= 1, got {batch_size} and {max_tokens}")
    if limit is not None and limit < 0:
        raise ExtractError(f"limit must be >= 0, got {limit}")
    if engine is not None and ray_address is not None:
        raise ExtractError("an engine instance cannot be shipped to Ray workers: pass engine_factory= instead")
    if ray_address is not None and not registration.ray:
        raise ExtractError(f"method {method!r} runs no Ray workers")
    if not registration.needs_engine and (engine is not None or engine_factory is not None):
        raise ExtractError(f"method {method!r} runs no LLM engine: pass no engine or engine_factory")
    if adapter is not None and registration.picks_adapter:
        raise ExtractError(f"method {method!r} picks each record's adapter itself: no --use-adapter")
    adapters = {name: str(path) for name, path in (adapters or {}).items()}
    output = Path(output)
    errors = Path(errors_path) if errors_path is not None else errors_file_path(output)
    sidecar = sidecar_path(output)
    workdir = Path(workdir) if workdir is not None else output.parent / f"{output.name}.{registration.name}"

    source = input if isinstance(input, RecordSource) else RecordSource(str(input), data_root)
    resolved_schema = resolve_schema(schema, source)
    builder = PromptBuilder(template, resolved_schema)
    method_options = dict(method_options or {})
    own = registration.demonstration_options
    if own is not None:  # the method picks its own demonstrations: the pool and k are its options
        if retriever != "random" or retriever_path is not None or rerank is not None:
            raise ExtractError(f"method {method!r} picks its own demonstrations (its options {own[0]} and {own[1]}: "
                               f"--demos is its pool, --k its {own[1]}): no --retriever, --retriever-path or --rerank")
        if demonstrations is not None:
            method_options.setdefault(own[0], demonstrations)
            method_options.setdefault(own[1], k)
            demonstrations = None
    elif demonstrations is not None and not registration.takes_demonstrations:
        raise ExtractError(f"method {method!r} takes no demonstrations")
    method_options = registration.map_paths(method_options, _resolved_if_exists)
    task = str(task or method_options.get("task") or builder.task) if not registration.uses_template else builder.task
    if default_pool is None and source.dataset is not None:
        from openie.datasets import default_pool as corpus_default_pool

        default_pool = corpus_default_pool(source.dataset)
    setup = MethodSetup(task, model, backend, adapter, adapters if engine is None and engine_factory is None else None,
                        default_pool, data_root)
    try:
        options = registration.parse_options(method_options, "method options", setup)
    except MethodError as err:
        raise ExtractError(str(err)) from None
    if registration.engine_adapters is not None:
        adapters.update(registration.engine_adapters(options))
    if adapter is not None and engine is None and engine_factory is None and adapter not in adapters:
        raise ExtractError(f"adapter {adapter!r} is not among the loaded adapters "
                           f"({', '.join(adapters) or 'none: add --adapter NAME=PATH'})")
    run_template = registration.run_template(template, builder.format.name, options)
    if run_template != template:
        template = run_template
        builder = PromptBuilder(template, resolved_schema)
        task = builder.task if registration.uses_template else task
    if builder.format.name not in FORMATS and registration.uses_template:
        raise ExtractError(f"template {template!r} is a stage of a method that renders it itself "
                           f"(format {builder.format.name}); pick an extraction template")
    if registration.tasks is not None and task not in registration.tasks:
        raise ExtractError(f"method {method!r} extracts {', '.join(registration.tasks)}; the schema's task is {task!r}")
    demos: Demonstrations | None = None
    demos_config = None
    selection = None
    if registration.takes_demonstrations and (demonstrations is not None or retriever != "random"):
        # one path for every selector and pool count, the one grid cells take (openie.methods.demonstrations):
        # a pool read here is tagged with its corpus's own schema, so the same settings build the same prompts
        from openie.methods.demonstrations import default_pool_sources, load_pool_sources

        path = str(Path(retriever_path).resolve()) if retriever_path else None
        sources = [demonstrations] if isinstance(demonstrations, str) else list(demonstrations or [])
        sources = [str(Path(p).resolve()) if Path(p).is_file() else p for p in sources] or \
            list(default_pool_sources(retriever, path))
        try:
            selection = DemonstrationSpec(retriever, tuple(sources), k, seed, dict(retriever_options or {}), path,
                                          str(Path(rerank).resolve()) if rerank else None, rerank_candidates,
                                          task, data_root)
            pool_records = load_pool_sources(sources, task, data_root)
        except ValueError as err:
            raise ExtractError(str(err)) from None
        demos = demonstration_selector(selection, pool_records)
        demos_config = {"selector": retriever, **selection.describe(), "pool_size": len(pool_records),
                        "pool_sha256": pool_fingerprint(pool_records), "fingerprints": spec_fingerprints(selection)}
    elif retriever != "random" or retriever_path is not None or rerank is not None:
        raise ExtractError(f"method {method!r} takes no demonstrations: no --retriever, --retriever-path or --rerank"
                           if not registration.takes_demonstrations else
                           "--retriever-path and --rerank choose demonstrations: give a --retriever and a --demos pool")
    registered_extractor: Any = None  # a method without an engine: built now, so the run record can name its weights
    if not registration.needs_engine:
        try:
            registered_extractor = registration.build(
                MethodContext(resolved_schema, None, template, None, adapter, max_tokens, batch_size, constrained,
                              data_root, workdir, model, task, backend, max_prompt_tokens, save_io,
                              Path(shared_dir) if shared_dir else None, None, default_pool), options)
        except ValueError as err:
            raise ExtractError(str(err)) from None
    if engine is not None and cache is not None:
        from openie.engines.cache import CachedEngine

        engine = CachedEngine(engine, cache)
    if engine is not None:
        backend_id, model_id = "injected", engine.model_id  # a cache or wrapper around it changes no output
    else:
        backend_id = "factory" if engine_factory is not None else backend
        model_path = Path(model).expanduser()
        model_id = str(model_path.resolve()) if model_path.exists() else model
    engine_options = dict(engine_options or {})
    if engine is not None:
        dtype = dtype_name(getattr(engine, "dtype", None))
    elif engine_factory is not None or not registration.needs_engine:
        dtype = dtype_name(engine_options.get("dtype"))  # a factory's engine: as its options say, if they say
    else:
        device = str(engine_options.get("device", "auto")) if backend == "hf" else "auto"
        choice = resolve_dtype(engine_options.get("dtype", "auto"), device)
        announce(choice)
        dtype = choice.dtype
        engine_options["dtype"] = dtype  # every engine of the run (Ray workers, a method's other engines) gets the same
    # an injected engine loaded its adapters itself: a folder this process cannot read is recorded by its path
    hash_of = adapter_hash_or_path if engine is not None else adapter_content_hash
    adapter_hashes = {name: hash_of(path) for name, path in adapters.items()}
    if adapter is not None and adapter not in adapter_hashes and engine is not None:
        adapter_hashes[adapter] = engine.adapter_fingerprint(adapter)
    described = getattr(registered_extractor, "describe", None)  # what the built model is (its weights)
    config = {
        "config_version": CONFIG_VERSION, "method": method, "task": task,
        "template": builder.version if registration.uses_template else None,
        "input": source.id, "backend": backend_id, "model": model_id, "adapters": adapter_hashes,
        "adapter": adapter, "schema": resolved_schema.to_dict(), "demonstrations": demos_config,
        "max_tokens": max_tokens if registration.needs_engine else None, "temperature": 0.0,
        "constrained": constrained if registration.uses_template else None, "dtype": dtype,
        "max_prompt_tokens": max_prompt_tokens,
        "engine_options": json.loads(json.dumps({k: v for k, v in engine_options.items() if k != "dtype"},
                                                sort_keys=True, default=str)),
        "method_options": {**registration.describe(options), **(described() if described else {})},
    }
    if not registration.needs_engine:  # its own model's identity replaces the engine's
        config.update(backend=None, model=None, adapters={}, dtype=None)
    spec = ExtractorSpec(template, resolved_schema.to_dict(), backend, model, adapters, adapter,
                         dict(engine_options or {}), max_tokens, batch_size, constrained,
                         data_root, str(cache) if cache is not None else None, engine_factory, selection, save_io,
                         method, method_options, str(workdir), max_prompt_tokens,
                         str(shared_dir) if shared_dir else None, replace(setup, task=task))

    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a+b") as out:
        _lock_output(out, output)
        for stale in output.parent.glob(f"{sidecar.name}.tmp*"):  # a sidecar write cut by a kill
            stale.unlink(missing_ok=True)
        if overwrite:
            out.truncate(0)
        elif out.seek(0, os.SEEK_END) > 0:  # an empty output has nothing to protect
            previous = _read_json(sidecar)
            if previous is None or "config" not in previous:
                raise ExtractError(f"{output} exists but {sidecar.name} does not: it was not written by openie "
                                   f"extract (or the sidecar was removed); pass --overwrite to replace it")
            diff = config_diff(previous["config"], config)
            if diff:
                raise ConfigMismatchError(output, diff)
            truncate_partial_line(out)

        scan = source.scan(errors)
        outside = _check_gold_labels(scan, resolved_schema)
        total = scan.total if limit is None else min(scan.total, limit)
        summary = ExtractSummary(str(output), input_records=scan.total, malformed_lines=scan.malformed, dtype=dtype,
                                 gold_labels_outside_schema=outside,
                                 errors_path=str(errors) if scan.malformed else None)
        score_relations = config["task"] == "re" and scan.relations > 0
        tally = _Tally(resolved_schema, score_relations, summary)
        state = {"config": config, "status": "running", "limit": limit, "input_records": scan.total,
                 "malformed_lines": scan.malformed}
        write_json_atomic(sidecar, state)

        has_output = os.fstat(out.fileno()).st_size > 0
        done = _verify_done(output, source, scan, tally, batch_size) if has_output else 0
        summary.resumed = done
        pending = max(0, total - done)
        io_file = io_path(output)
        if overwrite:
            io_file.unlink(missing_ok=True)
        keep_lines(io_file, done)
        io_out = open(io_file, "a", encoding="utf-8") if save_io and pending else None
        counts = BatchCounts()
        cached = False
        t_loop = time.perf_counter()
        if pending:
            batches = _aligned_batches(source.records(scan, done, total), done, batch_size)
            bar: Any = None
            owned: Engine | None = None
            others: dict[tuple[Any, ...], Engine] = {}  # engines the method asked for, closed at the end

            def other_engine(request: EngineRequest) -> Engine:
                if engine_for is not None:
                    return engine_for(request)
                key = (request.backend, request.model, tuple(sorted(request.adapters.items())))
                if key not in others:
                    from openie.engines import create_engine

                    others[key] = create_engine(request.backend, request.model, dict(request.adapters) or None,
                                                cache=cache, **dict(engine_options or {}))
                return others[key]

            try:
                if ray_address is not None:
                    from openie.experiments.ray_extract import ray_predict

                    stream = ray_predict(spec, source, scan, done, done + pending, batches, address=ray_address,
                                         workers=ray_workers, gpus_per_worker=ray_gpus_per_worker,
                                         cpus_per_worker=ray_cpus_per_worker)
                    cached = cache is not None
                else:
                    if registered_extractor is not None:
                        extractor: Any = registered_extractor
                    else:
                        if engine is None:
                            owned = spec.build_engine()
                        try:
                            extractor = spec.build(engine or owned, demos, engine_for=other_engine)
                        except ValueError as err:
                            raise ExtractError(str(err)) from None
                    cached = hasattr(getattr(getattr(extractor, "engine", None), "stats", None), "hits")
                    stream = ((b, *predict_batch(extractor, b)) for b in batches)
                    t_loop = time.perf_counter()  # model loading is not extraction time
                bar = tqdm(total=total, initial=done, desc="extract", unit="rec", disable=not show_progress,
                           dynamic_ncols=True)
                for gold, preds, batch_counts in stream:
                    io_lines = [{"id": p.id, "io": p.meta.pop("io", None)} for p in preds]
                    if io_out is not None:  # before the predictions: a kill in between re-predicts, never loses
                        io_out.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in io_lines))
                        io_out.flush()
                    append_predictions(out, preds)
                    counts += batch_counts
                    summary.processed += len(preds)
                    tally.add(gold, preds, scan.has_gold)
                    if strict_coverage:
                        _check_coverage(preds)
                    elapsed = max(time.perf_counter() - t_loop, 1e-9)
                    bar.update(len(preds))
                    bar.set_postfix_str(f"{counts.completion_tokens / elapsed:.0f} tok/s, "
                                        f"{summary.parse_problems} problems", refresh=False)
            finally:
                if io_out is not None:
                    io_out.close()
                if bar is not None:
                    bar.close()
                for e in (owned, *others.values()):
                    if e is not None:
                        close_engine(e)
        loop_seconds = time.perf_counter() - t_loop if pending else 0.0

    tally.finish(scan.has_gold)
    summary.prompts, summary.prompt_tokens = counts.prompts, counts.prompt_tokens
    summary.completion_tokens = counts.completion_tokens
    if cached:
        summary.cache_hits, summary.cache_misses = counts.cache_hits, counts.cache_misses
    summary.extract_seconds = round(loop_seconds, 3)
    summary.records_per_s = round(summary.processed / loop_seconds, 3) if loop_seconds else 0.0
    summary.tokens_per_s = round(counts.completion_tokens / loop_seconds, 2) if loop_seconds else 0.0
    summary.seconds = round(time.perf_counter() - t0, 3)
    complete = summary.records >= total
    write_json_atomic(sidecar, {**state, "status": "complete" if complete else "partial",
                                 "summary": summary.to_dict()})
    return summary
