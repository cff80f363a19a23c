"""RUIE's keyword-enhanced reward model: a cross-encoder trained to predict which demonstrations the LLM prefers.

Input pairs are (query with its gold answer, candidate with its gold answer); in both texts the
gold spans are wrapped as ``<Keyword> span </Keyword>`` (overlapping spans merged into one), which
tells the encoder what the extraction is about. Training groups hold 1 positive (from the LLM's
top 3) and 7 negatives (from its bottom 16), scored jointly with cross-entropy (listwise).

It is initialised from the packaged all-MiniLM-L6-v2 by default (the paper uses ELECTRA-base),
whose scoring head starts random. At inference the query has no gold answer: ``rerank`` scores
the query's plain text, so a model meant for reranking should be trained with
``query_answer_dropout`` > 0 (queries shown without answer and keywords that often).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openie.records import Record
from rewards.preference import PreferenceExample
from rewards.training_loop import train_in_steps

KEYWORD_OPEN, KEYWORD_CLOSE = "<Keyword>", "</Keyword>"
CONFIG_FILE = "reward_model.json"
Result = tuple[Record, float]


def keyword_spans(record: Record) -> list[tuple[int, int]]:
    """Gold spans of every annotation (entities, relation arguments, triggers, event arguments), overlaps merged."""
    spans = [(e.start, e.end) for e in record.entities]
    spans += [(x.start, x.end) for r in record.relations for x in (r.head, r.tail)]
    spans += [(ev.trigger.start, ev.trigger.end) for ev in record.events]
    spans += [(a.start, a.end) for ev in record.events for a in ev.arguments]
    merged: list[list[int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def mark_keywords(record: Record) -> str:
    """The record's text with each (merged) gold span wrapped as ``<Keyword> span </Keyword>``."""
    out, at = [], 0
    for start, end in keyword_spans(record):
        out += [record.text[at:start], f"{KEYWORD_OPEN} {record.text[start:end]} {KEYWORD_CLOSE}"]
        at = end
    out.append(record.text[at:])
    return "".join(out)


def default_answer(record: Record) -> str:
    """The gold answer in RUIE's linearisation for the record's task (``meta["task"]``, default NER)."""
    task = record.meta.get("task", "ner")
    if task == "re":
        items = [f"{r.label}: {r.head.text}, {r.tail.text}" for r in record.relations]
    elif task == "ed":
        items = [f"{ev.trigger.label}: {ev.trigger.text}" for ev in record.events]
    else:
        items = [f"{e.label}: {e.text}" for e in sorted(record.entities, key=lambda e: (e.start, e.end, e.label))]
    return "; ".join(items) or "None"


@dataclass
class RewardGroup:
    """One training group: the positive candidate first, then the negatives."""

    query: Record
    candidates: list[Record]


def reward_groups(examples: Sequence[PreferenceExample], *, group_size: int = 8, top: int = 3, bottom: int = 16,
                  seed: int = 0) -> list[RewardGroup]:
    """RUIE's groups: 1 positive drawn from the LLM's top ``top``, ``group_size - 1`` negatives from its bottom ``bottom``.

    Queries with too few candidates (fewer than ``top`` + ``group_size - 1``) are skipped; the
    positive and negative ranges never overlap.
    """
    rng = random.Random(seed)
    groups = []
    for ex in examples:
        order = ex.ranking()
        n_neg = group_size - 1
        if len(order) < top + n_neg:
            continue
        positives = order[:top]
        negatives = order[max(top, len(order) - bottom):]
        pos = rng.choice(positives)
        negs = rng.sample(negatives, n_neg)
        groups.append(RewardGroup(ex.query, [ex.candidates[i] for i in [pos, *negs]]))
    return groups


@dataclass
class RewardTrainingConfig:
    epochs: int = 2
    lr: float = 2e-5
    groups_per_step: int = 4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0


