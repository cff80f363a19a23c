"""DSPy extraction programs (Predict, ChainOfThought, a tool-using agent) and the extractor that runs them.

A program is any ``dspy.Module`` called as ``program(text=...)`` that returns the signature's
output field: built here from a :class:`ProgramSpec`, compiled by DSPy's optimisers or by a kNN
selector, saved and loaded with :func:`save_program` / :func:`load_program`.

:class:`DSPyExtractor` gives every such program the seat other extractors have in the runner
(``extract_batch``, ``stats``, ``task``, ``describe``, ``engine``): it answers through the openie
DSPy LM over any openie engine (so the openie cache applies), turns each prediction into a
grounded ``Record``, and never raises on what the model wrote. Each prediction's meta says how it
came about: the reasoning (ChainOfThought), the agent's tool calls with arguments and results,
the demonstrations shown (kNN), the number of LM calls, and the parse problems.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.exceptions import DSPyError, LMError

from openie.agent.selectors import KNNFewShotProgram, RetrieverKNN
from openie.agent.signatures import INPUT_FIELD, check_task, openie_signature, prediction_to_record
from openie.agent.structured import MAX_TEXT_CHARS, ConstrainedJSONAdapter
from openie.agent.tools import AgentTool, as_dspy_tools
from openie.agent.trace import traced
from openie.chunking import chunk_record, merge_chunks
from openie.engines.base import Engine, EngineError
from openie.engines.dspy_lm import openie_lm
from openie.engines.microbatch import MicroBatchEngine
from openie.errors import OpenIEError, UnknownNameError
from openie.methods.icl import ExtractionStats, extract_in_batches
from openie.methods.icl.pipeline import DEFAULT_CHUNK_TOKENS, record_coverage
from openie.records import Record
from openie.schema import Schema
from prompts.formats import ParseProblem, ParseResult
from retrievers.base import Retriever

PROGRAM_KINDS = ("predict", "chain_of_thought", "agent")
#: chat_only: no second, JSON-mode call when a chat answer fails to parse; json: decoded under the output schema
DSPY_ADAPTERS = ("chat", "chat_only", "json")
PROGRAM_FILE = "program.json"
SPEC_FILE = "spec.json"


class ProgramError(OpenIEError, ValueError):
    """A program that cannot be built or loaded as asked."""


class ExtractionAgent(dspy.Module):
    """``dspy.ReAct`` over an openie signature, with openie tools bound to the input being extracted.

    The prediction carries ``tool_calls`` (name, arguments, truncated result or error of every
    call, in order) besides ReAct's own ``trajectory``.
    """

    def __init__(self, signature: type[dspy.Signature], tools: Sequence[AgentTool] = (), max_iters: int = 5):
        super().__init__()
        self.tools = list(tools)
        self.max_iters = max_iters
        self.react = dspy.ReAct(signature, tools=as_dspy_tools(self.tools), max_iters=max_iters)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        with traced(str(inputs[INPUT_FIELD])) as trace:
            start = len(trace.tool_calls)
            prediction = self.react(**inputs)
        prediction.tool_calls = [c.to_dict() for c in trace.tool_calls[start:]]
        return prediction


@dataclass(frozen=True)
class ProgramSpec:
    """Everything that rebuilds a program's structure; compiled demonstrations and instructions are its state.

    ``knn_k > 0`` wraps the program in kNN few-shot selection over a retriever (given at build time).
    """

    kind: str = "predict"
    task: str = "ner"
    max_iters: int = 5
    instructions: str | None = None
    knn_k: int = 0
    retrieval_task: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROGRAM_KINDS:
            raise UnknownNameError("DSPy program kind", self.kind, list(PROGRAM_KINDS))
        check_task(self.task)
        if self.max_iters < 1:
            raise ProgramError(f"max_iters must be >= 1, got {self.max_iters}")
        if self.knn_k < 0:
            raise ProgramError(f"knn_k must be >= 0, got {self.knn_k}")

    def build(self, schema: Schema, *, tools: Sequence[AgentTool] = (), retriever: Retriever | None = None) -> dspy.Module:
        """The program for ``schema``; ``tools`` only for the agent, ``retriever`` only with ``knn_k``."""
        if tools and self.kind != "agent":
            raise ProgramError(f"tools are for the agent; a {self.kind!r} program calls none")
        signature = openie_signature(schema, self.task, instructions=self.instructions)
        program: dspy.Module
        if self.kind == "predict":
            program = dspy.Predict(signature)
        elif self.kind == "chain_of_thought":
            program = dspy.ChainOfThought(signature)
        else:
            program = ExtractionAgent(signature, tools, self.max_iters)
        if self.knn_k:
            if retriever is None:
                raise ProgramError("knn_k > 0 needs the retriever that selects the demonstrations")
            program = KNNFewShotProgram(program, RetrieverKNN(retriever, self.knn_k, self.task,
                                                              retrieval_task=self.retrieval_task))
        elif retriever is not None:
            raise ProgramError("a retriever was given but knn_k is 0")
        return program


def program_kind(program: dspy.Module) -> str:
    """A short name of a program's structure (``knn+chain_of_thought``...), for meta and run configs."""
    if isinstance(program, KNNFewShotProgram):
        return "knn+" + program_kind(program.program)
    if isinstance(program, ExtractionAgent):
        return "agent"
    if isinstance(program, dspy.ChainOfThought):
        return "chain_of_thought"
    if isinstance(program, dspy.Predict):
        return "predict"
    return type(program).__name__


