"""Builds schema-conditioned IE prompts from a template, a schema, demonstrations and a record.

The builder never calls a model: it returns ``Prompt`` objects (text or chat messages plus
the template version that keys engine caches) and parses model outputs back with the
template's format.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openie.records import Event, Record
from openie.schema import Schema
from prompts.formats import TASKS, JsonFormat, ParseResult, QuestionFormat, get_format
from prompts.registry import TemplateRegistry, default_registry


@dataclass(frozen=True)
class Prompt:
    """One model call's input. ``label`` is the asked type (question format); ``event`` the trigger (EAE)."""

    record_id: str
    text: str
    template: str  # name@hash
    label: str | None = None
    event: Event | None = None
    demo_ids: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    messages: tuple[dict[str, str], ...] | None = None
    json_schema: dict[str, Any] | None = None  # set for JSON formats: constrain decoding to it
    labels: tuple[str, ...] | None = None  # the entity types this prompt asks for, when a schema is split

    def request_fields(self, constrained: bool = True) -> dict[str, Any]:
        """Keyword arguments for an engine ``GenerationRequest``."""
        body: dict[str, Any] = {"messages": self.messages} if self.messages is not None else {"prompt": self.text}
        if constrained and self.json_schema is not None:
            body["json_schema"] = self.json_schema
        return {**body, "stop": self.stop, "template": self.template}


