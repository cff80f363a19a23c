"""RUIE (arXiv 2409.11673): in-context extraction with a demonstration retriever trained from LLM preferences.

``fit`` runs the paper's pipeline over a unified pool of training examples (several corpora and
tasks; NER and RE share one pool, filtered by task at retrieval time):

1. **queries** — a seeded sample of pool records, balanced over (corpus, task), split into
   training queries and a held-apart set used only for evaluation;
2. **candidates** — BM25 top-``bm25_candidates`` per query (itself excluded), of which
   ``scored_candidates`` are drawn at random (the paper scores 32);
3. **preferences** — the frozen LLM's mean log-likelihood of each query's gold output given
   ``instruction + candidate + query`` (``*.ruie-preference.v1`` templates); written one query per
   line as they come, so an interrupted run resumes where it stopped;
4. **reward** — the keyword-enhanced cross-encoder, trained on groups of 1 positive (LLM top 3) and
   7 negatives (LLM bottom 16);
5. **teacher** — reward-model scores of each training query's BM25 candidates;
6. **retriever** — the bi-encoder distilled from the reward model (0.2·InfoNCE + KL);
7. **evaluation** — on the held-apart queries: does each trained component order the LLM's
   preferred demonstrations better than its untrained starting point (and BM25)?

Every stage's output lives in the work folder with a fingerprint of everything it depends on; a
finished stage is skipped, a stale one (config changed) is redone along with all later stages.
``predict`` / ``extractor`` retrieve ``k`` demonstrations with the distilled retriever and extract
through the engine and the prompt layer (``InContextExtractor``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from openie.engines.base import Engine
from openie.records import Record
from openie.schema import Schema
from prompts.builder import PromptBuilder
from retrievers import BM25Retriever, DenseRetriever
from rewards import (
    BiEncoderDistiller,
    DistillationConfig,
    KeywordRewardModel,
    LLMPreferenceScorer,
    PreferenceExample,
    RewardTrainingConfig,
    distillation_group,
    reward_groups,
)

logger = logging.getLogger(__name__)

STAGES = ("queries", "candidates", "preferences", "reward", "teacher", "retriever", "evaluation")
INFERENCE_TEMPLATES = {"ner": "ner.ruie.v1", "re": "re.ruie.v1", "ed": "ed.ruie.v1", "eae": "eae.ruie.v1"}


@dataclass
class RUIEConfig:
    """The recipe. Defaults are scaled to a 2-core CPU (paper: 32 scored candidates, 3k/6k steps)."""

    pool: list[str] = field(default_factory=lambda: ["conll2003:train"])
    tasks: list[str] = field(default_factory=lambda: ["ner"])
    train_queries: int = 160
    heldout_queries: int = 40
    bm25_candidates: int = 100
    scored_candidates: int = 24
    top_positive: int = 3
    bottom_negative: int = 16
    group_size: int = 8
    scoring_batch_size: int = 32
    reward_model: str = "minilm"
    reward_max_length: int = 256
    query_answer_dropout: float = 0.5
    reward_training: dict[str, Any] = field(default_factory=dict)  # RewardTrainingConfig fields
    teacher_candidates: int = 32
    hard_negatives: int = 3
    retriever_model: str = "minilm"
    distillation: dict[str, Any] = field(default_factory=dict)  # DistillationConfig fields
    eval_k: list[int] = field(default_factory=lambda: [1, 3, 5])
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scored_candidates < self.top_positive + self.group_size - 1:
            raise ValueError(f"scored_candidates={self.scored_candidates} cannot fill a group of "
                             f"{self.group_size} (1 positive from the top {self.top_positive} + negatives)")
        unknown = set(self.tasks) - set(INFERENCE_TEMPLATES)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; RUIE handles {', '.join(INFERENCE_TEMPLATES)}")
        RewardTrainingConfig(**self.reward_training)
        DistillationConfig(**self.distillation)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RUIEConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown RUIE config key(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pool_schema(record: Record, task: str) -> Schema:
    """The label set a pool record was annotated with (``meta["schema"]``), as a Schema for the prompt layer."""
    labels = record.meta.get("schema", {}).get(task)
    if not labels:
        raise ValueError(f"pool record {record.id!r} has no meta['schema'][{task!r}]: load the pool with "
                         f"openie.datasets.load_pool")
    return Schema.from_dict({"entities" if task == "ner" else "relations": list(labels)})


class PreferenceRenderer:
    """(query, candidate) -> (``instruction + candidate + query`` context, gold output) with the prompt layer."""

    def __init__(self) -> None:
        self._builders: dict[tuple[str, tuple[str, ...]], PromptBuilder] = {}

    def builder(self, query: Record) -> PromptBuilder:
        task = query.meta.get("task", "ner")
        schema = pool_schema(query, task)
        key = (task, tuple(schema.entity_labels or schema.relation_labels))
        if key not in self._builders:
            self._builders[key] = PromptBuilder(f"{task}.ruie-preference.v1", schema)
        return self._builders[key]

    def __call__(self, query: Record, candidate: Record) -> tuple[str, str]:
        builder = self.builder(query)
        prompt = builder.build(query.without_annotations(), [candidate])[0]
        return prompt.text, builder.target(query, prompt)

    def answer(self, record: Record) -> str:
        return self.builder(record).target(record, self.builder(record).build(record)[0]).strip()


class RUIE:
    """Fit (stages 1-7 above) into ``workdir``; then retrieve demonstrations and extract."""

    def __init__(self, workdir: str | Path, config: RUIEConfig | None = None, *, data_root: str | None = None,
                 pool: Sequence[Record] | None = None, show_progress: bool = True) -> None:
        self.workdir = Path(workdir)
        self.config = config or self._saved_config() or RUIEConfig()
        self.data_root, self.show_progress = data_root, show_progress
        self._pool = list(pool) if pool is not None else None
        self.renderer = PreferenceRenderer()

    # -- bookkeeping --------------------------------------------------------------------------
    def _saved_config(self) -> RUIEConfig | None:
        path = self.workdir / "config.json"
        return RUIEConfig.from_dict(json.loads(path.read_text())["ruie"]) if path.is_file() else None

    @property
    def pool(self) -> list[Record]:
        if self._pool is None:
            from openie.datasets import load_pool

            self._pool = load_pool(self.config.pool, tasks=self.config.tasks, data_root=self.data_root)
        return self._pool

    def _stages(self) -> dict[str, str]:
        path = self.workdir / "stages.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _mark(self, stage: str, fingerprint: str) -> None:
        stages = self._stages()
        stages[stage] = fingerprint
        tmp = self.workdir / "stages.json.tmp"
        tmp.write_text(json.dumps(stages, indent=2) + "\n")
        os.replace(tmp, self.workdir / "stages.json")

    def _fingerprints(self, engine_id: str) -> dict[str, str]:
        c = asdict(self.config)
        parts = {
            "queries": [c["pool"], c["tasks"], c["train_queries"], c["heldout_queries"], c["seed"]],
            "candidates": [c["bm25_candidates"], c["scored_candidates"]],
            "preferences": [engine_id, [PromptBuilder(f"{t}.ruie-preference.v1").version for t in c["tasks"]]],
            "reward": [c["reward_model"], c["reward_max_length"], c["query_answer_dropout"], c["reward_training"],
                       c["top_positive"], c["bottom_negative"], c["group_size"]],
            "teacher": [c["teacher_candidates"]],
            "retriever": [c["retriever_model"], c["distillation"], c["hard_negatives"]],
            "evaluation": [c["eval_k"], 3],  # 3: gain@k added
        }
        out, chain = {}, ""
        for stage in STAGES:
            chain = _digest([chain, parts[stage]])
            out[stage] = chain
        return out

    def status(self, engine_id: str | None = None) -> dict[str, str]:
        """Each stage: ``done``, ``stale`` (its inputs changed) or ``todo``."""
        done = self._stages()
        prints = self._fingerprints(engine_id) if engine_id else {}
        return {s: ("todo" if s not in done or not self._outputs_present(s)
                    else "done" if not prints or done[s] == prints[s] else "stale") for s in STAGES}

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, engine: Engine, *, until: str = "evaluation") -> dict[str, Any]:
        """Run (or resume) every stage up to ``until``; returns the held-apart evaluation when it ran."""
        if until not in STAGES:
            raise ValueError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        prints = self._fingerprints(engine.model_id)
        (self.workdir / "config.json").write_text(json.dumps(
            {"ruie": asdict(self.config), "llm": engine.model_id, "data_root": self.data_root}, indent=2) + "\n")
        done = self._stages()
        stale = False
        for stage in STAGES[:STAGES.index(until) + 1]:
            if not stale and done.get(stage) == prints[stage] and self._outputs_present(stage):
                continue
            stale = True  # everything after a redone stage is redone too
            marker = self.workdir / "preferences.fingerprint"
            partial = stage == "preferences" and marker.is_file() and marker.read_text() == prints[stage]
            if not partial:  # scores written by an interrupted run of the same config are kept
                self._clear(stage)
            if stage == "preferences":
                marker.write_text(prints[stage])
            logger.info("RUIE stage %s", stage)
            t0 = time.perf_counter()
            getattr(self, f"_stage_{stage}")(engine)
            self._mark(stage, prints[stage])
            self._record_time(stage, time.perf_counter() - t0)
        path = self.workdir / "evaluation.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _outputs_present(self, stage: str) -> bool:
        """Model folders are not committed with a work folder's records: a missing one is rebuilt."""
        marker = {"reward": "reward/reward_model.json", "retriever": "retriever/distillation.json"}.get(
            stage, f"{stage}.jsonl" if stage != "evaluation" else "evaluation.json")
        return (self.workdir / marker).is_file()

    def _record_time(self, stage: str, seconds: float) -> None:
        path = self.workdir / "timings.json"
        times = json.loads(path.read_text()) if path.is_file() else {}
        times[stage] = round(times.get(stage, 0.0) + seconds, 1) if stage == "preferences" else round(seconds, 1)
        path.write_text(json.dumps(times, indent=2) + "\n")

    def _clear(self, stage: str) -> None:
        for name in (f"{stage}.jsonl", f"{stage}.json", stage):
            p = self.workdir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        stages = self._stages()
        if stage in stages:
            del stages[stage]
            (self.workdir / "stages.json").write_text(json.dumps(stages, indent=2) + "\n")

    def _stage_queries(self, engine: Engine) -> None:
        c = self.config
        rng = random.Random(c.seed)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(self.pool):
            if self._answerable(r):
                groups.setdefault((r.meta.get("dataset", ""), r.meta.get("task", "ner")), []).append(i)
        for ix in groups.values():
            rng.shuffle(ix)
        want = c.train_queries + c.heldout_queries
        chosen: list[int] = []
        while len(chosen) < want and any(groups.values()):  # round-robin: every (corpus, task) alike
            for key in sorted(groups):
                if groups[key] and len(chosen) < want:
                    chosen.append(groups[key].pop())
        rng.shuffle(chosen)
        rows = [{"position": p, "split": "heldout" if n < c.heldout_queries else "train"} for n, p in enumerate(chosen)]
        _write_rows(self.workdir / "queries.jsonl", rows)

    @staticmethod
    def _answerable(record: Record) -> bool:
        task = record.meta.get("task", "ner")
        return bool(record.relations) if task == "re" else True

    def _queries(self) -> list[tuple[Record, str]]:
        return [(self.pool[row["position"]], row["split"]) for row in _read_rows(self.workdir / "queries.jsonl")]

    def _stage_candidates(self, engine: Engine) -> None:
        c = self.config
        bm25 = BM25Retriever(backend="bm25s", show_progress=self.show_progress)
        bm25.index(self.pool)
        position = {id(r): i for i, r in enumerate(self.pool)}
        rows = []
        for n, (query, _) in enumerate(self._iter(self._queries(), "BM25 candidates")):
            hits = [position[id(r)] for r, _ in bm25.retrieve(query, c.bm25_candidates)]
            rng = random.Random(f"{c.seed}:{n}")
            scored = sorted(rng.sample(range(len(hits)), min(c.scored_candidates, len(hits))))
            rows.append({"query": n, "bm25": hits, "scored": [hits[i] for i in scored]})
        _write_rows(self.workdir / "candidates.jsonl", rows)

    def _candidates(self) -> list[dict[str, Any]]:
        return _read_rows(self.workdir / "candidates.jsonl")

    def _stage_preferences(self, engine: Engine) -> None:
        path = self.workdir / "preferences.jsonl"
        done = {row["query"] for row in _read_rows(path)} if path.is_file() else set()
        queries = self._queries()
        todo = [row for row in self._candidates() if row["query"] not in done]
        scorer = LLMPreferenceScorer(engine, self.renderer, batch_size=self.config.scoring_batch_size,
                                     show_progress=self.show_progress)
        items = ((queries[row["query"]][0], [self.pool[p] for p in row["scored"]]) for row in todo)
        with open(path, "a", encoding="utf-8") as out:
            for row, example in zip(todo, scorer.score_many(items, total=len(todo)), strict=True):
                out.write(json.dumps({"query": row["query"], "positions": row["scored"],
                                      "scores": example.scores}) + "\n")
                out.flush()

    def preferences(self, split: str | None = None) -> list[PreferenceExample]:
        queries = self._queries()
        out = []
        for row in _read_rows(self.workdir / "preferences.jsonl"):
            query, s = queries[row["query"]]
            if split is None or s == split:
                out.append(PreferenceExample(query, [self.pool[p] for p in row["positions"]], row["scores"]))
        return out

    def _reward_model(self, model: str | None = None) -> KeywordRewardModel:
        return KeywordRewardModel(model or self.config.reward_model, max_length=self.config.reward_max_length,
                                  query_answer_dropout=self.config.query_answer_dropout,
                                  format_answer=self.renderer.answer, show_progress=self.show_progress)

    def _stage_reward(self, engine: Engine) -> None:
        c = self.config
        groups = reward_groups(self.preferences("train"), group_size=c.group_size, top=c.top_positive,
                               bottom=c.bottom_negative, seed=c.seed)
        model = self._reward_model()
        model.fit(groups, RewardTrainingConfig(**{"seed": c.seed, **c.reward_training}))
        model.save(self.workdir / "reward", groups=len(groups))

    def reward_model(self) -> KeywordRewardModel:
        return KeywordRewardModel.load(self.workdir / "reward", format_answer=self.renderer.answer,
                                       show_progress=self.show_progress)

    def _stage_teacher(self, engine: Engine) -> None:
        c = self.config
        reward = self.reward_model()
        queries = self._queries()
        rows = []
        for row in self._iter([r for r in self._candidates() if queries[r["query"]][1] == "train"], "teacher scores"):
            positions = row["bm25"][:c.teacher_candidates]
            scores = reward.score(queries[row["query"]][0], [self.pool[p] for p in positions])
            rows.append({"query": row["query"], "positions": positions, "scores": scores})
        _write_rows(self.workdir / "teacher.jsonl", rows)

    def _stage_retriever(self, engine: Engine) -> None:
        c = self.config
        queries = self._queries()
        rng = random.Random(c.seed)
        groups = []
        for row in _read_rows(self.workdir / "teacher.jsonl"):
            g = distillation_group(queries[row["query"]][0], [self.pool[p] for p in row["positions"]], row["scores"],
                                   hard_negatives=c.hard_negatives, rng=rng)
            if g is not None:
                groups.append(g)
        distiller = BiEncoderDistiller(c.retriever_model, show_progress=self.show_progress)
        distiller.fit(groups, DistillationConfig(**{"seed": c.seed, **c.distillation}))
        distiller.save(self.workdir / "retriever", groups=len(groups))

    def _stage_evaluation(self, engine: Engine) -> None:  # writes evaluation.json and evaluation.md
        report = evaluate_components(self.preferences("heldout"), reward=self.reward_model(),
                                     untrained_reward=self._reward_model(), student=self.workdir / "retriever",
                                     base_encoder=self.config.retriever_model, ks=self.config.eval_k,
                                     seed=self.config.seed)
        report["held_apart_queries"] = len(self.preferences("heldout"))
        (self.workdir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.workdir / "evaluation.md").write_text(evaluation_markdown(self.workdir))

    def _iter(self, items: Sequence[Any], desc: str) -> Iterable[Any]:
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, disable=not self.show_progress)

    # -- inference ----------------------------------------------------------------------------
    def retriever(self, *, cache: bool = True) -> DenseRetriever:
        """The distilled retriever indexed on the pool (the index is saved in the work folder once)."""
        folder = self.workdir / "retriever"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist: run RUIE.fit (openie ruie fit) first")
        from rewards.distill import read_distillation_info

        info = read_distillation_info(folder)
        index_dir = self.workdir / f"index-{_pool_digest(self.pool)}"
        if cache and index_dir.is_dir():
            return DenseRetriever.load(index_dir, model=str(folder), show_progress=self.show_progress)
        retriever = DenseRetriever(str(folder), query_prefix=info["query_prefix"], passage_prefix=info["passage_prefix"],
                                   show_progress=self.show_progress)
        retriever.index(self.pool)
        if cache:
            retriever.save(index_dir)
        return retriever

    def extractor(self, engine: Engine, schema: Schema, *, k: int = 8, template: str | None = None,
                  **kw: Any):
        """An ``InContextExtractor`` whose demonstrations come from the distilled retriever."""
        from openie.methods.icl import InContextExtractor, RetrieverDemonstrations
        from retrievers.base import MemoizedRetriever

        builder = PromptBuilder(template or INFERENCE_TEMPLATES[self.config.tasks[0]], schema)
        demos = RetrieverDemonstrations(MemoizedRetriever(self.retriever()), k, task=builder.task)
        return InContextExtractor(engine, builder, demonstrations=demos, show_progress=self.show_progress, **kw)

    def predict(self, records: Iterable[Record], engine: Engine, schema: Schema, *, k: int = 8,
                template: str | None = None, **kw: Any) -> Iterator[Record]:
        yield from self.extractor(engine, schema, k=k, template=template, **kw).extract(records)