def _tool_args(program: dspy.Module) -> dict[str, Any] | None:
    """The agent's tools (``finish`` included) -> their arguments' JSON schemas; None without an agent."""
    agent = next((m for _, m in program.named_sub_modules() if isinstance(m, ExtractionAgent)), None)
    return None if agent is None else {name: dict(tool.args) for name, tool in agent.react.tools.items()}


def _tools_of(program: dspy.Module) -> list[AgentTool]:
    return [t for _, m in program.named_sub_modules() if isinstance(m, ExtractionAgent) for t in m.tools]


def program_state_digest(program: dspy.Module) -> str:
    """A hash of the program's state (instructions, field descriptions, demonstrations): its compiled identity."""
    state = program.dump_state()
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# saving and loading
# ---------------------------------------------------------------------------------------------


def save_program(program: dspy.Module, spec: ProgramSpec, schema: Schema, path: str | Path) -> Path:
    """A folder with DSPy's JSON state of ``program`` and what rebuilds its structure (spec, schema, tool names)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    program.save(str(path / PROGRAM_FILE))
    (path / SPEC_FILE).write_text(json.dumps({"spec": asdict(spec), "schema": schema.to_dict(),
                                              "tools": [t.name for t in _tools_of(program)]}, indent=2))
    return path


def load_program(path: str | Path, *, tools: Sequence[AgentTool] = (),
                 retriever: Retriever | None = None) -> tuple[dspy.Module, ProgramSpec, Schema]:
    """Rebuild a saved program (the same tools, by name, and the kNN retriever where it had them) and load its state."""
    path = Path(path)
    if not (path / SPEC_FILE).is_file() or not (path / PROGRAM_FILE).is_file():
        raise ProgramError(f"{path} is not a saved DSPy program ({SPEC_FILE} and {PROGRAM_FILE} expected)")
    saved = json.loads((path / SPEC_FILE).read_text())
    spec, schema = ProgramSpec(**saved["spec"]), Schema.from_dict(saved["schema"])
    names = [t.name for t in tools]
    if names != saved["tools"]:
        raise ProgramError(f"{path} was saved with tools {saved['tools']}, given {names}: its prompts name its tools")
    program = spec.build(schema, tools=tools, retriever=retriever)
    program.load(str(path / PROGRAM_FILE))
    return program, spec, schema


# ---------------------------------------------------------------------------------------------
# the extractor
# ---------------------------------------------------------------------------------------------


#: (prompts, prompt tokens, completion tokens) of the program call in progress in this thread
_CALL_USAGE: ContextVar[list[int] | None] = ContextVar("openie_dspy_call_usage", default=None)


class _MeteredEngine:
    """Counts what DSPy asks of an engine, in all and per program call (each thread its own)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.prompts = self.prompt_tokens = self.completion_tokens = self.cut = 0
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[Any]) -> list[Any]:
        generations = self.engine.generate(requests)
        used = (len(generations), sum(g.prompt_tokens for g in generations),
                sum(g.completion_tokens for g in generations), sum(g.finish_reason == "length" for g in generations))
        with self._lock:
            self.prompts += used[0]
            self.prompt_tokens += used[1]
            self.completion_tokens += used[2]
            self.cut += used[3]
        call = _CALL_USAGE.get()
        if call is not None:
            for i, n in enumerate(used):
                call[i] += n
        return generations

    def loglikelihood(self, requests: Sequence[Any]) -> list[Any]:
        return self.engine.loglikelihood(requests)

    def __getattr__(self, name: str) -> Any:
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)