@dataclass
class PromptBuilder:
    """(task, schema, demonstrations, record) -> prompts, and model text -> grounded annotations.

    ``demonstrations`` are given most relevant first (as retrievers rank them); the prompt shows
    them most relevant *last*, closest to the query. A demonstration from another corpus
    (``meta["schema"]`` of a pool from ``openie.datasets.load_pool``) shows its own label set. When ``max_prompt_tokens`` is set, the least
    relevant demonstrations are dropped until the prompt fits; the query is never cut.
    ``count_tokens`` defaults to whitespace words, pass a tokenizer-based counter for exact budgets.

    ``max_labels``: a NER schema with more entity types than that is split into groups of at most
    ``max_labels`` (contiguous, near-equal), one prompt per group, each showing and accepting only
    its group's types (demonstrations keep only those types' mentions); the answers are merged.
    Small models lose types in long lists, and users split them by hand otherwise.
    """

    template: str = "ner.ruie.v1"
    schema: Schema = field(default_factory=Schema)
    registry: TemplateRegistry | None = None
    instruction: str | None = None
    max_prompt_tokens: int | None = None
    count_tokens: Callable[[str], int] | None = None
    chat: bool = False  # send as a single user message (the engine applies the chat template)
    schema_seed: int | None = None  # shuffle the schema order (training data), seeded per record
    max_labels: int | None = None  # split a NER schema with more entity types across prompts

    def __post_init__(self) -> None:
        self.registry = self.registry or default_registry()
        self._template = self.registry.get(self.template)
        self.task = self._template.task
        self.format = get_format(self._template.format)
        if self.task not in TASKS:
            raise ValueError(f"template {self.template!r} declares unknown task {self.task!r}")
        self.stop = ("\n",) if self._template.format == "ruie" else ()
        if self.max_labels is not None and self.max_labels < 1:
            raise ValueError(f"max_labels must be >= 1, got {self.max_labels}")
        self._groups: list[PromptBuilder] | None = None

    @property
    def label_groups(self) -> list[tuple[str, ...]]:
        """The entity types of each prompt of a record (one group: the schema is not split)."""
        labels = list(self.schema.entity_labels)
        if (self.max_labels is None or len(labels) <= self.max_labels or self.task != "ner"
                or self._template.format not in ("ruie", "json")):
            return [tuple(labels)]
        n = -(-len(labels) // self.max_labels)
        size, extra = divmod(len(labels), n)
        groups, start = [], 0
        for i in range(n):
            end = start + size + (i < extra)
            groups.append(tuple(labels[start:end]))
            start = end
        return groups

    def _group_builders(self) -> list[PromptBuilder]:
        if self._groups is None:
            from dataclasses import replace

            self._groups = []
            for group in self.label_groups:
                keep = set(group)
                sub = Schema(tuple(t for t in self.schema.entity_types if t.name in keep), (), (),
                             {raw: lab for raw, lab in self.schema.label_map.items() if lab in keep})
                self._groups.append(replace(self, schema=sub, max_labels=None))
        return self._groups

    @property
    def version(self) -> str:
        return self._template.version

    @property
    def output_json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema an answer must satisfy (JSON formats), for constrained decoding."""
        if self.format.name == "json":
            return self.schema.json_schema(JsonFormat.parts(self.task))
        if self.format.name == "question":
            return {"type": "array", "items": {"type": "string", "minLength": 1}}
        return None

    # --- rendering ---------------------------------------------------------------------------
    def _schema_order(self, names: list[str], record_id: str) -> list[str]:
        if self.schema_seed is None:
            return names
        rng = random.Random(f"{self.schema_seed}:{record_id}")
        names = list(names)
        rng.shuffle(names)
        return names

    def _units(self, record: Record) -> list[tuple[str | None, Event | None]]:
        """Prompts per record: one, or one per entity type (question format), or one per event (EAE)."""
        if self._template.format in ("question", "markers"):
            return [(label, None) for label in self.schema.entity_labels]
        if self.task == "eae":
            return [(None, ev) for ev in record.events]
        return [(None, None)]

    def _block(self, record: Record, label: str | None, event: Event | None, with_output: bool) -> dict[str, Any]:
        fmt = self.format
        block: dict[str, Any] = {"input": record.text, "type": label,
                                 "description": self.schema.description(label) if label else None}
        if fmt.name == "ruie":
            order = None
            if self.task != "eae":
                names = {"ner": self.schema.entity_labels, "re": self.schema.relation_labels,
                         "ed": self.schema.event_labels}[self.task]
                own = record.meta.get("schema", {}).get(self.task) if with_output else None
                order = self._schema_order(list(own) if own else names, record.id)
            block["schema"] = fmt.schema_text(self.schema, self.task, record, event, order)  # type: ignore[attr-defined]
        if with_output:
            block["output"] = (fmt.linearize(record, self.task, event, label=label)  # type: ignore[call-arg]
                               if isinstance(fmt, QuestionFormat) else fmt.linearize(record, self.task, event))
        return block

    def _render(self, record: Record, label: str | None, event: Event | None, demos: Sequence[Record]) -> str:
        demo_blocks = []
        for d in reversed(demos):  # most relevant last
            d_label, d_event = label, None
            if self.task == "eae":
                if not d.events:
                    continue
                d_event = d.events[0]
            demo_blocks.append(self._block(d, d_label, d_event, with_output=True))
        types = [{"name": t.name, "description": t.description} for t in self.schema.entity_types]
        rel_types = [{"name": t.name, "description": t.description} for t in self.schema.relation_types]
        return self.registry.render(self.template, instruction=self.instruction, demos=demo_blocks,  # type: ignore[union-attr]
                                    query=self._block(record, label, event, with_output=False),
                                    types=types, relation_types=rel_types)

    def _count(self, text: str) -> int:
        return self.count_tokens(text) if self.count_tokens else len(text.split())

    def build(self, record: Record, demonstrations: Sequence[Record] = ()) -> list[Prompt]:
        """Prompts for one record; demonstrations equal to the query text are left out."""
        if len(self.label_groups) > 1:
            from dataclasses import replace

            out = []
            for group, sub in zip(self.label_groups, self._group_builders(), strict=True):
                out += [replace(p, labels=group) for p in sub.build(record, [_only(d, sub.schema) for d in demonstrations])]
            return out
        demos = [d for d in demonstrations if d.text != record.text]
        prompts = []
        for label, event in self._units(record):
            use = list(demos)
            text = self._render(record, label, event, use)
            while self.max_prompt_tokens is not None and use and self._count(text) > self.max_prompt_tokens:
                use.pop()  # the least relevant
                text = self._render(record, label, event, use)
            messages = ({"role": "user", "content": text},) if self.chat else None
            prompts.append(Prompt(record.id, text, self.version, label, event, tuple(d.id for d in use),
                                  self.stop, messages, self.output_json_schema))
        return prompts

    def render(self, record: Record, demonstrations: Sequence[Record] = ()) -> str:
        """Preview: the prompts of a record as one string (notebooks, ``openie prompt render``)."""
        return "\n\n=====\n\n".join(p.text for p in self.build(record, demonstrations))

    # --- reading outputs ---------------------------------------------------------------------
    def parse(self, prompt: Prompt, text: str, record: Record) -> ParseResult:
        if isinstance(self.format, QuestionFormat):
            return self.format.parse(text, record, self.schema, self.task, prompt.event, label=prompt.label)  # type: ignore[call-arg]
        return self.format.parse(text, record, self.schema, self.task, prompt.event)

    def parse_record(self, record: Record, prompts: Sequence[Prompt], texts: Sequence[str]) -> Record:
        """All outputs of one record's prompts -> one prediction record (problems in ``meta``)."""
        if len(self.label_groups) > 1:  # each answer read by its group's builder (only its types are valid)
            by_group = dict(zip(self.label_groups, self._group_builders(), strict=True))
            result = ParseResult()
            for p, t in zip(prompts, texts, strict=True):
                result.extend(by_group[p.labels].parse(p, t, record))  # type: ignore[index]
            return result.to_record(record)
        if isinstance(self.format, QuestionFormat):
            answers = [(t, p.label) for p, t in zip(prompts, texts, strict=True)]
            return self.format.parse_many(answers, record, self.schema).to_record(record)
        result = ParseResult()
        for p, t in zip(prompts, texts, strict=True):
            result.extend(self.parse(p, t, record))
        return result.to_record(record)

    # --- training data -----------------------------------------------------------------------
    def target(self, record: Record, prompt: Prompt) -> str:
        """The gold output for a prompt, as the model should write it after the prompt."""
        fmt = self.format
        out = (fmt.linearize(record, self.task, prompt.event, label=prompt.label)  # type: ignore[call-arg]
               if isinstance(fmt, QuestionFormat) else fmt.linearize(record, self.task, prompt.event))
        return " " + out if out else out  # an empty answer (markers format) is the end token alone

    def training_pairs(self, records: Iterable[Record],
                       demonstrations: Callable[[Record], Sequence[Record]] | None = None) -> list[tuple[str, str]]:
        """(prompt, target) pairs for ``openie adapters train``; the schema is shuffled when ``schema_seed`` is set."""
        pairs = []
        for r in records:
            for p in self.build(r, demonstrations(r) if demonstrations else ()):
                pairs.append((p.text, self.target(r, p)))
        return pairs


def _only(demo: Record, schema: Schema) -> Record:
    """A demonstration showing only the mentions of ``schema``'s types (one with its own corpus schema is left as is)."""
    if demo.meta.get("schema"):
        return demo
    keep = set(schema.entity_labels)
    shown = Record(demo.id, demo.text, demo.lang, meta=dict(demo.meta))
    shown.entities = [e for e in demo.entities if schema.label_map.get(e.label, e.label) in keep]
    return shown