def evaluation_markdown(workdir: str | Path) -> str:
    """The held-apart evaluation and stage timings of a fitted work folder as a Markdown report."""
    workdir = Path(workdir)
    report = json.loads((workdir / "evaluation.json").read_text())
    config = json.loads((workdir / "config.json").read_text())
    times_path = workdir / "timings.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    rows = report["components"]
    metrics = list(next(iter(rows.values())))
    lines = [f"# RUIE fit: {workdir.name}", "",
             f"Scoring LLM: `{config['llm']}`. Pool: {', '.join(config['ruie']['pool'])} "
             f"(tasks: {', '.join(config['ruie']['tasks'])}).", "",
             f"Held-apart evaluation on {report['held_apart_queries']} queries never used in training: each "
             "query's LLM-scored candidates are ranked by each component. recall@k: share of the LLM's top 3 "
             "among the component's top k; gain@k: mean LLM score (mean log-likelihood per token of the gold "
             "answer) of the component's top k minus that of all candidates; mrr: reciprocal rank of the "
             "LLM's best candidate; spearman: rank correlation with the LLM.", "",
             "| component | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    if times:
        lines += ["", "Stage wall-clock seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + "."]
    lines += ["", "Recipe: `config.json`; re-run (finished stages are skipped): `openie ruie fit <fit config>`."]
    return "\n".join(lines) + "\n"


def _pool_digest(pool: Sequence[Record]) -> str:
    h = hashlib.sha256()
    for r in pool:
        h.update(f"{r.id}\x00{r.meta.get('task')}\x00{r.text}\n".encode())
    return h.hexdigest()[:12]


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # the last line of a killed run
                    break
    return rows


# ---------------------------------------------------------------------------------------------
# held-apart evaluation
# ---------------------------------------------------------------------------------------------

def ranking_metrics(llm_scores: Sequence[float], scores: Sequence[float], ks: Sequence[int],
                    top: int = 3) -> dict[str, float]:
    """How well ``scores`` order candidates the way the LLM does.

    ``recall@k``: share of the LLM's top ``top`` candidates among the best ``k`` by ``scores``;
    ``gain@k``: mean LLM score of the best ``k`` by ``scores`` minus the mean over all candidates
    (how much more useful the picked demonstrations are than random ones; well defined under ties);
    ``mrr``: reciprocal rank of the LLM's best candidate; ``spearman``: rank correlation.
    """
    llm = np.asarray(llm_scores, dtype=float)
    ours = np.asarray(scores, dtype=float)
    n = len(llm)
    llm_order = sorted(range(n), key=lambda i: (-llm[i], i))
    our_order = sorted(range(n), key=lambda i: (-ours[i], i))
    preferred = set(llm_order[:top])
    out = {f"recall@{k}": len(preferred & set(our_order[:k])) / len(preferred) for k in ks}
    out.update({f"gain@{k}": float(llm[our_order[:k]].mean() - llm.mean()) for k in ks})
    out["mrr"] = 1.0 / (our_order.index(llm_order[0]) + 1)
    rank_llm = np.empty(n)
    rank_llm[llm_order] = np.arange(n)
    rank_ours = np.empty(n)
    rank_ours[our_order] = np.arange(n)
    out["spearman"] = float(np.corrcoef(rank_llm, rank_ours)[0, 1]) if n > 1 else 0.0
    return out


def _mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]} if rows else {}


