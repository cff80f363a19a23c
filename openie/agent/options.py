"""A DSPy extractor from plain options: the one recipe experiment configs and ``openie extract`` share.

An experiment cell (``method: {name: dspy, options: {...}}``) and ``openie extract --method dspy
--method-option KEY=VALUE`` name the same :data:`OPTIONS`. :func:`check_options` reads them
before anything loads (an error names the offending option, so a config error can point at its
line) and resolves what defaults depend on (the task, the pool, the tools that are configured);
:func:`from_options` builds the tools, the retriever and the program and wraps them in a
:class:`~openie.agent.modules.DSPyExtractor` over the run's engine (already wrapped in the openie
cache by the caller when a cache is set). :func:`option_fingerprints` hashes the contents of the
folders the options only name (GLiNER checkpoint, NER Retriever, compiled program, saved
retriever), so a retrained model or a recompiled program makes a finished run stale.

Options (defaults in :data:`OPTIONS`):

* ``program``: ``predict`` | ``chain_of_thought`` | ``agent`` (``dspy.ReAct`` with openie tools).
* ``tools`` (agent only): a list (or comma-separated string) of :data:`TOOL_NAMES`; default
  every tool that is configured: ``type_descriptions`` always, ``propose_spans`` with ``gliner``,
  ``similar_mentions`` with ``ner_retriever``, ``retrieve_demonstrations`` with a pool or a
  saved retriever.
* ``gliner``: a GLiNER checkpoint (folder or hub id) for ``propose_spans``.
* ``ner_retriever``: a saved NER Retriever folder *with its index* (``openie ner-retriever
  index``) for ``similar_mentions``; the documents it indexed must all be in ``pool``.
* ``retriever``: ``bm25`` | ``bm25s`` | ``dense`` (indexed over ``pool``) or ``saved:PATH`` (a
  retriever saved with ``save``), for ``retrieve_demonstrations`` and the kNN demonstrations.
* ``pool``: ``NAME:SPLIT`` or a records file (or a list of them), read for ``task``; default the
  run's (an experiment: its dataset's train split; ``openie extract``: ``--demos``).
* ``knn_k``: demonstrations per input chosen by ``retriever`` (0: none).
* ``max_iters``: the agent's steps at most.
* ``dspy_adapter``: ``chat`` | ``chat_only`` | ``json`` (how DSPy formats prompts and reads answers;
  ``json`` decodes every answer under the output fields' JSON schema, labels and tool names as enums).
* ``max_text_chars``: under ``json``, the characters a free-text field (a reasoning, a thought) may take.
* ``compiled``: a folder written by :func:`~openie.agent.modules.save_program` (an optimised
  program): loaded instead of built; ``program``, ``knn_k`` and ``max_iters`` come from it, its
  tools default to those it was saved with.
* ``optimize``: compile the program before extracting, a mapping: ``optimizer`` (``bootstrap``
  (default) | ``mipro``), ``train`` (``NAME:SPLIT`` or records file(s); default ``pool``),
  ``n_train`` (a seeded sample of that many training records; default 16), ``seed``, and the
  optimiser's own options (:data:`~openie.agent.optimizers.BOOTSTRAP_OPTIONS`,
  :data:`~openie.agent.optimizers.MIPRO_OPTIONS`). The compiled program is saved in the run's
  work folder with ``openie_compile.json`` (training ids, LM calls, seconds) and reloaded by a
  re-run with the same options; ``compiled`` then points other runs at it.
* ``max_tokens``: generated tokens per LM call; default the run's.
* ``task``: ``ner`` | ``re`` | ``ee``; default the run's (an experiment's ``task``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from openie.agent.modules import (
    DSPY_ADAPTERS,
    PROGRAM_FILE,
    PROGRAM_KINDS,
    SPEC_FILE,
    DSPyExtractor,
    ProgramError,
    ProgramSpec,
    load_program,
    program_state_digest,
    save_program,
)
from openie.agent.signatures import TASKS
from openie.agent.structured import MAX_TEXT_CHARS
from openie.engines.base import Engine
from openie.records import Record
from openie.schema import Schema

OPTIONS: dict[str, Any] = {"program": "predict", "tools": None, "gliner": None, "ner_retriever": None,
                           "retriever": "bm25", "pool": None, "knn_k": 0, "max_iters": 5, "dspy_adapter": "chat",
                           "max_text_chars": MAX_TEXT_CHARS, "compiled": None, "optimize": None, "max_tokens": None, "task": None}
TOOL_NAMES = ("type_descriptions", "propose_spans", "similar_mentions", "retrieve_demonstrations")
RETRIEVERS = ("bm25", "bm25s", "dense")  # or saved:PATH
SAVED_PREFIX = "saved:"


class DSPyOptionsError(ProgramError):
    """An option that cannot be used as given; ``key`` names it (None: the options as a whole)."""

    def __init__(self, reason: str, key: str | None = None):
        self.reason, self.key = reason, key
        super().__init__(f"method options: {key + ': ' if key else ''}{reason}")


def _int(options: Mapping[str, Any], key: str, minimum: int) -> int:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DSPyOptionsError(f"expected an integer, got {value!r}", key)
    if value < minimum:
        raise DSPyOptionsError(f"must be at least {minimum}, got {value}", key)
    return value


def _is_local(path: str) -> bool:
    return path.startswith(("./", "../", "/", "~"))


def _pool_sources(value: Any) -> list[str]:
    sources = [value] if isinstance(value, str) else value
    if not isinstance(sources, list | tuple) or not all(isinstance(s, str) and s for s in sources) or not sources:
        raise DSPyOptionsError(f"expected NAME:SPLIT or a records file (or a list of them), got {value!r}", "pool")
    from openie.datasets import get_dataset, list_datasets

    for source in sources:
        name, sep, split = source.partition(":")
        if sep and name in list_datasets() and not Path(source).exists():
            splits = get_dataset(name).splits
            if split not in splits:
                raise DSPyOptionsError(f"{source!r}: {name} has no split {split!r} (splits: {', '.join(splits)})",
                                       "pool")
        elif not Path(source).expanduser().is_file():
            raise DSPyOptionsError(f"{source!r} is neither NAME:SPLIT of a registered dataset nor an existing "
                                   "records file", "pool")
    return list(sources)


def saved_spec(path: str | Path) -> dict[str, Any]:
    """What a folder of :func:`~openie.agent.modules.save_program` holds besides the state: spec, schema, tools."""
    path = Path(path).expanduser()
    if not (path / SPEC_FILE).is_file() or not (path / PROGRAM_FILE).is_file():
        raise DSPyOptionsError(f"{path} is not a saved DSPy program ({SPEC_FILE} and {PROGRAM_FILE} expected; "
                               "save_program writes them)", "compiled")
    return json.loads((path / SPEC_FILE).read_text(encoding="utf-8"))


def check_options(options: Mapping[str, Any], *, task: str | None = None,
                  default_pool: str | Sequence[str] | None = None) -> dict[str, Any]:
    """The options checked and resolved (task, pool, tools filled in); nothing is loaded.

    ``task`` is the run's task (an option ``task`` must agree with it); ``default_pool`` the
    pool used when the options give none. Raises :class:`DSPyOptionsError` naming the option.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise DSPyOptionsError(f"unknown DSPy options {unknown}; known: {sorted(OPTIONS)}")
    o = {**OPTIONS, **options}
    if o["task"] is not None and task is not None and o["task"] != task:
        raise DSPyOptionsError(f"is {o['task']!r} but the run's task is {task!r}", "task")
    o["task"] = o["task"] or task or "ner"
    if o["task"] not in TASKS:
        raise DSPyOptionsError(f"unknown task {o['task']!r}; choose one of {', '.join(TASKS)}", "task")

    saved_tools: list[str] | None = None
    if o["compiled"] is not None:
        if not isinstance(o["compiled"], str):
            raise DSPyOptionsError(f"expected a folder written by save_program, got {o['compiled']!r}", "compiled")
        saved = saved_spec(o["compiled"])
        spec = saved["spec"]
        if spec.get("task") != o["task"]:
            raise DSPyOptionsError(f"{o['compiled']} extracts task {spec.get('task')!r}, the run's task is "
                                   f"{o['task']!r}", "compiled")
        structure = {"program": spec.get("kind", "predict"), "knn_k": spec.get("knn_k", 0),
                     "max_iters": spec.get("max_iters", 5)}
        for key, value in structure.items():
            if key in options and options[key] != value:
                raise DSPyOptionsError(f"the compiled program {o['compiled']} has {key} {value!r}: leave {key} out",
                                       key)
        o.update(structure)
        saved_tools = list(saved.get("tools", []))

    if o["optimize"] is not None:
        if o["compiled"] is not None:
            raise DSPyOptionsError("a compiled program is not compiled again: give compiled or optimize", "optimize")
        o["optimize"] = _optimize_options(o["optimize"])

    if o["program"] not in PROGRAM_KINDS:
        raise DSPyOptionsError(f"unknown program {o['program']!r}; choose one of {', '.join(PROGRAM_KINDS)}", "program")
    _int(o, "knn_k", 0)
    _int(o, "max_iters", 1)
    if o["max_tokens"] is not None:
        _int(o, "max_tokens", 1)
    if o["max_text_chars"] is not None:
        _int(o, "max_text_chars", 1)
    if o["dspy_adapter"] not in DSPY_ADAPTERS:
        raise DSPyOptionsError(f"unknown DSPy adapter {o['dspy_adapter']!r}; choose one of "
                               f"{', '.join(DSPY_ADAPTERS)}", "dspy_adapter")

    retriever = o["retriever"]
    if not isinstance(retriever, str) or not (retriever in RETRIEVERS or retriever.startswith(SAVED_PREFIX)):
        raise DSPyOptionsError(f"expected one of {', '.join(RETRIEVERS)} or saved:PATH, got {retriever!r}", "retriever")
    saved_retriever = retriever.startswith(SAVED_PREFIX)
    if saved_retriever and not (Path(retriever[len(SAVED_PREFIX):]).expanduser() / "config.json").is_file():
        raise DSPyOptionsError(f"{retriever[len(SAVED_PREFIX):]} is not a saved retriever (no config.json)",
                               "retriever")
    o["pool"] = _pool_sources(o["pool"]) if o["pool"] is not None else (
        _pool_sources(default_pool) if default_pool else None)

    for key in ("gliner", "ner_retriever"):
        if o[key] is not None and not isinstance(o[key], str):
            raise DSPyOptionsError(f"expected a path, got {o[key]!r}", key)
    if o["gliner"] and _is_local(o["gliner"]) and not Path(o["gliner"]).expanduser().exists():
        raise DSPyOptionsError(f"GLiNER checkpoint {o['gliner']} does not exist", "gliner")
    if o["ner_retriever"] is not None:
        folder = Path(o["ner_retriever"]).expanduser()
        if not (folder / "retriever.json").is_file():
            raise DSPyOptionsError(f"{folder} is not a saved NER Retriever (no retriever.json)", "ner_retriever")
        if not (folder / "index" / "mentions.faiss").is_file():
            raise DSPyOptionsError(f"{folder} holds no index: build one with openie ner-retriever index",
                                   "ner_retriever")

    demo_source = o["pool"] is not None or saved_retriever
    configured = {"type_descriptions": True, "propose_spans": bool(o["gliner"]),
                  "similar_mentions": o["ner_retriever"] is not None, "retrieve_demonstrations": demo_source}
    tools = o["tools"]
    if tools is None:
        if saved_tools is not None:
            tools = saved_tools
        else:
            tools = [t for t in TOOL_NAMES if configured[t]] if o["program"] == "agent" else []
    else:
        if isinstance(tools, str):
            tools = [t.strip() for t in tools.split(",") if t.strip()]
        if not isinstance(tools, list | tuple) or not all(isinstance(t, str) for t in tools):
            raise DSPyOptionsError(f"expected a list of tool names, got {o['tools']!r}", "tools")
        if tools and o["program"] != "agent":
            raise DSPyOptionsError(f"tools are for program agent; a {o['program']!r} program calls none", "tools")
    tools = list(tools)
    for name in tools:
        if name not in TOOL_NAMES:
            raise DSPyOptionsError(f"unknown tool {name!r}; choose from {', '.join(TOOL_NAMES)}", "tools")
    if len(set(tools)) != len(tools):
        raise DSPyOptionsError(f"a tool is named twice: {tools}", "tools")
    needs = {"propose_spans": "the gliner option (a GLiNER checkpoint)",
             "similar_mentions": "the ner_retriever option (a saved, indexed NER Retriever)",
             "retrieve_demonstrations": "a pool, or retriever: saved:PATH"}
    for name in tools:
        if not configured[name]:
            raise DSPyOptionsError(f"tool {name} needs {needs[name]}", "tools")
    if "similar_mentions" in tools and o["pool"] is None:
        raise DSPyOptionsError("similar_mentions shows the documents the NER Retriever indexed: give them as pool",
                               "pool")
    if saved_tools is not None and tools != saved_tools:
        raise DSPyOptionsError(f"{o['compiled']} was saved with tools {saved_tools}, its prompts name them; "
                               f"got {tools}", "tools")
    if o["knn_k"] and not demo_source:
        raise DSPyOptionsError("kNN demonstrations need a pool (or retriever: saved:PATH)", "knn_k")
    if o["optimize"] is not None:
        if o["knn_k"]:
            raise DSPyOptionsError("optimize and knn_k both choose the demonstrations: give one of them", "optimize")
        if o["optimize"]["train"] is None:
            if o["pool"] is None:
                raise DSPyOptionsError("optimize needs training records: give optimize.train or a pool", "optimize")
            o["optimize"]["train"] = list(o["pool"])
        else:
            try:
                o["optimize"]["train"] = _pool_sources(o["optimize"]["train"])
            except DSPyOptionsError as err:
                raise DSPyOptionsError(err.reason, "optimize.train") from None
    o["tools"] = tools
    return o


