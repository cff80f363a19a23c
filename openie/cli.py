"""The ``openie`` command line: data, evaluation, models, engines and adapters."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from openie.errors import OpenIEError
from openie.methods.registry import BUILTIN_METHODS
from openie.records import Record

app = typer.Typer(help="openie: LLM-based information extraction for researchers.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Corpora: list, statistics, conversion.", no_args_is_help=True)
models_app = typer.Typer(help="Embedded default models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
prompt_app = typer.Typer(help="Prompt templates: list and preview.", no_args_is_help=True)
app.add_typer(prompt_app, name="prompt")
adapters_app = typer.Typer(help="LoRA adapters: train, list, check.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the INFO and WARNING messages of vLLM, "
                                                                 "transformers, torch and Ray (hidden by default).")] = False,
) -> None:
    """openie: LLM-based information extraction for researchers."""
    from openie.verbosity import configure

    configure(verbose)


DTYPE_HELP = ("Model dtype: auto (bfloat16 only where the hardware has it natively: a GPU, or a CPU with "
              "AVX512_BF16 / AMX; float32 otherwise), float32, bfloat16, float16.")
ENGINE_OPTION_HELP = ("Engine keyword KEY=VALUE (JSON values), repeatable, e.g. max_model_len=2048, cpu_threads=2, "
                      "enable_prefix_caching=true; checked against the backend.")


def engine_options_arg(backend: str, dtype: str | None, items: list[str] | None) -> dict:
    """``--dtype`` and ``--engine-option KEY=VALUE`` as engine keyword arguments, checked against ``backend``."""
    from openie.engines import check_engine_options
    from openie.engines.hardware import resolve_dtype

    options = _key_values(items, "--engine-option")
    check_engine_options(backend, options)
    if dtype is not None:
        resolve_dtype(dtype, "cpu")  # a name check only: the device decides "auto" later
        options["dtype"] = dtype
    return options


def adapter_registry(root: Path | None = None):
    """The adapter catalogue: ``--registry``, else ``$OPENIE_HOME/adapters``."""
    from openie.adapters.registry import AdapterRegistry
    from openie.models import openie_home

    return AdapterRegistry(root or openie_home() / "adapters")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _key_values(items: list[str] | None, flag: str) -> dict:
    """``KEY=VALUE`` options; values parse as JSON where they can (numbers, booleans, lists)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def load_records_arg(source: str, data_root: str | None = None, fmt: str = "auto") -> list[Record]:
    """``NAME:SPLIT`` of a registered dataset, or a path to a JSONL / CoNLL / CoNLL04 file."""
    from openie.datasets import load_records

    return load_records(source, data_root=data_root, format=fmt)


@data_app.command("list")
def data_list(data_root: Annotated[str | None, typer.Option(help="Corpora folder (default: $OPENIE_DATA or ../shared/data).")] = None) -> None:
    """Registered datasets with their splits and labels."""
    from openie.datasets import DataRootNotFoundError, get_dataset, list_datasets, split_path
    from openie.datasets import data_root as find_root

    def available(name: str, split: str) -> bool:
        try:
            return split_path(name, split, data_root=data_root).is_file()
        except DataRootNotFoundError:
            return False

    try:
        root: Path | None = find_root(data_root)
    except DataRootNotFoundError:
        root = None
    typer.echo(f"{'name':<22} {'task':<7} {'lang':<5} {'splits':<22} labels")
    for name in list_datasets():
        spec = get_dataset(name)
        splits = ",".join(s + ("" if available(name, s) else "(missing)") for s in spec.splits)
        typer.echo(f"{name:<22} {spec.task:<7} {spec.lang:<5} {splits:<22} {', '.join(spec.labels)}")
    typer.echo(f"data root: {root if root else 'not found (set $OPENIE_DATA)'}")


@data_app.command("stats")
def data_stats(name: str, split: Annotated[list[str] | None, typer.Option(help="Split(s); default: all.")] = None,
               data_root: Annotated[str | None, typer.Option()] = None) -> None:
    """Sentence, token and per-type entity counts of a dataset's splits (or of a file)."""
    from openie.datasets import dataset_stats, get_dataset, list_datasets, load_dataset

    try:
        if name in list_datasets():
            spec = get_dataset(name)
            typer.echo(f"{name}: {spec.description}")
            for s in split or list(spec.splits):
                typer.echo(f"\n[{s}]\n{dataset_stats(load_dataset(name, s, data_root=data_root))}")
        else:
            typer.echo(str(dataset_stats(load_records_arg(name, data_root))))
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)