@dataclass
class AgentStats(ExtractionStats):
    """``ExtractionStats`` plus the agent's tool calls and the program calls that failed."""

    tool_calls: int = 0
    failures: int = 0

    @property
    def mean_tool_calls(self) -> float:
        return self.tool_calls / self.records if self.records else 0.0


def dspy_adapter(name: str, max_text_chars: int | None = MAX_TEXT_CHARS,
                 tool_args: dict[str, Any] | None = None) -> Any:
    """A DSPy adapter by name.

    ``chat`` is DSPy's default (field markers; a failed parse is retried in JSON mode), ``chat_only``
    the same without the retry, ``json`` JSON decoded under the output fields' schema
    (:class:`~openie.agent.structured.ConstrainedJSONAdapter`, free-text fields at most
    ``max_text_chars`` characters, an agent's tools called with exactly their ``tool_args``).
    """
    if name == "chat":
        return dspy.ChatAdapter()
    if name == "chat_only":
        return dspy.ChatAdapter(use_json_adapter_fallback=False)
    if name == "json":
        return ConstrainedJSONAdapter(max_text_chars, tool_args)
    raise UnknownNameError("DSPy adapter", name, list(DSPY_ADAPTERS))


@dataclass
class DSPyExtractor:
    """Runs a DSPy program over records through an openie engine; one grounded prediction per record.

    DSPy sends one LM request per call; with ``concurrent`` the records of a batch run at once,
    one thread each, and the calls they make together reach the engine as one batch
    (:class:`~openie.engines.microbatch.MicroBatchEngine`). Requests are the same either way.

    ``adapter`` is the engine's LoRA adapter; ``dspy_adapter`` how DSPy formats prompts and reads
    answers (``max_text_chars`` bounds free-text fields under ``json``). ``max_words_per_chunk``
    (default: icl's ``DEFAULT_CHUNK_TOKENS``) cuts long texts into overlapping chunks of that many
    words, or characters of scripts without spaces (merged back with global offsets); every
    prediction carries ``meta["coverage"]`` like icl's. ``demonstrations`` stays None: a kNN program reports its own (``demo_ids``).
    """

    program: dspy.Module
    engine: Engine
    schema: Schema
    task: str = "ner"
    adapter: str | None = None
    max_tokens: int = 512
    dspy_adapter: str = "chat"
    max_text_chars: int | None = MAX_TEXT_CHARS
    batch_size: int = 8
    concurrent: bool = True
    max_words_per_chunk: int | None = None
    chunk_overlap_words: int = 32
    use_chat_template: bool | None = None
    show_progress: bool = True
    name: str | None = None
    stats: AgentStats = field(default_factory=AgentStats)
    demonstrations: Any = None

    def __post_init__(self) -> None:
        check_task(self.task)
        self.name = self.name or program_kind(self.program)
        tool_args = _tool_args(self.program)
        self._agent = tool_args is not None
        self.dspy_adapter_obj = dspy_adapter(self.dspy_adapter, self.max_text_chars, tool_args)
        self.batcher = MicroBatchEngine(self.engine)
        self._metered = _MeteredEngine(self.batcher)
        self.lm = openie_lm(self._metered, self.adapter, max_tokens=self.max_tokens,
                            use_chat_template=self.use_chat_template)

    @property
    def lm_calls(self) -> int:
        """LM calls made through this extractor so far, extracting and compiling."""
        return self._metered.prompts

    def describe(self) -> dict[str, Any]:
        """What changes this extractor's outputs (recorded with every run)."""
        d: dict[str, Any] = {
            "program": self.name, "task": self.task, "state": program_state_digest(self.program),
            "demos": {n: len(p.demos) for n, p in self.program.named_predictors()},
            "dspy_adapter": self.dspy_adapter, **({"max_text_chars": self.max_text_chars}
                                                  if self.dspy_adapter == "json" else {}),
            "adapter": self.adapter, "max_tokens": self.max_tokens,
            "engine": getattr(self.engine, "model_id", type(self.engine).__name__),
            "max_words_per_chunk": self.max_words_per_chunk,
        }
        if self._agent:
            agent = next(m for _, m in self.program.named_sub_modules() if isinstance(m, ExtractionAgent))
            d["max_iters"] = agent.max_iters
            d["tools"] = [t.describe() for t in agent.tools]
        if isinstance(self.program, KNNFewShotProgram):
            d["selector"] = self.program.knn.describe()
        return d

    def extract(self, records: Iterable[Record], total: int | None = None) -> Iterator[Record]:
        """Predictions in input order, batch by batch (stream them to disk as they come)."""
        return extract_in_batches(self, records, total=total, desc=f"dspy {self.name}")

    def extract_batch(self, batch: Sequence[Record]) -> list[Record]:
        if self.concurrent and len(batch) > 1:
            self.batcher.join(len(batch))  # all of them, before any asks: the first call waits for the others
            with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="openie-dspy") as pool:
                results = list(pool.map(self._extract_in_flight, range(len(batch)), batch))
        else:
            results = [self._extract_record(r) for r in batch]
        out = []
        for pred, usage, failures in results:  # stats are kept here, in input order, on one thread
            self.stats.prompts += usage[0]
            self.stats.prompt_tokens += usage[1]
            self.stats.completion_tokens += usage[2]
            self.stats.failures += failures
            self.stats.chunked_records += pred.meta.get("chunks", 1) > 1
            self.stats.add(pred)
            self.stats.tool_calls += pred.meta.get("n_tool_calls", 0)
            out.append(pred)
        return out

    def _extract_in_flight(self, rank: int, record: Record) -> tuple[Record, list[int], int]:
        self.batcher.rank(rank)
        try:
            return self._extract_record(record)
        finally:
            self.batcher.leave()

    def _extract_record(self, record: Record) -> tuple[Record, list[int], int]:
        """One record's prediction, its LM usage (prompts, prompt and completion tokens) and failed calls."""
        shown = record.without_annotations()
        limit = self.max_words_per_chunk or DEFAULT_CHUNK_TOKENS
        usage = [0, 0, 0, 0]
        parts = chunk_record(shown, limit, min(self.chunk_overlap_words, limit // 4), align_sentences=True)
        if len(parts) == 1 and parts[0][0].start == 0 and parts[0][0].end == len(record.text):
            pred, failed = self._predict(shown, usage)
        else:
            preds, failed = [], 0
            for _, sub in parts:
                p, f = self._predict(sub, usage)
                preds.append(p)
                failed += f
            pred = merge_chunks(shown, [c for c, _ in parts], preds)
            pred.meta.update(_merged_meta(preds))
        pred.meta["method"] = f"dspy.{self.name}"
        pred.meta["cut_at_max_tokens"] = usage[3]
        pred.meta["coverage"] = record_coverage(
            record, [c for c, _ in parts] if len(parts) > 1 else [None],
            {"prompts": usage[0], "cut_at_max_tokens": usage[3], "salvaged": 0, "retried": 0,
             "labels_per_prompt": len({"ner": self.schema.entity_labels, "re": self.schema.relation_labels,
                                       "ee": self.schema.event_labels}.get(self.task, ())),
             "prompt_tokens": usage[1]},
            pred.meta.get("alignment", {}).get("not_found", 0))
        return pred, usage, failed

    def _predict(self, unit: Record, usage: list[int]) -> tuple[Record, int]:
        error: Exception | None = None
        prediction = None
        call = [0, 0, 0, 0]
        token = _CALL_USAGE.set(call)
        try:
            with traced(unit.text) as trace, dspy.context(lm=self.lm, adapter=self.dspy_adapter_obj):
                try:
                    prediction = self.program(**{INPUT_FIELD: unit.text})
                except (LMError, EngineError):  # the engine failed, not the model's answer: stop the run
                    raise
                except (DSPyError, ValueError) as err:  # what the model wrote could not be used
                    error = err
        finally:
            _CALL_USAGE.reset(token)
        for i, n in enumerate(call):
            usage[i] += n
        if error is not None:
            result = ParseResult(problems=[ParseProblem("syntax", f"the program failed: {type(error).__name__}: "
                                                        f"{str(error)[:300]}")])
            pred = result.to_record(unit)
        else:
            pred = prediction_to_record(prediction, unit, self.schema, self.task)
            if prediction.get("reasoning") is not None:
                pred.meta["reasoning"] = str(prediction["reasoning"])
            trajectory = prediction.get("trajectory")
            if isinstance(trajectory, dict):
                names = [v for k, v in trajectory.items() if k.startswith("tool_name_")]
                pred.meta["agent_steps"] = len(names)
                pred.meta["finished"] = "finish" in names
        pred.meta["lm_calls"] = call[0]
        if self._agent:
            pred.meta["tool_calls"] = [c.to_dict() for c in trace.tool_calls]
            pred.meta["n_tool_calls"] = len(trace.tool_calls)
        if trace.demo_ids:
            pred.meta["demo_ids"] = list(trace.demo_ids)
        return pred, int(error is not None)


def _merged_meta(preds: Sequence[Record]) -> dict[str, Any]:
    """The meta of chunk predictions summed into one record's."""
    meta: dict[str, Any] = {
        "chunks": len(preds),
        "parse_problems": [q for p in preds for q in p.meta.get("parse_problems", [])],
        "alignment": {k: sum(p.meta.get("alignment", {}).get(k, 0) for p in preds) for k in ("exact", "fuzzy", "not_found")},
        "lm_calls": sum(p.meta.get("lm_calls", 0) for p in preds),
    }
    if any("tool_calls" in p.meta for p in preds):
        meta["tool_calls"] = [c for p in preds for c in p.meta.get("tool_calls", [])]
        meta["n_tool_calls"] = len(meta["tool_calls"])
    if any("demo_ids" in p.meta for p in preds):
        meta["demo_ids"] = list(dict.fromkeys(i for p in preds for i in p.meta.get("demo_ids", [])))
    reasoning = [p.meta["reasoning"] for p in preds if "reasoning" in p.meta]
    if reasoning:
        meta["reasoning"] = "\n\n".join(reasoning)
    return meta


__all__ = ["DSPY_ADAPTERS", "PROGRAM_KINDS", "AgentStats", "DSPyExtractor", "ExtractionAgent", "ProgramError",
           "ProgramSpec", "dspy_adapter", "load_program", "program_kind", "program_state_digest", "save_program"]