OPTIMIZE_DEFAULTS: dict[str, Any] = {"optimizer": "bootstrap", "train": None, "n_train": 16, "seed": 0}


def _optimize_options(value: Any) -> dict[str, Any]:
    """``optimize`` checked: its own keys and the chosen optimiser's (defaults filled in)."""
    from openie.agent.optimizers import BOOTSTRAP_OPTIONS, MIPRO_OPTIONS, OPTIMIZERS

    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise DSPyOptionsError(f"expected a mapping (optimizer, train, n_train, seed, ...), got {value!r}", "optimize")
    o = {**OPTIMIZE_DEFAULTS, **value}
    if o["optimizer"] not in OPTIMIZERS:
        raise DSPyOptionsError(f"unknown optimizer {o['optimizer']!r}; choose one of {', '.join(OPTIMIZERS)}",
                               "optimize.optimizer")
    own = BOOTSTRAP_OPTIONS if o["optimizer"] == "bootstrap" else MIPRO_OPTIONS
    unknown = sorted(set(o) - set(OPTIMIZE_DEFAULTS) - set(own))
    if unknown:
        raise DSPyOptionsError(f"unknown keys {unknown}; known: {sorted(set(OPTIMIZE_DEFAULTS) | set(own))}",
                               "optimize")
    for key in ("n_train", "seed"):
        try:
            _int(o, key, 1 if key == "n_train" else 0)
        except DSPyOptionsError as err:
            raise DSPyOptionsError(err.reason, f"optimize.{key}") from None
    return {**own, **o}


