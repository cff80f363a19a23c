"""The agent's tools: GLiNER span proposals, NER Retriever look-ups, demonstration retrieval, type descriptions.

Each tool is a small class meeting :class:`AgentTool`: a ``name`` and a ``description`` (what
the model reads), the JSON schema of its ``args``, and ``__call__(text, **args)`` where ``text``
is the input being extracted from. The model never copies the input into a tool call (tiny
models garble it): :func:`as_dspy_tools` binds each call to the input of the program call in
progress (see ``openie.agent.trace``) and logs the call, its arguments and its result there.
Tools answer in JSON, the language the model answers in.

Tools hold shared, read-only models and indexes: copying a program (DSPy copies them while
optimising) shares its tools instead of duplicating a GLiNER model. Records extracted at once
(one thread each) take turns in them (:data:`SHARED_MODELS`): the NER Retriever reads activations
through forward hooks, which one forward pass at a time may use.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import dspy

from openie.agent.signatures import OUTPUT_FIELDS, check_task, gold_output, type_descriptions
from openie.agent.trace import current_trace
from openie.errors import OpenIEError
from openie.records import Record
from openie.schema import Schema
from retrievers.base import Retriever, duplicate_key

#: held while a tool or a demonstration selector runs its model or index
SHARED_MODELS = threading.RLock()


class AgentToolError(OpenIEError, RuntimeError):
    """A tool used outside a program call, or built without what it needs."""


@runtime_checkable
class AgentTool(Protocol):
    """A tool the extraction agent may call on the current input."""

    name: str
    description: str
    args: dict[str, dict[str, Any]]

    def __call__(self, text: str, **arguments: Any) -> str: ...

    def describe(self) -> dict[str, Any]: ...


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _SharedTool:
    """Deep copies of a program share the tool (its model and index are read-only)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


class SpanProposalTool(_SharedTool):
    """GLiNER's typed span proposals: a second opinion on *where* the mentions are, from an encoder model."""

    name = "propose_spans"
    description = ("Find candidate mentions of the given entity types in the input text with a span model "
                   "(GLiNER). Returns a JSON list of {text, type, score}, best score first.")
    args = {"labels": {"type": ["array", "string"], "items": {"type": "string"},
                       "description": "entity types to look for, e.g. [\"person\", \"location\"]"}}

    def __init__(self, gliner: Any, *, default_labels: Sequence[str] = (), threshold: float = 0.3,
                 max_results: int = 20):
        self.gliner, self.default_labels = gliner, list(default_labels)
        self.threshold, self.max_results = threshold, max_results

    def __call__(self, text: str, labels: Sequence[str] | str | None = None) -> str:
        labels = [labels] if isinstance(labels, str) else labels  # small models pass one type as a string
        wanted = [str(x).strip() for x in (labels or []) if str(x).strip()] or self.default_labels
        if not wanted:
            raise AgentToolError("propose_spans needs at least one entity type in labels")
        found = self.gliner.predict([text], list(dict.fromkeys(wanted)), threshold=self.threshold)[0]
        best = sorted(found, key=lambda e: (-(e.score or 0.0), e.start))[: self.max_results]
        return _dumps([{"text": e.text, "type": e.label, "score": round(float(e.score or 0.0), 3)} for e in best])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": getattr(self.gliner, "source", repr(self.gliner)),
                "weights": self.gliner.fingerprint(), "threshold": self.threshold, "max_results": self.max_results, "default_labels": self.default_labels}


