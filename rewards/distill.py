"""Distilling the reward model into a bi-encoder retriever (RUIE's final stage).

The cross-encoder reward model is too slow to score a whole pool per query, so its judgement is
distilled into a bi-encoder that faiss can search: one shared encoder, ``query: `` / ``passage: ``
prefixes, mean pooling, L2-normalised embeddings, similarity / temperature 0.01. Each training
group is 1 positive (the reward model's best candidate) + ``hard_negatives`` hard negatives
(candidates outside its top 3), and every other group's passages in the batch act as in-batch
negatives. Loss = ``infonce_weight`` · InfoNCE(positive vs all passages in the batch)
+ KL between the reward model's softmax over the group and the student's (as RUIE's code computes
it: ``kl_div(log_softmax(student), softmax(teacher))``).

The result is a sentence-transformers folder: ``retrievers.DenseRetriever(folder,
query_prefix="query: ", passage_prefix="passage: ")`` searches with it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openie.records import Record
from rewards.training_loop import train_in_steps

CONFIG_FILE = "distillation.json"
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "


@dataclass
class DistillationGroup:
    """A query, its passages (positive first) and the teacher's score for each."""

    query: Record
    passages: list[Record]
    teacher_scores: list[float]


def distillation_group(query: Record, candidates: Sequence[Record], teacher_scores: Sequence[float], *,
                       hard_negatives: int = 3, exclude_top: int = 3, rng: random.Random | None = None
                       ) -> DistillationGroup | None:
    """The teacher's best candidate + ``hard_negatives`` drawn from outside its top ``exclude_top``; None if too few."""
    rng = rng or random.Random(0)
    order = sorted(range(len(candidates)), key=lambda i: (-teacher_scores[i], i))
    pool = order[exclude_top:]
    if not order or len(pool) < hard_negatives:
        return None
    chosen = [order[0], *rng.sample(pool, hard_negatives)]
    return DistillationGroup(query, [candidates[i] for i in chosen], [float(teacher_scores[i]) for i in chosen])


@dataclass
class DistillationConfig:
    epochs: int = 2
    lr: float = 3e-5
    queries_per_step: int = 8
    temperature: float = 0.01
    infonce_weight: float = 0.2
    warmup_ratio: float = 0.1
    max_seq_length: int = 128
    seed: int = 0


class BiEncoderDistiller:
    """Trains a sentence-transformers bi-encoder (packaged MiniLM by default) on ``DistillationGroup``s."""

    def __init__(self, model: Any = "minilm", *, query_prefix: str = QUERY_PREFIX, passage_prefix: str = PASSAGE_PREFIX,
                 device: str | None = None, show_progress: bool | None = None) -> None:
        self.model_name = str(model) if isinstance(model, str | Path) else None
        self._model: Any = None if self.model_name is not None else model
        self.query_prefix, self.passage_prefix, self.device = query_prefix, passage_prefix, device
        self.show_progress = show_progress
        self.history: list[dict[str, float]] = []
        self.config: DistillationConfig | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from openie.models import resolve_model

            assert self.model_name is not None
            self._model = SentenceTransformer(str(resolve_model(self.model_name)), device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> Any:
        """Mean-pooled, L2-normalised embeddings with gradients (the model's own pooling module)."""
        import torch

        features = self.model.preprocess(list(texts))
        features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
        return torch.nn.functional.normalize(self.model(features)["sentence_embedding"], dim=-1)

    def loss(self, groups: Sequence[DistillationGroup], config: DistillationConfig) -> tuple[Any, dict[str, float]]:
        import torch
        import torch.nn.functional as F  # noqa: N812

        size = len(groups[0].passages)
        if any(len(g.passages) != size for g in groups):
            raise ValueError("every distillation group in a batch needs the same number of passages")
        q = self.embed([self.query_prefix + g.query.text for g in groups])
        p = self.embed([self.passage_prefix + x.text for g in groups for x in g.passages])
        logits = q @ p.T / config.temperature  # (queries, all passages of the batch)
        targets = torch.arange(len(groups), device=logits.device) * size
        infonce = F.cross_entropy(logits, targets)
        group_logits = torch.stack([logits[i, i * size:(i + 1) * size] for i in range(len(groups))])
        teacher = torch.tensor([g.teacher_scores for g in groups], dtype=logits.dtype, device=logits.device)
        kl = F.kl_div(F.log_softmax(group_logits, dim=-1), F.softmax(teacher, dim=-1), reduction="batchmean")
        total = config.infonce_weight * infonce + kl
        return total, {"loss": float(total.detach()), "infonce": float(infonce.detach()), "kl": float(kl.detach())}

    def fit(self, groups: Sequence[DistillationGroup], config: DistillationConfig | None = None) -> list[dict[str, float]]:
        import torch

        config = config or DistillationConfig()
        if not groups:
            raise ValueError("no distillation groups")
        self.config = config
        torch.manual_seed(config.seed)
        self.model.max_seq_length = config.max_seq_length
        self.history += train_in_steps(self.model, groups, lambda batch, _rng: self.loss(batch, config),
                                       epochs=config.epochs, per_step=config.queries_per_step, lr=config.lr,
                                       warmup_ratio=config.warmup_ratio, seed=config.seed, desc="distil retriever",
                                       show_progress=self.show_progress)
        return self.history

    def save(self, path: str | Path, **extra: Any) -> Path:
        """A sentence-transformers folder plus ``distillation.json`` (prefixes, recipe, loss history)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(str(folder))
        info = {"query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix,
                "initialised_from": self.model_name, "config": asdict(self.config) if self.config else None,
                "history": self.history, **extra}
        (folder / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return folder


def read_distillation_info(path: str | Path) -> dict[str, Any]:
    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no distilled retriever ({CONFIG_FILE} is missing)")
    return json.loads((folder / CONFIG_FILE).read_text())


__all__ = ["PASSAGE_PREFIX", "QUERY_PREFIX", "BiEncoderDistiller", "DistillationConfig", "DistillationGroup",
           "distillation_group", "read_distillation_info"]