# ---------------------------------------------------------------------------------------------
# what the options only name: content hashes
# ---------------------------------------------------------------------------------------------


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over every file of a folder (relative name and bytes)."""
    folder = Path(folder).expanduser()
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _dspy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("dspy", "dspy-ai"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def uses_retriever(resolved: Mapping[str, Any]) -> bool:
    return bool(resolved["knn_k"]) or "retrieve_demonstrations" in resolved["tools"]


def option_fingerprints(resolved: Mapping[str, Any]) -> dict[str, str]:
    """Content hashes of what resolved options use by name, plus DSPy's version (its adapters write the prompts)."""
    from openie.methods.demonstrations import weights_fingerprint

    out = {"dspy": _dspy_version()}
    gliner = resolved["gliner"]
    if "propose_spans" in resolved["tools"] and gliner:
        out["gliner"] = weights_fingerprint(gliner) if Path(gliner).expanduser().is_dir() else gliner
    if "similar_mentions" in resolved["tools"]:
        out["ner_retriever"] = folder_fingerprint(resolved["ner_retriever"])
    if resolved["compiled"] is not None:
        out["compiled"] = folder_fingerprint(resolved["compiled"])
    if uses_retriever(resolved) and resolved["retriever"].startswith(SAVED_PREFIX):
        out["retriever"] = weights_fingerprint(Path(resolved["retriever"][len(SAVED_PREFIX):]).expanduser())
    return out


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------