@data_app.command("convert")
def data_convert(source: Annotated[str, typer.Argument(help="NAME:SPLIT, an input file, or a folder (HF datasets "
                                                            "save_to_disk, brat).")],
                 output: Annotated[Path, typer.Argument(help="Output file (.jsonl, .conll, .spacy) or folder "
                                                             "(--to hf, --to brat).")],
                 input_format: Annotated[str, typer.Option("--from", help="auto (by extension or folder content), "
                                                           "conll, conll04, jsonl, hf, docbin, brat")] = "auto",
                 output_format: Annotated[str, typer.Option("--to", help="auto (by extension: .conll/.txt/.bio conll, "
                                                            ".spacy docbin, else jsonl), jsonl, conll, hf, docbin, "
                                                            "brat")] = "auto",
                 scheme: Annotated[str, typer.Option(help="Tag scheme when writing CoNLL or HF ner_tags: bio, iob1, "
                                                          "bilou, bioes.")] = "bio",
                 layout: Annotated[str, typer.Option(help="HF output layout: tokens (tokens + ner_tags ClassLabel), "
                                                          "spans (text + character-offset entities, holds any record), "
                                                          "auto (tokens when every record fits, else spans).")] = "tokens",
                 split: Annotated[str | None, typer.Option(help="Split to read from an HF DatasetDict folder.")] = None,
                 lang: Annotated[str, typer.Option(help="Language of records read from HF, DocBin or brat data that "
                                                        "do not state one.")] = "en",
                 data_root: Annotated[str | None, typer.Option()] = None) -> None:
    """Convert between CoNLL columns, CoNLL04 JSON, JSONL records, HF datasets, spaCy DocBin and brat standoff.

    Conversions to HF, DocBin and brat keep ids, text, tokens, entities, relations, events, scores
    and meta, or stop with an error naming the record and what the format cannot hold.
    """
    from openie.datasets import get_dataset, is_corpus_split
    from openie.interop import INTEROP_FORMATS, detect_format, read_format, write_format
    from openie.readers import write_conll
    from openie.records import write_jsonl

    write_formats = ("jsonl", "conll", *INTEROP_FORMATS)
    try:
        if output_format not in ("auto", *write_formats):
            raise ValueError(f"unknown output format {output_format!r}; known: auto, {', '.join(write_formats)}")
        in_fmt = input_format
        if in_fmt == "auto" and Path(source).exists():
            in_fmt = detect_format(source) or "auto"
        if in_fmt in INTEROP_FORMATS:
            records = read_format(source, in_fmt, split=split, lang=lang)
        else:
            if split is not None:
                raise ValueError("--split chooses a split of an HF DatasetDict; for a corpus write NAME:SPLIT")
            records = load_records_arg(source, data_root, input_format)
        fmt = output_format
        if fmt == "auto":
            fmt = {".conll": "conll", ".txt": "conll", ".bio": "conll", ".spacy": "docbin"}.get(output.suffix, "jsonl")
        if fmt == "conll":
            n = write_conll(records, output, scheme=scheme)
        elif fmt in INTEROP_FORMATS:
            labels = get_dataset(source.partition(":")[0]).labels if (
                is_corpus_split(source) and not Path(source).exists()) else None
            n = write_format(records, output, fmt, layout=layout, labels=labels, scheme=scheme)
        else:
            n = write_jsonl(records, output)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(f"wrote {n} records to {output} ({fmt})")