class SimilarMentionsTool(_SharedTool):
    """NER Retriever look-ups: mentions of a described type in an indexed pool, shown with their gold type."""

    name = "similar_mentions"
    description = ("Look up entity mentions of a described type in a collection of annotated texts. "
                   "Returns a JSON list of {mention, type, context}: examples of what such entities look like.")
    args = {"description": {"type": "string", "description": "a short description of an entity type, e.g. \"a city\""}}

    def __init__(self, retriever: Any, documents: Sequence[Record], *, k: int = 3, context_chars: int = 60):
        """``documents`` are the run's pool: mentions of indexed documents outside it are never shown.

        One index over a whole corpus can so serve runs on each of its parts.
        """
        if retriever.index is None:
            raise AgentToolError("the NER Retriever has no index: call index_records on the documents first")
        self.retriever, self.k, self.context_chars = retriever, k, context_chars
        self.documents = {r.id: r for r in documents}
        indexed = retriever.index.documents
        shown = len(indexed & set(self.documents))
        if not shown:
            raise AgentToolError(f"none of the {len(indexed)} documents the NER Retriever indexed are given here "
                                 f"(e.g. {sorted(indexed)[:3]})")
        self._widen = -(-len(indexed) // shown)  # search this many times wider: hits outside the pool are dropped

    def __call__(self, text: str, description: str = "") -> str:
        if not str(description).strip():
            raise AgentToolError("similar_mentions needs a description of the entity type")
        own = duplicate_key(text)
        candidates = self.retriever.search(str(description), (self.k + 4) * self._widen)
        hits = [h for h in candidates if h.doc_id in self.documents
                and duplicate_key(self.documents[h.doc_id].text) != own][: self.k]  # never the input itself
        out = []
        for hit in hits:
            doc = self.documents[hit.doc_id]
            s, e = hit.mention
            gold = next((x.label for x in doc.entities if x.span == (s, e)), None)
            left, right = max(0, s - self.context_chars), min(len(doc.text), e + self.context_chars)
            out.append({"mention": doc.text[s:e], "type": gold, "context": doc.text[left:right]})
        return _dumps(out)

    def describe(self) -> dict[str, Any]:
        enc = self.retriever.encoder
        return {"name": self.name, "encoder": enc.model_id, "weights": enc.fingerprint(),
                "hook": enc.hooks[0].describe(), "k": self.k,
                "projector": self.retriever.projector.meta.get("fingerprint", "identity"),
                "documents": len(self.documents), "mentions": len(self.retriever.index)}


class DemonstrationTool(_SharedTool):
    """Worked examples from any openie ``Retriever``: annotated texts similar to a query (or to the input)."""

    name = "retrieve_demonstrations"
    description = ("Retrieve annotated example texts similar to a query, with their correct extractions. "
                   "An empty query retrieves examples similar to the input text. Returns a JSON list.")
    args = {"query": {"type": "string", "description": "what the examples should be about; empty for the input text"}}

    def __init__(self, retriever: Retriever, task: str = "ner", *, k: int = 2, retrieval_task: str | None = None):
        self.retriever, self.task, self.k = retriever, check_task(task), k
        self.retrieval_task = retrieval_task

    def __call__(self, text: str, query: str = "") -> str:
        q = str(query).strip() or text
        results = self.retriever.retrieve(q, self.k, task=self.retrieval_task, exclude_text=text)
        field = OUTPUT_FIELDS[self.task]
        return _dumps([{"text": r.text, field: gold_output(r, self.task)} for r, _ in results])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "retriever": repr(self.retriever), "k": self.k, "task": self.task,
                "retrieval_task": self.retrieval_task}


class TypeDescriptionsTool(_SharedTool):
    """The schema's types and their descriptions, for a model that wants to re-read them mid-way."""

    name = "type_descriptions"
    description = "The types to extract and their descriptions, as JSON."
    args: dict[str, dict[str, Any]] = {}

    def __init__(self, schema: Schema, task: str = "ner"):
        self.schema, self.task = schema, check_task(task)

    def __call__(self, text: str) -> str:
        return _dumps(type_descriptions(self.schema, self.task))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task}


class LoggedTool(dspy.Tool):
    """A ``dspy.Tool`` that writes every call (arguments, result or error) into the current trace."""

    def __call__(self, **kwargs: Any) -> Any:
        trace = current_trace()
        try:
            result = super().__call__(**kwargs)
        except Exception as err:
            if trace is not None:
                trace.record_call(self.name, kwargs, error=f"{type(err).__name__}: {err}"[:300])
            raise
        if trace is not None:
            trace.record_call(self.name, kwargs, result)
        return result


def _bound(tool: AgentTool) -> Any:
    def call(**arguments: Any) -> str:
        trace = current_trace()
        if trace is None:
            raise AgentToolError(f"tool {tool.name!r} was called outside a program call (no input is bound)")
        unknown = sorted(set(arguments) - set(tool.args))
        if unknown:
            raise AgentToolError(f"{tool.name} takes {sorted(tool.args) or 'no arguments'}, not {unknown}")
        with SHARED_MODELS:
            return tool(trace.text, **arguments)

    return call


def as_dspy_tools(tools: Sequence[AgentTool]) -> list[LoggedTool]:
    """The tools as logged ``dspy.Tool`` objects bound to the current input (what ``dspy.ReAct`` takes)."""
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise AgentToolError(f"two tools share a name: {names}")
    if "finish" in names:
        raise AgentToolError("'finish' is the agent's own tool name")
    return [LoggedTool(func=_bound(t), name=t.name, desc=t.description, args=dict(t.args),
                       arg_types={k: Any for k in t.args}) for t in tools]


__all__ = ["SHARED_MODELS", "AgentTool", "AgentToolError", "DemonstrationTool", "LoggedTool", "SimilarMentionsTool", "SpanProposalTool",
           "TypeDescriptionsTool", "as_dspy_tools"]