def _demonstration_retriever(o: Mapping[str, Any], pool: list[Record] | None, data_root: str | None) -> Any:
    """The indexed retriever (shared by the process's runs over the same pool, as the seed methods share it)."""
    from openie.methods.demonstrations import DemonstrationSpec, build_retriever

    if o["retriever"].startswith(SAVED_PREFIX):
        spec = DemonstrationSpec("saved", (), 1, path=str(Path(o["retriever"][len(SAVED_PREFIX):]).expanduser()),
                                 task=o["task"], data_root=data_root)
    else:
        spec = DemonstrationSpec(o["retriever"], tuple(o["pool"]), 1, task=o["task"], data_root=data_root)
    return build_retriever(spec, pool).retriever  # the retriever itself: its repr names it in describe()


def from_options(engine: Engine, schema: Schema, options: Mapping[str, Any], *, task: str | None = None,
                 default_pool: str | Sequence[str] | None = None, data_root: str | None = None,
                 adapter: str | None = None, max_tokens: int = 512, batch_size: int = 8,
                 show_progress: bool = False, workdir: str | Path | None = None) -> DSPyExtractor:
    """A :class:`DSPyExtractor` over ``engine`` from ``options`` (:data:`OPTIONS`, checked by :func:`check_options`).

    ``adapter`` is the engine's LoRA adapter, ``max_tokens`` the run's limit (the option
    ``max_tokens`` overrides it). Models and indexes load here: GLiNER for ``propose_spans``, the
    NER Retriever for ``similar_mentions``, the pool and its retriever for demonstrations. With
    ``optimize`` the program is compiled here, on the engine, and saved under ``workdir``
    (:data:`COMPILED_DIR`; without a workdir it is compiled and kept in memory only).
    """
    from openie.agent.tools import DemonstrationTool, SimilarMentionsTool, SpanProposalTool, TypeDescriptionsTool

    o = check_options(options, task=task, default_pool=default_pool)
    task = o["task"]
    pool: list[Record] | None = None
    needs_pool = "similar_mentions" in o["tools"] or (uses_retriever(o) and not o["retriever"].startswith(SAVED_PREFIX))
    if needs_pool:
        from openie.methods.demonstrations import load_pool_sources

        pool = load_pool_sources(o["pool"], task, data_root)
        if not pool:
            raise DSPyOptionsError(f"{o['pool']} holds no records for task {task!r}", "pool")
    retriever = _demonstration_retriever(o, pool, data_root) if uses_retriever(o) else None

    tools: list[Any] = []
    for name in o["tools"]:
        if name == "type_descriptions":
            tools.append(TypeDescriptionsTool(schema, task))
        elif name == "propose_spans":
            from openie.tools.gliner import GLiNERTool

            gliner = GLiNERTool.load(os.path.expanduser(o["gliner"]), show_progress=show_progress)
            tools.append(SpanProposalTool(gliner, default_labels=schema.entity_labels))
        elif name == "similar_mentions":
            from openie.agent.tools import AgentToolError
            from openie.tools.ner_retriever import NERRetriever, NERRetrieverError

            try:
                ner = NERRetriever.load(Path(o["ner_retriever"]).expanduser(), show_progress=show_progress)
                tools.append(SimilarMentionsTool(ner, pool or []))
            except (AgentToolError, NERRetrieverError) as err:
                raise DSPyOptionsError(str(err), "ner_retriever") from None
        else:
            tools.append(DemonstrationTool(retriever, task))  # type: ignore[arg-type]

    knn = retriever if o["knn_k"] else None
    if o["compiled"] is not None:
        program, spec, saved_schema = load_program(Path(o["compiled"]).expanduser(), tools=tools, retriever=knn)
        labels = {"ner": "entity_labels", "re": "relation_labels", "ee": "event_labels"}[task]
        if list(getattr(saved_schema, labels)) != list(getattr(schema, labels)):
            raise DSPyOptionsError(f"{o['compiled']} was compiled for the types {getattr(saved_schema, labels)}, "
                                   f"the run's schema has {getattr(schema, labels)}", "compiled")
    else:
        spec = ProgramSpec(o["program"], task, max_iters=o["max_iters"], knn_k=o["knn_k"])
        program = spec.build(schema, tools=tools, retriever=knn)
    extractor = DSPyExtractor(program, engine, schema, task=task, adapter=adapter,
                              max_tokens=o["max_tokens"] or max_tokens, dspy_adapter=o["dspy_adapter"],
                              max_text_chars=o["max_text_chars"], batch_size=batch_size, show_progress=show_progress)
    if o["optimize"] is not None:
        compile_extractor(extractor, spec, o["optimize"], tools=tools, retriever=knn, data_root=data_root,
                          workdir=workdir)
    return extractor