@app.command("eval")
def evaluate_cmd(gold: Annotated[str, typer.Option(help="NAME:SPLIT or a gold file.")],
                 pred: Annotated[str, typer.Option(help="Predicted records (JSONL).")],
                 data_root: Annotated[str | None, typer.Option()] = None,
                 json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores as JSON.")] = None) -> None:
    """Score predictions against gold: strict / boundary / partial span F1, relations, events."""
    from openie.metrics import evaluate

    try:
        gold_records = load_records_arg(gold, data_root)
        pred_records = load_records_arg(pred, data_root, "jsonl")
        report = evaluate(gold_records, pred_records)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(str(report))
    if json_out is not None:
        json_out.write_text(json.dumps({"gold": gold, "pred": pred, **report.to_dict()}, indent=2))


METHOD_HELP = ("A registered method (" + ", ".join(BUILTIN_METHODS) + ", or a plugin of the openie.methods entry "
               "points): openie method list shows each with its options (--method-option KEY=VALUE). Methods that "
               "pick their own demonstrations take --demos as their pool and --k as their k; a method with its own "
               "model (gliner) takes --model as its checkpoint.")


@app.command("extract")
def extract_cmd(
    input: Annotated[str, typer.Argument(help="Records to extract: a JSONL file, another records file, or NAME:SPLIT.")],
    output: Annotated[Path, typer.Argument(help="Predictions (JSONL, one per input record, in input order).")],
    schema_file: Annotated[Path | None, typer.Option("--schema", help="Schema file (JSON/YAML).")] = None,
    labels: Annotated[str | None, typer.Option(help="Entity labels a,b,c instead of a schema file.")] = None,
    template: Annotated[str, typer.Option(help="Prompt template, e.g. ner.ruie.v1, ner.json.v1.")] = "ner.ruie.v1",
    backend: Annotated[str, typer.Option(help="auto, vllm, vllm-server, hf, openai (any OpenAI-compatible endpoint: --base-url).")] = "auto",
    base_url: Annotated[str | None, typer.Option(help="--backend openai: the endpoint's API root, e.g. http://127.0.0.1:8000/v1 "
                                                      "(--model is its served model name; a key comes from the environment "
                                                      "variable named by --engine-option api_key_env=NAME).")] = None,
    model: Annotated[str, typer.Option(help="Base model: embedded name, HF id or path.")] = "gemma-3-270m",
    adapter: Annotated[list[str] | None, typer.Option("--adapter", help="Load a LoRA adapter NAME=PATH (repeatable).")] = None,
    use_adapter: Annotated[str | None, typer.Option(help="Adapter to extract with (default: the base model).")] = None,
    demos: Annotated[list[str] | None, typer.Option(help="Few-shot: demonstration pool (records file or NAME:SPLIT; repeat for one unified pool).")] = None,
    k: Annotated[int, typer.Option("--k", help="Demonstrations per record.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the demonstration draw.")] = 0,
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "icl",
    method_option: Annotated[list[str] | None, typer.Option(help="Method keyword KEY=VALUE (JSON values), e.g. threshold=0.4, labels=description.")] = None,
    retriever: Annotated[str, typer.Option(help="Demonstration selection: random, bm25, bm25s, dense, entity_knn, ruie, saved.")] = "random",
    retriever_path: Annotated[Path | None, typer.Option(help="RUIE work folder (ruie) or saved retriever (saved).")] = None,
    retriever_option: Annotated[list[str] | None, typer.Option(help="Retriever keyword KEY=VALUE (JSON values), e.g. model=minilm.")] = None,
    rerank: Annotated[Path | None, typer.Option(help="Rerank the retriever's top candidates with this reward model / cross-encoder.")] = None,
    rerank_candidates: Annotated[int | None, typer.Option(help="First-stage candidates to rerank (default 100).")] = None,
    batch_size: Annotated[int, typer.Option(help="Records per engine call (and per fsync'ed write).")] = 32,
    max_tokens: Annotated[int, typer.Option(help="Generated tokens per prompt at most.")] = 128,
    cache: Annotated[Path | None, typer.Option(help="Engine cache (SQLite); default $OPENIE_HOME/cache/generate.sqlite.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the engine cache.")] = False,
    limit: Annotated[int | None, typer.Option(help="Extract the first N valid records.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh instead of resuming OUTPUT.")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Run on Ray: 'local' starts one, or auto / ray://HOST:PORT.")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray workers, one engine each (default: GPUs, else 1).")] = None,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray worker (1 for one vLLM engine per GPU).")] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per Ray worker.")] = 1.0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    engine_option: Annotated[list[str] | None, typer.Option(help=ENGINE_OPTION_HELP)] = None,
    save_io: Annotated[bool, typer.Option("--save-io", help="Write each record's prompts, raw answers and finish "
                                                            "reasons to OUTPUT.io.jsonl.")] = False,
    strict_coverage: Annotated[bool, typer.Option("--strict-coverage", help="Stop at the first prediction that lost "
                                                  "input, an answer cut at --max-tokens or a span (its batch is written).")] = False,
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Extract a corpus into grounded predictions; resumes an interrupted run of the same configuration."""
    from openie.engines.base import EngineError
    from openie.engines.openai_endpoint import RequestsFailedError
    from openie.experiments.extract import extract_file
    from openie.models import openie_home

    try:
        if schema_file is not None and labels is not None:
            raise ValueError("pass either --schema or --labels, not both")
        schema = schema_file if schema_file is not None else (labels.split(",") if labels is not None else None)
        adapters = {}
        for item in adapter or []:
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"--adapter takes NAME=PATH, got {item!r}")
            adapters[name.strip()] = path.strip()
        cache_path = None if no_cache else (cache or openie_home() / "cache" / "generate.sqlite")
        options = _key_values(retriever_option, "--retriever-option")
        method_options = _key_values(method_option, "--method-option")
        own_model = _method_without_engine(method)
        if own_model is not None:  # its own model, not an LLM: --model names it, there is nothing to cache
            if own_model.model_option:
                method_options = {own_model.model_option: model, **method_options}
            cache_path = None
        pool = demos[0] if demos and len(demos) == 1 else (demos or None)
        engine_options = engine_options_arg(backend, None if own_model else dtype, engine_option)
        if own_model is not None and engine_options:
            raise ValueError(f"method {method!r} runs its own model: --engine-option does not apply")
        if base_url is not None and backend != "openai":
            raise ValueError(f"--base-url applies to --backend openai, not {backend!r}")
        if base_url is not None:
            engine_options["base_url"] = base_url
        if backend == "openai" and "base_url" not in engine_options:
            raise ValueError("--backend openai needs --base-url URL (the endpoint's API root, e.g. http://127.0.0.1:8000/v1)")
        if backend == "openai" and (adapters or use_adapter):
            raise ValueError("an endpoint serves its adapters as model names: pass the adapter's served name as --model "
                             "(no --adapter / --use-adapter with --backend openai)")
        failed_record = output.with_name(output.name + ".failed-requests.jsonl")
        summary = extract_file(input, output, schema=schema, method=method, template=template, backend=backend,
                               model=model, adapters=adapters, adapter=use_adapter, demonstrations=pool, k=k, seed=seed,
                               retriever=retriever, retriever_path=retriever_path, retriever_options=options,
                               rerank=rerank, rerank_candidates=rerank_candidates, method_options=method_options,
                               batch_size=batch_size, max_tokens=max_tokens, cache=cache_path, limit=limit,
                               overwrite=overwrite, show_progress=progress, data_root=data_root,
                               ray_address=ray_address, ray_workers=workers, ray_gpus_per_worker=gpus_per_worker,
                               ray_cpus_per_worker=cpus_per_worker, engine_options=engine_options, save_io=save_io,
                               strict_coverage=strict_coverage)
        failed_record.unlink(missing_ok=True)  # a record of an earlier run's failed requests: all retried now
    except RequestsFailedError as err:  # the endpoint's failures, for the user; a re-run retries them
        try:
            where = f"\nfailed requests: {err.write(failed_record)}"
        except OSError as write_err:
            where = f"\n(could not write the failed requests to {failed_record}: {write_err})"
        _fail(EngineError(f"{err}{where}"))
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(str(summary))


def _method_without_engine(method: str):
    """The registration of a method that runs no LLM engine (its own model), else ``None``."""
    from openie.methods.registry import MethodError, get_method

    try:
        reg = get_method(method)
    except MethodError:
        return None  # extract_file names the unknown method
    return None if reg.needs_engine else reg


@models_app.command("list")
def models_list() -> None:
    """Embedded default models (installed from PyPI, loaded offline)."""
    from openie.models import DEFAULT_MODELS

    for name, model in DEFAULT_MODELS.items():
        extra = "  [optional: pip install -e '.[qwen]']" if model.optional else ""
        licence = f"  licence: {model.licence}" if model.licence else ""
        typer.echo(f"{name:<28} {model.description}{licence}{extra}")


@models_app.command("prepare")
def models_prepare(names: Annotated[list[str] | None, typer.Argument(
        help="Default: every embedded model of the default install (optional ones by name).")] = None) -> None:
    """Convert the packaged GGUF models into HF checkpoints once (cached under $OPENIE_HOME)."""
    from openie.models import DEFAULT_MODELS, resolve_model

    for name in names or [n for n, m in DEFAULT_MODELS.items() if not m.optional]:
        try:
            typer.echo(f"{name}: {resolve_model(name)}")
        except (OpenIEError, OSError, ValueError) as err:
            _fail(err)


@prompt_app.command("list")
def prompt_list(template_dir: Annotated[list[Path] | None, typer.Option(help="Extra template directories.")] = None) -> None:
    """Templates by name, with their format, task and version hash."""
    from prompts.registry import TemplateRegistry

    reg = TemplateRegistry(template_dir or [])
    for name in reg.names():
        t = reg.get(name)
        typer.echo(f"{name:<24} format={t.format:<9} task={t.task:<4} {t.version}  {t.path}")


@prompt_app.command("render")
def prompt_render(template: Annotated[str, typer.Option(help="Template name, e.g. ner.ruie.v1.")],
                  data: Annotated[str, typer.Option(help="NAME:SPLIT or a records file.")],
                  index: Annotated[int, typer.Option(help="Which record to render.")] = 0,
                  demos: Annotated[int, typer.Option(help="Use the next N records of the same data as demonstrations.")] = 0,
                  schema_file: Annotated[Path | None, typer.Option("--schema", help="Schema file (default: the dataset's).")] = None,
                  template_dir: Annotated[list[Path] | None, typer.Option()] = None,
                  data_root: Annotated[str | None, typer.Option()] = None) -> None:
    """Print the prompt(s) a template makes for one record, and the gold target."""
    from openie.datasets import dataset_schema, list_datasets
    from openie.schema import Schema
    from prompts.builder import PromptBuilder
    from prompts.registry import TemplateRegistry

    try:
        records = load_records_arg(data, data_root)
        if not 0 <= index < len(records):
            raise ValueError(f"--index {index} is out of range: {data} has {len(records)} records")
        name = data.partition(":")[0]
        if schema_file is not None:
            schema = Schema.load(schema_file)
        elif name in list_datasets():
            schema = dataset_schema(name)
        else:
            schema = Schema.from_labels(sorted({e.label for r in records for e in r.entities}))
        builder = PromptBuilder(template, schema, registry=TemplateRegistry(template_dir or []))
        record = records[index]
        shots = records[index + 1: index + 1 + demos]
        for p in builder.build(record, shots):
            typer.echo(p.text)
            typer.secho(f"--- gold target:{builder.target(record, p)}   [{p.template}]\n", fg=typer.colors.GREEN)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)


@adapters_app.command("train")
def adapters_train(
    name: Annotated[str, typer.Option(help="Adapter name in the registry.")],
    data: Annotated[str, typer.Option(help="NAME:SPLIT or a records file with gold annotations.")],
    base: Annotated[str, typer.Option(help="Base model: embedded name, HF id or path.")] = "gemma-3-270m",
    template: Annotated[str, typer.Option(help="Prompt template that turns records into (prompt, target) pairs.")] = "ner.ruie.v1",
    limit: Annotated[int | None, typer.Option(help="Use the first N records.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: one epoch).")] = None,
    epochs: Annotated[float, typer.Option()] = 1.0,
    rank: Annotated[int, typer.Option()] = 8,
    lr: Annotated[float, typer.Option()] = 2e-4,
    batch_size: Annotated[int, typer.Option()] = 4,
    seed: Annotated[int, typer.Option()] = 0,
    save_every: Annotated[int, typer.Option()] = 50,
    output_dir: Annotated[Path | None, typer.Option(help="Work folder with checkpoints (resumed if present).")] = None,
    registry: Annotated[Path | None, typer.Option(help="Adapter registry folder.")] = None,
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Fine-tune a LoRA adapter (SFT, loss on the target) and register it; resumes an interrupted run."""
    from openie.adapters.training import train_lora
    from openie.datasets import dataset_schema, list_datasets
    from openie.models import openie_home
    from openie.schema import Schema
    from prompts.builder import PromptBuilder

    try:
        records = load_records_arg(data, data_root)[:limit]
        dname = data.partition(":")[0]
        schema = (dataset_schema(dname) if dname in list_datasets()
                  else Schema.from_labels(sorted({e.label for r in records for e in r.entities})))
        builder = PromptBuilder(template, schema, schema_seed=seed)
        pairs = builder.training_pairs(records)
        reg = adapter_registry(registry)
        result = train_lora(base, pairs, output_dir or openie_home() / "training" / name, rank=rank, lr=lr,
                            epochs=epochs, max_steps=max_steps, batch_size=batch_size, seed=seed,
                            save_every=save_every, registry=reg, name=name, task=builder.task,
                            labels=schema.entity_labels, languages=sorted({r.lang for r in records}))
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(f"adapter {name!r}: {result.steps} steps, final loss {result.final_loss:.4f}, "
               f"{result.seconds:.0f} s -> {reg.get(name).path}")


@adapters_app.command("list")
def adapters_list(registry: Annotated[Path | None, typer.Option()] = None) -> None:
    """Registered adapters with base model, rank, task and languages."""
    for info in adapter_registry(registry).list():
        typer.echo(f"{info.name:<20} rank={info.rank:<3} task={info.task or '-':<5} "
                   f"langs={','.join(info.languages) or '-':<8} base={info.base_model}  {info.vllm_name}")


@app.command("serve")
def serve(
    adapter: Annotated[list[str] | None, typer.Option(help="Registered adapter(s) to load at start.")] = None,
    base: Annotated[str, typer.Option(help="Base model: embedded name, HF id or path.")] = "gemma-3-270m",
    port: Annotated[int | None, typer.Option()] = None,
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    engine_option: Annotated[list[str] | None, typer.Option(help=ENGINE_OPTION_HELP)] = None,
    max_lora_rank: Annotated[int, typer.Option()] = 16,
    registry: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Start a vLLM OpenAI-compatible server with registered adapters; Ctrl-C stops it."""
    import time

    from openie.engines.vllm_server import VLLMServerEngine
    from openie.models import resolve_model

    try:
        reg = adapter_registry(registry)
        base_path = resolve_model(base)
        infos = [reg.check(a, base_path, max_lora_rank) for a in adapter or []]
        options = engine_options_arg("vllm-server", dtype, engine_option)
        engine = VLLMServerEngine(base_path, adapters={i.name: i.path for i in infos}, port=port,
                                  max_lora_rank=max_lora_rank, **options)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(f"serving {base} at {engine.url} with adapters: "
               f"{', '.join(f'{i.name} (as {engine.served_name(i.name)})' for i in infos) or 'none'}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        engine.close()


# --- experiments ------------------------------------------------------------------------------

experiment_app = typer.Typer(help="Experiment grids from YAML configs: validate, run (resumable), report.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("cells")
def experiment_cells(config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")]) -> None:
    """Validate a config and list the cells its grid expands into (nothing runs)."""
    from openie.experiments.grid import load_config

    try:
        cells = load_config(config)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    for c in cells:
        typer.echo(f"{c.name}  {', '.join(f'{k}={v}' for k, v in c.values.items())}")
    typer.echo(f"{len(cells)} cell(s), config valid")


@experiment_app.command("run")
def experiment_run(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML), or a cell's config.yaml.")],
    out: Annotated[Path | None, typer.Option(help="Results folder (default: experiments/results/NAME; "
                                                  "a cell's own config.yaml runs in its own folder).")] = None,
    force: Annotated[bool, typer.Option(help="Run finished cells again from scratch.")] = False,
    report: Annotated[bool, typer.Option(help="Write report.md / report.csv / plots afterwards.")] = True,
    dtype: Annotated[str | None, typer.Option(help="Override every cell's engine.dtype. " + DTYPE_HELP)] = None,
    engine_option: Annotated[list[str] | None, typer.Option(
        help="Override (add to) every cell's engine.options: KEY=VALUE (JSON values), repeatable.")] = None,
) -> None:
    """Run every cell of a grid; finished cells are skipped and half-done cells continue.

    ``--dtype`` / ``--engine-option`` change the cells' configs (each cell's config.yaml records
    them, so its re-run command reproduces it); cells finished with other settings run again.
    """
    from openie.experiments.report import write_report
    from openie.experiments.run import default_output_dir, run_experiment

    try:
        from openie.experiments.grid import load_config

        cells = load_config(config)
        root = out if out is not None else default_output_dir(cells, config)
        override = {"options": _key_values(engine_option, "--engine-option")}
        if dtype is not None:
            override["dtype"] = dtype
        outcomes = run_experiment(config, root, force=force, engine_override=override)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    done = sum(o.status == "finished" for o in outcomes)
    typer.echo(f"{done} cell(s) run, {len(outcomes) - done} skipped (finished before) -> {root}")
    if report:
        rep = write_report(root)
        typer.echo(f"report: {rep.markdown}")


@experiment_app.command("report")
def experiment_report(
    root: Annotated[Path, typer.Argument(help="Results folder of an experiment.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the report (default: the results folder).")] = None,
) -> None:
    """Collect finished cells into report.md (table + re-run commands), report.csv and PNG plots."""
    from openie.experiments.report import write_report

    try:
        rep = write_report(root, out)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(f"{len(rep.rows)} cells -> {rep.markdown}, {rep.csv}, {', '.join(str(p) for p in rep.plots)}")


ruie_app = typer.Typer(help="RUIE: train a demonstration retriever from LLM preferences (resumable stages).",
                       no_args_is_help=True)
app.add_typer(ruie_app, name="ruie")


@ruie_app.command("fit")
def ruie_fit(
    config: Annotated[Path, typer.Argument(help="RUIE fit config (YAML: ruie, engine, workdir, cache).")],
    workdir: Annotated[Path | None, typer.Option(help="Work folder (default: the config's workdir).")] = None,
    until: Annotated[str, typer.Option(help="Stop after this stage.")] = "evaluation",
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Run or resume queries -> candidates -> LLM preferences -> reward model -> distilled retriever -> evaluation."""
    from openie.methods.ruie import RUIE, load_fit_plan

    try:
        plan = load_fit_plan(config, workdir)
        ruie = RUIE(plan.workdir, plan.config, data_root=data_root)
        report = ruie.fit(plan.create_engine(), until=until)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps(report, indent=2))


@ruie_app.command("status")
def ruie_status(workdir: Annotated[Path, typer.Argument(help="A RUIE work folder.")]) -> None:
    """Which stages are done, with their wall-clock seconds."""
    from openie.methods.ruie import RUIE

    ruie = RUIE(workdir)
    times_path = workdir / "timings.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    for stage, state in ruie.status().items():
        typer.echo(f"{stage:<12} {state:<5} {times.get(stage, '')}")

gliner_app = typer.Typer(help="GLiNER: train on registered corpora, evaluate, predict long texts.", no_args_is_help=True)
app.add_typer(gliner_app, name="gliner")


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of keys at the top level")
    return data


@gliner_app.command("train")
def gliner_train(
    config: Annotated[Path, typer.Argument(help="Training config (YAML: train, dev, init, max_steps, max_minutes, ...; output).")],
    output: Annotated[Path | None, typer.Option(help="Output folder (default: the config's output).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in the output folder.")] = True,
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Fine-tune GLiNER (checkpoints, resume, time budget), evaluate on dev, save the recipe beside the model."""
    from openie.tools.gliner import GLiNERTrainConfig, train_gliner

    try:
        data = _read_yaml(config)
        out = output or data.pop("output", None)
        data.pop("output", None)
        if out is None:
            raise ValueError(f"{config}: give an output folder (output: key or --output)")
        out = (config.parent / out) if output is None and not Path(out).is_absolute() else Path(out)
        summary = train_gliner(GLiNERTrainConfig.from_dict(data, str(config)), out, resume=resume,
                               data_root=data_root, log=typer.echo)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "loss_history"}, indent=2))


@gliner_app.command("eval")
def gliner_eval(
    model: Annotated[str, typer.Option(help="A GLiNER checkpoint folder (or hub id).")],
    data: Annotated[list[str], typer.Option(help="NAME:SPLIT corpora (repeatable); each is scored on its own types.")],
    labels: Annotated[str, typer.Option(help="What the model reads per type: name or description.")] = "name",
    threshold: Annotated[float, typer.Option()] = 0.5,
    limit: Annotated[int | None, typer.Option(help="First N records per corpus.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the figures as JSON here.")] = None,
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Strict micro F1 per corpus (zero-shot on corpora whose types the model never saw)."""
    from openie.tools.gliner import GLiNERTool, evaluate_gliner

    try:
        tool = GLiNERTool.load(model)
        results = evaluate_gliner(tool, data, threshold=threshold, label_prompts=labels, limit=limit,
                                  data_root=data_root)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    report = {"model": tool.source, "weights": tool.fingerprint(), "labels": labels, "threshold": threshold,
              "limit": limit, "results": results}
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
    for src, r in results.items():
        typer.echo(f"{src:<24} P {r['precision']:.4f}  R {r['recall']:.4f}  F1 {r['f1']:.4f}  ({r['records']} records)")


@gliner_app.command("predict")
def gliner_predict(
    model: Annotated[str, typer.Option(help="A GLiNER checkpoint folder (or hub id).")],
    labels: Annotated[list[str], typer.Option("--label", help="An entity type, or TYPE=DESCRIPTION (repeatable).")],
    text: Annotated[str | None, typer.Option(help="A text (any length); or --file.")] = None,
    file: Annotated[Path | None, typer.Option(help="A plain-text file (any length).")] = None,
    threshold: Annotated[float, typer.Option()] = 0.5,
    nested: Annotated[bool, typer.Option(help="Allow nested entities (never partial overlaps).")] = False,
) -> None:
    """Entities with global character offsets, one JSON object per line."""
    from openie.tools.gliner import GLiNERTool

    if (text is None) == (file is None):
        _fail(ValueError("give exactly one of --text and --file"))
    body = text if text is not None else file.read_text(encoding="utf-8")  # type: ignore[union-attr]
    described = {lab.partition("=")[0]: lab.partition("=")[2] or lab.partition("=")[0] for lab in labels}
    try:
        tool = GLiNERTool.load(model)
        found = tool.predict([body], described if any("=" in lab for lab in labels) else list(described),
                             threshold=threshold, flat_ner=not nested)[0]
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    for e in found:
        typer.echo(json.dumps(e.to_dict(), ensure_ascii=False))

ner_retriever_app = typer.Typer(help="NER Retriever: type-described entity retrieval over mid-layer LLM vectors.",
                                no_args_is_help=True)
app.add_typer(ner_retriever_app, name="ner-retriever")


@ner_retriever_app.command("experiment")
def ner_retriever_experiment(
    config: Annotated[Path, typer.Argument(help="Type-retrieval config (YAML).")],
    rows: Annotated[list[str] | None, typer.Option("--row", help="Run only these rows (repeatable).")] = None,
) -> None:
    """Layer sweep, projector training, indexing and R-precision against BM25 / dense baselines (resumable)."""
    from openie.experiments.type_retrieval import TypeRetrievalConfig, run_type_retrieval

    try:
        cfg = TypeRetrievalConfig.load(config)
        if rows:
            cfg.rows = list(rows)
        summary = run_type_retrieval(cfg, log=typer.echo)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(Path(cfg.workdir).parent / "report.md")
    typer.echo(json.dumps({row: {c: r["macro_r_precision"] for c, r in per.items()}
                           for row, per in summary["results"].items()}, indent=2))


baner_app = typer.Typer(help="BANER: boundary-aware LLM span detection, prototype typing, LoRAHub.", no_args_is_help=True)
app.add_typer(baner_app, name="baner")


@baner_app.command("experiment")
def baner_experiment(config: Annotated[Path, typer.Argument(help="BANER experiment config (YAML).")]) -> None:
    """Source adapters (plain / contrastive), K-shot CrossNER episodes, LoRAHub, the ablation table (resumable)."""
    from openie.methods.baner.fit import run_baner_experiment

    try:
        results = run_baner_experiment(config)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(Path(results["config"]["workdir"]).parent / "report.md")


retrieveall_app = typer.Typer(help="RetrieveAll: per-language LoRA adapters with input-aware routing.",
                              no_args_is_help=True)
app.add_typer(retrieveall_app, name="retrieveall")


@retrieveall_app.command("experiment")
def retrieveall_experiment(
    config: Annotated[Path, typer.Argument(help="RetrieveAll experiment config (YAML).")],
    mode: Annotated[list[str] | None, typer.Option("--mode", help="Evaluate only these modes (shared, routed, oracle).")] = None,
) -> None:
    """Language data, augmented prompts, per-language + shared adapters, shared / routed / oracle F1 (resumable)."""
    from openie.methods.retrieveall.fit import RetrieveAllConfig, run_retrieveall_experiment

    try:
        summary = run_retrieveall_experiment(config, modes=mode or None, log=typer.echo)
        report = Path(RetrieveAllConfig.load(config).output) / "report.md"
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(report)
    typer.echo(json.dumps(summary["scores"], indent=2))


@ner_retriever_app.command("index")
def ner_retriever_index(
    retriever: Annotated[Path, typer.Option(help="A saved NER Retriever folder (its projector and encoder recipe).")],
    data: Annotated[str, typer.Option(help="NAME:SPLIT or a records file to index.")],
    output: Annotated[Path, typer.Option(help="Folder for the new retriever (the same projector, this index).")],
    detector: Annotated[str, typer.Option(help="Mentions from: gold, or gliner (with --gliner-model).")] = "gold",
    gliner_model: Annotated[str | None, typer.Option(help="GLiNER checkpoint for --detector gliner.")] = None,
    gliner_label: Annotated[list[str] | None, typer.Option(help="Generic prompts for GLiNER spans (repeatable).")] = None,
    threshold: Annotated[float, typer.Option(help="GLiNER span threshold.")] = 0.3,
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Index a corpus's mentions with a trained retriever (batched, with progress)."""
    from openie.tools.ner_retriever import GLiNERMentions, GoldMentions, NERRetriever

    try:
        ret = NERRetriever.load(retriever)
        ret.index = None
        if detector == "gold":
            found = GoldMentions()
        elif detector == "gliner":
            if gliner_model is None:
                raise ValueError("--detector gliner needs --gliner-model")
            from openie.tools.gliner import GLiNERTool

            found = GLiNERMentions(GLiNERTool.load(gliner_model), gliner_label or ["entity"], threshold)
        else:
            raise ValueError(f"unknown detector {detector!r}; choose gold or gliner")
        records = load_records_arg(data, data_root)
        index = ret.index_records(records, found)
        ret.save(output)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(f"{len(index)} mentions of {len(index.documents)} documents -> {output}")


@app.command("retrieve-type")
def retrieve_type(
    description: Annotated[str, typer.Argument(help="A type in plain words, e.g. 'a programming language'.")],
    retriever: Annotated[Path, typer.Option(help="A saved NER Retriever folder with an index.")],
    k: Annotated[int, typer.Option("-k", "--k", help="Documents to return.")] = 10,
    data: Annotated[str | None, typer.Option(help="NAME:SPLIT or records file the index was built from "
                                                  "(shows the texts).")] = None,
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Documents that mention an entity of the described type, best first (NER Retriever)."""
    from openie.tools.ner_retriever import NERRetriever

    try:
        ret = NERRetriever.load(retriever)
        hits = ret.search(description, k)
        texts = {r.id: r.text for r in load_records_arg(data, data_root)} if data else {}
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    for rank, h in enumerate(hits, 1):
        line = {"rank": rank, "doc_id": h.doc_id, "score": round(h.score, 4), "mention": list(h.mention)}
        if h.doc_id in texts:
            line["mention_text"] = texts[h.doc_id][h.mention[0]:h.mention[1]]
            line["text"] = texts[h.doc_id]
        typer.echo(json.dumps(line, ensure_ascii=False))


method_app = typer.Typer(help="Extraction methods: list them, start a new one.", no_args_is_help=True)
app.add_typer(method_app, name="method")


@method_app.command("list")
def method_list() -> None:
    """Extraction methods (built-in, then plugins of the openie.methods entry points), with their options."""
    from openie.methods.registry import get_method, registered_methods

    for name in registered_methods():
        try:
            reg = get_method(name)
        except (OpenIEError, ImportError) as err:  # a built-in whose optional extra is missing
            typer.echo(f"{name:<12} unavailable: {err}")
            continue
        traits = [t for t, on in (("no LLM engine", not reg.needs_engine), ("no template", not reg.uses_template),
                                  ("Ray", reg.ray), ("fit: openie method fit", reg.fit is not None)) if on]
        if reg.demonstration_options:
            traits.append(f"--demos -> {reg.demonstration_options[0]}, --k -> {reg.demonstration_options[1]}")
        elif reg.takes_demonstrations:
            traits.append("demonstrations")
        typer.echo(f"{reg.key:<16} {reg.description}" + (f" [{'; '.join(traits)}]" if traits else ""))
        for key, default in reg.defaults().items():
            typer.echo(f"{'':<18}{key} = {default!r}")


@method_app.command("fit")
def method_fit(name: Annotated[str, typer.Argument(help="A method with a fit (openie method list says which).")],
               config: Annotated[Path, typer.Argument(help="Its fit config (YAML).")]) -> None:
    """Train a method from its fit config (resumable: finished stages are skipped); prints its report."""
    from openie.methods.registry import get_method

    try:
        reg = get_method(name)
        if reg.fit is None:
            raise ValueError(f"method {name!r} has nothing to fit")
        report = reg.fit(config, typer.echo)
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(report)


@method_app.command("new")
def method_new(
    name: Annotated[str, typer.Argument(help="The method's name (a lowercase Python identifier).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where the project folder openie-NAME is made.")] = Path("."),
) -> None:
    """Write a working method package (pipeline, options, registration, entry point, test) to start from."""
    from openie.methods.scaffold import new_method

    try:
        root = new_method(name, directory)
    except (OpenIEError, OSError) as err:
        _fail(err)
    typer.echo(f"method {name!r} -> {root}\n  cd {root} && pip install --no-deps --no-build-isolation -e . "
               f"&& python -m pytest tests && openie method list")


@app.command("quickstart")
def quickstart(
    out: Annotated[Path, typer.Option(help="Output folder (predictions, cache, report.html); a re-run resumes.")] = Path("openie-quickstart"),
    limit: Annotated[int, typer.Option(help="Evaluation records per arm (dev sentences).")] = 50,
    k: Annotated[int, typer.Option("--k", help="Demonstrations per prompt in both arms.")] = 4,
    retriever: Annotated[str, typer.Option(help="How the second arm picks demonstrations: bm25s, bm25, dense, entity_knn.")] = "bm25s",
    data: Annotated[str, typer.Option(help="Registered corpus with train and dev splits (default: the sample shipped inside openie).")] = "conll2003_sample",
    model: Annotated[str, typer.Option(help="Base model: embedded name, HF id or path.")] = "gemma-3-270m",
    backend: Annotated[str, typer.Option(help="auto (vLLM if installed), vllm, hf.")] = "auto",
    template: Annotated[str, typer.Option(help="Prompt template.")] = "ner.ruie.v1",
    max_tokens: Annotated[int, typer.Option(help="Generated tokens per answer at most.")] = 48,
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    engine_option: Annotated[list[str] | None, typer.Option(help=ENGINE_OPTION_HELP)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bars.")] = True,
    data_root: Annotated[str | None, typer.Option()] = None,
) -> None:
    """The main job on the embedded defaults: random vs retrieved demonstrations, side by side.

    Few-shot NER with Gemma-3-270M on a CoNLL-2003 sample that ships inside openie: the same dev
    sentences twice, with k random and with k BM25-retrieved train demonstrations. Prints both F1
    lines and their difference and writes an HTML page (gold vs predicted spans, prompts, raw
    answers). Only the model it runs is prepared; nothing outside PyPI is needed.
    """
    from openie.engines import vllm_available
    from openie.experiments.quickstart import run_quickstart

    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    try:
        options = engine_options_arg(backend, dtype, engine_option)
        if backend == "vllm":
            options.setdefault("cpu_threads", os.cpu_count())
            options.setdefault("max_model_len", 2048)
        result = run_quickstart(out, model=model, backend=backend, data=data, limit=limit, k=k, retriever=retriever,
                                template=template, max_tokens=max_tokens, engine_options=options,
                                data_root=data_root, show_progress=progress, say=lambda m: typer.echo(m, err=True))
    except (OpenIEError, OSError, ValueError) as err:
        _fail(err)
    for line in result.lines():
        typer.echo(line)
    typer.echo(f"report: {result.page}  ({result.seconds['total']:.0f} s in all; "
               + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items() if k != "total") + ")")


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    app()


if __name__ == "__main__":
    sys.exit(main())