class KeywordRewardModel:
    """Cross-encoder over (query + gold answer, candidate) with keyword markup; a ``Reranker`` once trained."""

    def __init__(self, model: Any = "minilm", *, max_length: int = 256, batch_size: int = 32,
                 query_answer_dropout: float = 0.0, device: str | None = None,
                 format_answer: Callable[[Record], str] | None = None, show_progress: bool | None = None) -> None:
        if not 0.0 <= query_answer_dropout <= 1.0:
            raise ValueError(f"query_answer_dropout must be in [0, 1], got {query_answer_dropout}")
        self.model_name = str(model) if isinstance(model, str | Path) else None
        self._model: Any = None if self.model_name is not None else model
        self.max_length, self.batch_size, self.device = int(max_length), int(batch_size), device
        self.query_answer_dropout = float(query_answer_dropout)
        self.format_answer = format_answer or default_answer
        self.show_progress = show_progress
        self.history: list[dict[str, float]] = []

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            from openie.models import resolve_model

            assert self.model_name is not None
            self._model = CrossEncoder(str(resolve_model(self.model_name)), num_labels=1,
                                       max_length=self.max_length, device=self.device)
        return self._model

    # -- texts --------------------------------------------------------------------------------
    def format_query(self, query: Record | str, with_answer: bool = True) -> str:
        if isinstance(query, str):
            return query
        if not with_answer:
            return query.text
        return f"{mark_keywords(query)} Answer: {self.format_answer(query)}"

    def format_candidate(self, candidate: Record) -> str:
        return f"{mark_keywords(candidate)} Answer: {self.format_answer(candidate)}"

    # -- scoring ------------------------------------------------------------------------------
    def _logits(self, pairs: Sequence[tuple[str, str]]) -> Any:
        features = self.model.preprocess(list(pairs))
        features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
        return self.model(features)["scores"].view(-1)

    def score(self, query: Record | str, candidates: Sequence[Record], *, with_answer: bool = True) -> list[float]:
        """Raw logits (higher: the LLM is predicted to prefer the candidate); ``with_answer`` uses the query's gold."""
        import torch

        q = self.format_query(query, with_answer)
        pairs = [(q, self.format_candidate(c)) for c in candidates]
        out: list[float] = []
        self.model.eval()
        with torch.inference_mode():
            for i in range(0, len(pairs), self.batch_size):
                out += [float(x) for x in self._logits(pairs[i:i + self.batch_size]).float().cpu()]
        return out

    def rerank(self, query: Record | str, candidates: Sequence[Result], k: int) -> list[Result]:
        """Reranker protocol: the query is an unlabelled input, so it is scored without answer or keywords."""
        records = [r for r, _ in candidates]
        scores = self.score(query, records, with_answer=False)
        order = sorted(range(len(records)), key=lambda i: (-round(scores[i], 9), i))
        return [(records[i], scores[i]) for i in order[:max(k, 0)]]

    # -- training -----------------------------------------------------------------------------
    def fit(self, groups: Sequence[RewardGroup], config: RewardTrainingConfig | None = None) -> list[dict[str, float]]:
        """Listwise cross-entropy over each group (the positive is candidate 0); returns the loss per step."""
        import torch

        config = config or RewardTrainingConfig()
        if not groups:
            raise ValueError("no reward training groups (too few scored candidates per query?)")
        torch.manual_seed(config.seed)
        model = self.model  # loaded after seeding: the random scoring head is reproducible

        def loss_fn(batch: list[RewardGroup], rng: random.Random) -> tuple[Any, dict[str, float]]:
            pairs = []
            for g in batch:
                q = self.format_query(g.query, with_answer=rng.random() >= self.query_answer_dropout)
                pairs += [(q, self.format_candidate(c)) for c in g.candidates]
            logits = self._logits(pairs).float().view(len(batch), -1)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long,
                                                                         device=logits.device))
            return loss, {"loss": float(loss.detach())}

        self.history += train_in_steps(model, groups, loss_fn, epochs=config.epochs, per_step=config.groups_per_step,
                                       lr=config.lr, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio,
                                       seed=config.seed, desc="reward model", show_progress=self.show_progress)
        return self.history

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path, **extra: Any) -> Path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(str(folder))
        config = {"max_length": self.max_length, "batch_size": self.batch_size,
                  "query_answer_dropout": self.query_answer_dropout, "initialised_from": self.model_name,
                  "history": self.history, **extra}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None,
             format_answer: Callable[[Record], str] | None = None, show_progress: bool | None = None) -> KeywordRewardModel:
        folder = Path(path)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder} holds no reward model ({CONFIG_FILE} is missing)")
        config = json.loads((folder / CONFIG_FILE).read_text())
        model = cls(str(folder), max_length=config["max_length"], batch_size=config["batch_size"],
                    query_answer_dropout=config["query_answer_dropout"], device=device,
                    format_answer=format_answer, show_progress=show_progress)
        model.history = config.get("history", [])
        return model

    def __repr__(self) -> str:
        return f"KeywordRewardModel(model={self.model_name!r})"


__all__ = ["KEYWORD_CLOSE", "KEYWORD_OPEN", "KeywordRewardModel", "RewardGroup", "RewardTrainingConfig",
           "default_answer", "keyword_spans", "mark_keywords", "reward_groups"]