def map_paths(options: Mapping[str, Any], fn) -> dict[str, Any]:
    """The folders and files the options name: a local GLiNER checkpoint, the NER Retriever, a
    compiled program, ``saved:PATH``, records-file pools (``fn`` maps each; config files move)."""
    from openie.datasets import is_corpus_split

    def _is_file_pool(p: str) -> bool:
        return not is_corpus_split(p)

    out = dict(options)
    if isinstance(out.get("pool"), str) and _is_file_pool(out["pool"]):
        out["pool"] = fn(out["pool"])
    elif isinstance(out.get("pool"), list):
        out["pool"] = [fn(p) if isinstance(p, str) and _is_file_pool(p) else p for p in out["pool"]]
    if isinstance(out.get("gliner"), str) and _is_local_model(out["gliner"]):
        mapped = fn(out["gliner"])
        out["gliner"] = mapped if _is_local_model(mapped) else f"./{mapped}"  # a bare relative path reads as a hub id
    for key in ("ner_retriever", "compiled"):
        if isinstance(out.get(key), str):
            out[key] = fn(out[key])
    optimize = out.get("optimize")
    if isinstance(optimize, Mapping) and isinstance(optimize.get("train"), str | list):  # records files, as pools
        train = [optimize["train"]] if isinstance(optimize["train"], str) else optimize["train"]
        out["optimize"] = {**optimize, "train": [fn(p) if isinstance(p, str) and _is_file_pool(p) else p
                                                 for p in train]}
    if isinstance(out.get("retriever"), str) and out["retriever"].startswith("saved:"):
        out["retriever"] = "saved:" + fn(out["retriever"][len("saved:"):])
    return out


