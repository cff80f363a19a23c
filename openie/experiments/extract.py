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

from openie.engines.base import Engine, adapter_content_hash
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
from openie.methods.registry import MethodContext, MethodError, get_method
from openie.metrics import entity_scores, relation_scores
from openie.records import Record
from openie.schema import Schema
from prompts.builder import PromptBuilder

METHODS = ("icl", "ruie", "retrieveall", "el4ner", "dspy")  # wired here; the others are registered
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


def _keep_lines(path: Path, n: int) -> None:
    """Cut ``path`` after its first ``n`` complete lines (a resumed run rewrites what follows)."""
    if not path.is_file():
        return
    keep = 0
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh):
            if i >= n or not raw.endswith(b"\n"):
                break
            keep += len(raw)
    with open(path, "r+b") as fh:
        fh.truncate(keep)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExtractError(f"{path} is not valid JSON ({err}); delete it or pass --overwrite") from None


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Top-level keys whose values differ (JSON-normalised), with (old, new) values."""
    def norm(v: Any) -> str:
        return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)

    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if norm(old.get(k)) != norm(new.get(k))}


def _lock(fh: IO[bytes], output: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ExtractError(f"{output} is being written by another running extraction") from None


def _truncate_partial_line(fh: IO[bytes]) -> int:
    """Cut everything after the last newline (a write interrupted mid-line); returns bytes cut."""
    size = fh.seek(0, os.SEEK_END)
    pos = size
    while pos > 0:
        step = min(1 << 16, pos)
        fh.seek(pos - step)
        chunk = fh.read(step)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            pos = pos - step + nl + 1
            break
        pos -= step
    if pos < size:
        fh.truncate(pos)
        fh.flush()
        os.fsync(fh.fileno())
    return size - pos


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
    cut_at_max_tokens: int = 0  # answers that ended at max_tokens (possibly incomplete)
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


def extract_file(
    input: str | Path,
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
) -> ExtractSummary:
    """Extract every record of ``input`` (JSONL file, records file or ``NAME:SPLIT``) into ``output``.

    ``demonstrations`` (``None``: zero-shot) is a pool (records file or ``NAME:SPLIT``, or a list of
    them as one pool) from which ``k`` demonstrations are drawn per record, seeded by ``seed``, or
    retrieved: ``retriever`` names a strategy of ``openie.methods.demonstrations`` (``bm25``,
    ``bm25s``, ``dense``, ``entity_knn`` with ``retriever_options``; ``ruie`` or ``saved`` with
    ``retriever_path``), optionally reranked by ``rerank`` (a reward model or cross-encoder folder).
    ``method="ruie"`` is in-context extraction with a fitted RUIE work folder (``retriever_path``)
    as the retriever; its pool defaults to the one it was trained on. ``method="gliner"`` runs a
    GLiNER checkpoint (``method_options``: ``model``, ``threshold``, ``labels`` name|description,
    ``nested``) over the schema's entity types: no LLM, no template, no demonstrations. ``method="dspy"``
    runs a DSPy program (``method_options``: :data:`openie.agent.options.OPTIONS`) on the engine;
    ``demonstrations`` is then its pool and ``k`` its ``knn_k``. ``engine`` injects a built engine
    (its ``model_id`` is recorded as the model; ``cache`` then wraps it); ``engine_factory`` builds one per process
    (needed with Ray); otherwise ``create_engine(backend, model, adapters, cache=cache,
    **engine_options)``; ``engine_options["dtype"]`` (default ``auto``) is resolved for this
    machine (:mod:`openie.engines.hardware`) and recorded as ``dtype``. ``save_io`` writes each
    record's prompts, raw answers and finish reasons to ``<output>.io.jsonl`` (in-context methods).
    ``limit`` extracts the first N valid records. ``ray_address`` (``"local"``
    starts a local Ray) runs the batches on a Ray Data actor pool of ``ray_workers`` engines.
    Raises :class:`ConfigMismatchError` when ``output`` was written with another configuration.
    """
    t0 = time.perf_counter()
    registration = None
    if method not in METHODS:
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
    adapters = {name: str(path) for name, path in (adapters or {}).items()}
    if adapter is not None and engine is None and engine_factory is None and adapter not in adapters:
        raise ExtractError(f"adapter {adapter!r} is not among the loaded adapters "
                           f"({', '.join(adapters) or 'none: add --adapter NAME=PATH'})")
    output = Path(output)
    errors = Path(errors_path) if errors_path is not None else errors_file_path(output)
    sidecar = sidecar_path(output)

    source = RecordSource(str(input), data_root)
    resolved_schema = resolve_schema(schema, source)
    builder = PromptBuilder(template, resolved_schema)
    demos: Demonstrations | None = None
    demos_config = None
    selection = None
    registered_extractor: Any = None  # a registered method without an engine, built before the run record
    if method == "retrieveall":
        from openie.experiments.retrieveall import RetrieveAllConfig, trained_adapters

        options = dict(method_options or {})
        unknown = sorted(set(options) - {"config", "mode"})
        if unknown or not options.get("config"):
            raise ExtractError("method 'retrieveall' takes the options config=RUN_CONFIG.yaml (a finished "
                               f"openie retrieveall experiment) and mode=routed|oracle|shared (got {sorted(options)})")
        if demonstrations is not None or ray_address is not None or adapter is not None:
            raise ExtractError("method 'retrieveall' picks each record's adapter and demonstrations itself: "
                               "no --use-adapter, demonstrations or Ray")
        try:
            retrieveall_config = RetrieveAllConfig.load(options["config"])
            adapters.update(trained_adapters(retrieveall_config)[0])
        except ValueError as err:
            raise ExtractError(str(err)) from None
        template = retrieveall_config.inference.template
        builder = PromptBuilder(template, resolved_schema)
    elif method == "el4ner":
        from openie.methods.el4ner import EL4NERError, member_specs, split_options

        if retriever != "random" or ray_address is not None:
            raise ExtractError("method 'el4ner' picks its own demonstrations (span or sentence similarity over "
                               "--demos, the pool) and runs no Ray")
        method_options = dict(method_options or {})
        if demonstrations is not None:  # --demos is the pool, --k the demonstrations per record
            method_options.setdefault("pool", demonstrations)
            method_options.setdefault("k", k)
            demonstrations = None
        pools = method_options.get("pool")  # records files by absolute path: the sidecar must name the same file
        if isinstance(pools, str | list):
            resolved = [str(Path(p).resolve()) if isinstance(p, str) and Path(p).is_file() else p
                        for p in ([pools] if isinstance(pools, str) else pools)]
            method_options["pool"] = resolved[0] if isinstance(pools, str) else resolved
        try:
            el4ner_stages, el4ner_run = split_options(method_options)
            el4ner_specs = member_specs(el4ner_run["members"], model=model, adapter=adapter, backend=backend)
        except EL4NERError as err:
            raise ExtractError(str(err)) from None
        if builder.task != "ner":
            raise ExtractError(f"method 'el4ner' extracts entities; the schema's task is {builder.task!r}")
    elif method == "dspy":
        from openie.agent.options import DSPyOptionsError, check_options, option_fingerprints
        from openie.experiments.config import map_dspy_paths

        if retriever != "random" or retriever_path is not None or rerank is not None or ray_address is not None:
            raise ExtractError("method 'dspy' picks its own demonstrations (method options retriever=bm25|bm25s|dense|"
                               "saved:PATH, knn_k; --demos is its pool, --k its knn_k) and runs no Ray")
        method_options = dict(method_options or {})
        if demonstrations is not None:  # --demos is the pool, --k the kNN demonstrations per record
            method_options.setdefault("pool", demonstrations)
            method_options.setdefault("knn_k", k)
            demonstrations = None
        method_options = map_dspy_paths(method_options, lambda p: str(Path(p).expanduser().resolve())
                                        if Path(p).expanduser().exists() else p, local=lambda p: True, pools=True)
        try:
            dspy_options = check_options(method_options, task=method_options.get("task") or (
                builder.task if builder.task in ("ner", "re") else "ner"))
            dspy_fingerprints = option_fingerprints(dspy_options)
        except DSPyOptionsError as err:
            raise ExtractError(str(err)) from None
    elif registration is not None:
        try:
            registered_options = registration.parse_options(method_options, "method options")
        except MethodError as err:
            raise ExtractError(str(err)) from None
        if demonstrations is not None and not registration.takes_demonstrations:
            raise ExtractError(f"method {method!r} takes no demonstrations")
        if not registration.needs_engine and (engine is not None or engine_factory is not None):
            raise ExtractError(f"method {method!r} runs no LLM engine: pass no engine or engine_factory")
        if ray_address is not None and not registration.ray:
            raise ExtractError(f"method {method!r} runs no Ray workers")
        if registration.template_format and builder.format.name != registration.template_format:
            template = str(registration.template)  # the run's template is not in the format the method reads
            builder = PromptBuilder(template, resolved_schema)
        if registration.tasks is not None and builder.task not in registration.tasks:
            raise ExtractError(f"method {method!r} extracts {', '.join(registration.tasks)}; the schema's task is "
                               f"{builder.task!r}")
        if not registration.needs_engine:  # its own model: built now, so the run record can name its weights
            try:
                registered_extractor = registration.build(
                    MethodContext(resolved_schema, None, template, None, adapter, max_tokens, batch_size, constrained,
                                  data_root, output.parent / f"{output.name}.{method}", model), registered_options)
            except ValueError as err:
                raise ExtractError(str(err)) from None
    elif method_options:
        raise ExtractError(f"method {method!r} takes no method options (got {sorted(method_options)})")
    if method == "ruie":
        if retriever_path is None:
            raise ExtractError("method 'ruie' needs the fitted RUIE work folder (--retriever-path DIR; "
                               "openie ruie fit makes one)")
        retriever = "ruie"
        if demonstrations is None:
            from openie.methods.ruie import RUIE

            demonstrations = list(RUIE(retriever_path).config.pool)
    if demonstrations is not None or retriever == "saved":
        # one path for every selector and pool count, the one grid cells take (openie.methods.demonstrations):
        # a pool read here is tagged with its corpus's own schema, so the same settings build the same prompts
        from openie.methods.demonstrations import load_pool_sources

        sources = [demonstrations] if isinstance(demonstrations, str) else list(demonstrations or [])
        sources = [str(Path(p).resolve()) if Path(p).is_file() else p for p in sources]
        try:
            selection = DemonstrationSpec(retriever, tuple(sources), k, seed, dict(retriever_options or {}),
                                          str(Path(retriever_path).resolve()) if retriever_path else None,
                                          str(Path(rerank).resolve()) if rerank else None, rerank_candidates,
                                          builder.task, data_root)
        except ValueError as err:
            raise ExtractError(str(err)) from None
        try:
            pool_records = load_pool_sources(sources, builder.task, data_root)
        except ValueError as err:
            raise ExtractError(str(err)) from None
        demos = demonstration_selector(selection, pool_records)
        demos_config = {"selector": retriever, **selection.describe(), "pool_size": len(pool_records),
                        "pool_sha256": pool_fingerprint(pool_records), "fingerprints": spec_fingerprints(selection)}
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
    elif engine_factory is not None or (registration is not None and not registration.needs_engine):
        dtype = dtype_name(engine_options.get("dtype"))  # a factory's engine: as its options say, if they say
    else:
        device = str(engine_options.get("device", "auto")) if backend == "hf" else "auto"
        choice = resolve_dtype(engine_options.get("dtype", "auto"), device)
        announce(choice)
        dtype = choice.dtype
        engine_options["dtype"] = dtype  # every engine of the run (Ray workers, EL4NER members) gets the same
    adapter_hashes = {name: adapter_content_hash(path) for name, path in adapters.items()}
    if adapter is not None and adapter not in adapter_hashes and engine is not None:
        adapter_hashes[adapter] = engine.adapter_fingerprint(adapter)
    config = {
        "config_version": CONFIG_VERSION, "method": method, "task": builder.task, "template": builder.version,
        "input": source.id, "backend": backend_id, "model": model_id, "adapters": adapter_hashes,
        "adapter": adapter, "schema": resolved_schema.to_dict(), "demonstrations": demos_config,
        "max_tokens": max_tokens, "temperature": 0.0, "constrained": constrained, "dtype": dtype,
        "engine_options": json.loads(json.dumps({k: v for k, v in engine_options.items() if k != "dtype"},
                                                sort_keys=True, default=str)),
    }
    if method == "el4ner":
        from openie.methods.el4ner import OPTIONS as EL4NER_OPTIONS
        from prompts.registry import default_registry

        registry = default_registry()
        config.update(template=[registry.get(t).version for t in (el4ner_stages.spans_template,
                                                                   el4ner_stages.type_template,
                                                                   el4ner_stages.verify_template)],
                      method_options={**EL4NER_OPTIONS, **method_options, "members": [
                          {"name": s.name, "backend": s.backend,
                           "model": model_id if (s.model == model and s.backend in ("auto", backend)) else s.model,
                           "adapter": s.adapter, "adapter_sha256": adapter_content_hash(s.adapter_path)
                           if s.adapter_path else adapter_hashes.get(s.adapter)} for s in el4ner_specs]})
    if method == "retrieveall":
        config.update(method_options={"config": retrieveall_config.config_file,
                                      "mode": (method_options or {}).get("mode", "routed"),
                                      "run": retrieveall_config.output})
    if method == "dspy":  # DSPy writes the prompts: its options and the contents of what they name
        config.update(task=dspy_options["task"], template=None, constrained=None,
                      max_tokens=dspy_options["max_tokens"] or max_tokens,
                      method_options={**dspy_options, "fingerprints": dspy_fingerprints})
    if registration is not None:
        described = getattr(registered_extractor, "describe", None)  # what the built model is (its weights)
        config.update(method_options={**registration.describe(registered_options), **(described() if described else {})})
        if not registration.needs_engine:  # its own model's identity replaces the engine's
            config.update(backend=None, model=None, adapters={}, dtype=None)
        if not registration.uses_template:
            config.update(template=None, max_tokens=None, constrained=None)
    spec = ExtractorSpec(template, resolved_schema.to_dict(), backend, model, adapters, adapter,
                         dict(engine_options or {}), max_tokens, batch_size, constrained,
                         data_root, str(cache) if cache is not None else None, engine_factory, selection, save_io,
                         method, dict(method_options or {}), str(output.parent / f"{output.name}.{method}"))

    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a+b") as out:
        _lock(out, output)
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
            _truncate_partial_line(out)

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
        _write_json_atomic(sidecar, state)

        has_output = os.fstat(out.fileno()).st_size > 0
        done = _verify_done(output, source, scan, tally, batch_size) if has_output else 0
        summary.resumed = done
        pending = max(0, total - done)
        io_file = io_path(output)
        if overwrite:
            io_file.unlink(missing_ok=True)
        _keep_lines(io_file, done)
        io_out = open(io_file, "a", encoding="utf-8") if save_io and pending else None
        counts = BatchCounts()
        cached = False
        t_loop = time.perf_counter()
        if pending:
            batches = _aligned_batches(source.records(scan, done, total), done, batch_size)
            bar: Any = None
            owned: Engine | None = None
            member_engines: list[Engine] = []  # el4ner members on other models
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
                    elif method == "retrieveall":
                        from openie.experiments.retrieveall import build_extractor

                        if engine is None:
                            owned = spec.build_engine()
                        extractor = build_extractor(retrieveall_config, engine or owned,
                                                    str((method_options or {}).get("mode", "routed")))
                    elif method == "el4ner":
                        from openie.methods.el4ner import EL4NERExtractor, build_members

                        def member_engine(b: str, m: str, member_adapters: dict[str, str] | None) -> Engine:
                            nonlocal owned
                            if m == model and b in ("auto", backend):
                                if engine is None and owned is None:
                                    owned = spec.build_engine()
                                return engine or owned  # type: ignore[return-value]
                            from openie.engines import create_engine

                            other = create_engine(backend if b == "auto" else b, m, member_adapters, cache=cache,
                                                  **dict(engine_options or {}))
                            member_engines.append(other)
                            return other

                        try:
                            extractor = EL4NERExtractor.from_options(
                                build_members(el4ner_specs, member_engine), resolved_schema, method_options,
                                data_root=data_root, batch_size=batch_size, show_progress=show_progress,
                                span_cache=output.parent / f"{output.name}.el4ner-pool-spans.jsonl")
                        except ValueError as err:
                            raise ExtractError(str(err)) from None
                    elif method == "dspy":
                        from openie.agent.options import from_options

                        if engine is None:
                            owned = spec.build_engine()
                        try:
                            extractor = from_options(engine or owned, resolved_schema, dspy_options,
                                                     data_root=data_root, adapter=adapter, max_tokens=max_tokens,
                                                     batch_size=batch_size,
                                                     workdir=output.parent / f"{output.name}.dspy")
                        except ValueError as err:
                            raise ExtractError(str(err)) from None
                    else:
                        if engine is None and (registration is None or registration.needs_engine):
                            owned = spec.build_engine()
                        extractor = spec.build(engine or owned, demos)
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
                    out.write("".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in preds).encode())
                    out.flush()
                    os.fsync(out.fileno())
                    counts += batch_counts
                    summary.processed += len(preds)
                    tally.add(gold, preds, scan.has_gold)
                    elapsed = max(time.perf_counter() - t_loop, 1e-9)
                    bar.update(len(preds))
                    bar.set_postfix_str(f"{counts.completion_tokens / elapsed:.0f} tok/s, "
                                        f"{summary.parse_problems} problems", refresh=False)
            finally:
                if io_out is not None:
                    io_out.close()
                if bar is not None:
                    bar.close()
                for e in (owned, *member_engines):
                    if e is not None and hasattr(e, "close"):
                        e.close()
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
    _write_json_atomic(sidecar, {**state, "status": "complete" if complete else "partial",
                                 "summary": summary.to_dict()})
    return summary