def evaluate_components(examples: Sequence[PreferenceExample], *, reward: KeywordRewardModel,
                        untrained_reward: KeywordRewardModel, student: str | Path, base_encoder: str,
                        ks: Sequence[int] = (1, 3, 5), seed: int = 0) -> dict[str, Any]:
    """Each trained component against its untrained starting point on held-apart LLM preferences."""
    import torch

    from retrievers import SentenceEncoder
    from rewards.distill import read_distillation_info

    info = read_distillation_info(student)
    encoders = {
        "distilled retriever": SentenceEncoder(str(student), query_prefix=info["query_prefix"],
                                               passage_prefix=info["passage_prefix"], show_progress=False),
        "untrained bi-encoder (start point)": SentenceEncoder(base_encoder, show_progress=False),
    }
    torch.manual_seed(seed)  # the untrained reward head is random: fix it
    rows: dict[str, list[dict[str, float]]] = {}

    def add(name: str, llm: Sequence[float], scores: Sequence[float]) -> None:
        rows.setdefault(name, []).append(ranking_metrics(llm, scores, ks))

    for ex in examples:
        keep = [i for i, s in enumerate(ex.scores) if s > -100]
        if len(keep) < 4:
            continue
        llm = [ex.scores[i] for i in keep]
        cands = [ex.candidates[i] for i in keep]
        add("reward model (query with answer)", llm, reward.score(ex.query, cands))
        add("reward model (query text only, as reranker)", llm, reward.score(ex.query, cands, with_answer=False))
        add("untrained reward model (start point)", llm, untrained_reward.score(ex.query, cands))
        for name, enc in encoders.items():
            q = enc.encode([ex.query.text], kind="query")[0]
            p = enc.encode([c.text for c in cands], kind="passage")
            add(name, llm, (p @ q).tolist())
        add("BM25 order", llm, [-float(i) for i in range(len(cands))])  # candidates are kept in BM25 order
        add("random order", llm, np.random.default_rng(seed + len(rows.get("random order", []))).random(len(cands)).tolist())
    return {"metric_note": "ranking of each held-apart query's LLM-scored candidates; recall@k of the LLM's top 3",
            "components": {name: _mean(r) for name, r in rows.items()}}