def _is_local_model(model: str) -> bool:
    return model.startswith(("./", "../", "/", "~"))


#: where :func:`compile_extractor` keeps a compiled program inside a run's work folder
COMPILED_DIR = "compiled_program"
COMPILE_FILE = "openie_compile.json"


def compile_extractor(extractor: DSPyExtractor, spec: ProgramSpec, optimize: Mapping[str, Any], *,
                      tools: Sequence[Any] = (), retriever: Any = None, data_root: str | None = None,
                      workdir: str | Path | None = None) -> dict[str, Any]:
    """Compile ``extractor.program`` in place with DSPy's optimiser on a seeded sample of training records.

    The optimiser calls the extractor's own LM and adapter, so it goes through the same engine
    and cache as extraction. Under ``workdir`` the compiled program is saved with
    ``openie_compile.json`` (what it was compiled from, LM calls, seconds); a later call with the
    same configuration loads it instead of compiling again. Returns that record.
    """
    import random
    import time

    from openie.agent.optimizers import optimize_program
    from openie.methods.demonstrations import load_pool_sources

    task = extractor.task
    train_all = load_pool_sources(optimize["train"], task, data_root)
    if not train_all:
        raise DSPyOptionsError(f"{optimize['train']} holds no records for task {task!r}", "optimize.train")
    train = random.Random(optimize["seed"]).sample(train_all, min(optimize["n_train"], len(train_all)))
    own = {k: v for k, v in optimize.items() if k not in OPTIMIZE_DEFAULTS}
    config = {"optimizer": optimize["optimizer"], "options": own, "seed": optimize["seed"],
              "train": list(optimize["train"]), "train_ids": [r.id for r in train], "spec": asdict(spec),
              "program": program_state_digest(extractor.program), "engine": getattr(extractor.engine, "model_id", None),
              "adapter": extractor.adapter, "dspy_adapter": extractor.dspy_adapter,
              "max_text_chars": extractor.max_text_chars, "max_tokens": extractor.max_tokens}
    folder = Path(workdir) / COMPILED_DIR if workdir is not None else None
    if folder is not None and (folder / COMPILE_FILE).is_file():
        saved = json.loads((folder / COMPILE_FILE).read_text(encoding="utf-8"))
        if saved.get("config") == json.loads(json.dumps(config)):
            extractor.program = load_program(folder, tools=tools, retriever=retriever)[0]
            return saved
    calls, started = extractor.lm_calls, time.perf_counter()
    extractor.program = optimize_program(extractor.program, train, schema=extractor.schema, lm=extractor.lm,
                                         task=task, optimizer=optimize["optimizer"], adapter=extractor.dspy_adapter_obj,
                                         seed=optimize["seed"], **own)
    report = {"config": config, "lm_calls": extractor.lm_calls - calls,
              "seconds": round(time.perf_counter() - started, 1),
              "demos": {n: len(p.demos) for n, p in extractor.program.named_predictors()}}
    if folder is not None:
        save_program(extractor.program, spec, extractor.schema, folder)
        (folder / COMPILE_FILE).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return report


__all__ = ["COMPILED_DIR", "OPTIONS", "RETRIEVERS", "TOOL_NAMES", "DSPyOptionsError", "check_options",
           "compile_extractor", "folder_fingerprint", "from_options", "option_fingerprints", "saved_spec", "uses_retriever"]