@dataclass
class FitPlan:
    """A RUIE fit config file: the recipe, the scoring LLM, the work folder and the engine cache."""

    config: RUIEConfig
    engine: dict[str, Any]
    workdir: Path
    cache: str | None
    source: Path | None = None

    def create_engine(self) -> Engine:
        from openie.engines import create_engine

        e = dict(self.engine)
        return create_engine(e.pop("backend", "hf"), e.pop("model", "gemma-3-270m"), cache=self.cache,
                             **{**e.pop("options", {}), **e})


def load_fit_plan(path: str | Path, workdir: str | Path | None = None) -> FitPlan:
    """Read a YAML fit config: ``ruie:`` (RUIEConfig fields), ``engine:`` (backend, model, dtype, options),
    ``workdir:`` and ``cache:`` (paths relative to the file). Errors name the file and key."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    unknown = set(data) - {"ruie", "engine", "workdir", "cache", "description"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {sorted(unknown)}; known: ruie, engine, workdir, cache")
    try:
        config = RUIEConfig.from_dict(data.get("ruie") or {})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: ruie: {err}") from None
    base = path.parent
    target = Path(workdir) if workdir is not None else base / data.get("workdir", path.stem)
    cache = data.get("cache")
    cache_path = str(base / cache) if isinstance(cache, str) else (str(target / "llm_cache.sqlite") if cache else None)
    return FitPlan(config, dict(data.get("engine") or {}), target, cache_path, path)


__all__ = ["INFERENCE_TEMPLATES", "FitPlan", "evaluation_markdown", "load_fit_plan", "RUIE", "STAGES", "PreferenceRenderer", "RUIEConfig", "evaluate_components",
           "pool_schema", "ranking_metrics"]
