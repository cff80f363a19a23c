"""``openie extract --ray-address``: the same extraction job, its batches run by a Ray Data actor pool.

Only the step "batches of records -> predictions" moves to Ray; :func:`openie.experiments.extract.extract_file`
still scans the input, resumes, writes the output in input order (flush + fsync per batch) and
scores it, so the output file, its sidecar and resume behave exactly as in a local run.

The pipeline::

    ray.data.from_items([{start, stop}, ...])    block descriptors over the pending records
      .flat_map(_read_block)                     each task reads its own slice of the input
      .map_batches(ExtractionWorker,             an actor pool: one engine per actor, built from
                   concurrency=workers,          the same ExtractorSpec as a local run
                   num_gpus=gpus_per_worker, batch_size=batch_size)
      .iter_rows()                               in input order (preserve_order), back to the driver

Records never pass through the driver: read tasks seek into the input file (JSONL: via byte
offsets the driver's first pass indexed every ``INDEX_EVERY`` records) or load the corpus, so
the input must be readable at the same path on every node (a shared file system), as must the
demonstration pool and any adapter folders. Resume skips finished records before dispatching:
the descriptors start after the verified prefix of the output. Blocks are multiples of the batch
size, aligned like the local run's batches, so each actor gets the batches a local run makes.

Mapping to a multi-GPU cluster (one vLLM engine per GPU):

- Start Ray on every node (``ray start --head`` / ``ray start --address=HEAD:6379``) and run
  ``openie extract IN OUT --backend vllm --ray-address auto`` (or ``ray://HEAD:10001``).
- Each actor requests ``num_gpus=1`` (``--gpus-per-worker 1``) and builds one ``VLLMEngine`` on
  the GPU Ray assigns it (Ray sets ``CUDA_VISIBLE_DEVICES`` per actor); the pool size (``--workers``)
  defaults to the cluster's GPUs divided by ``gpus_per_worker``. With 8 nodes of 8 GPUs, 64
  engines run concurrently, each fed ``batch_size`` records at a time; raise ``batch_size`` so
  vLLM's continuous batching has enough sequences in flight (e.g. 256 per GPU).
- A model too big for one GPU: ``gpus_per_worker=2`` and ``engine_options={"tensor_parallel_size": 2}``.
- The engine cache is SQLite: give each node a local path (or ``--no-cache``), never a path on a
  network file system shared by several nodes.
- On CPU machines (as here) workers are CPU actors (``cpus_per_worker``), one engine each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from openie.errors import OpenIEError
from openie.experiments.job import (
    BatchCounts,
    ExtractError,
    ExtractorSpec,
    InputScan,
    RecordSource,
    predict_batch,
)
from openie.records import Record

BLOCK_BATCHES = 4  # batches per read block


def _read_block(row: dict[str, Any], source: RecordSource, scan: InputScan) -> list[dict[str, Any]]:
    """One block descriptor -> its records as rows ``{idx, record}`` (JSON text keeps rows simple)."""
    start, stop = int(row["start"]), int(row["stop"])
    return [{"idx": start + i, "record": json.dumps(r.to_dict(), ensure_ascii=False)}
            for i, r in enumerate(source.records(scan, start, stop))]


class ExtractionWorker:
    """A Ray Data actor: builds one engine and extractor from the spec, then predicts batches."""

    def __init__(self, spec: ExtractorSpec, torch_threads: int | None = None):
        if torch_threads is not None:
            try:
                import torch

                torch.set_num_threads(torch_threads)
            except ImportError:
                pass
        self.extractor = spec.build()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        records = [Record.from_dict(json.loads(str(s))) for s in batch["record"]]
        preds, counts = predict_batch(self.extractor, records)
        n = len(preds)
        first = [1] + [0] * (n - 1)  # a batch's counts ride on its first row
        return {"idx": [int(i) for i in batch["idx"]],
                "pred": [json.dumps(p.to_dict(), ensure_ascii=False) for p in preds],
                **{k: [v * f for f in first] for k, v in vars(counts).items()}}


def _blocks(start: int, stop: int, batch_size: int) -> list[dict[str, int]]:
    """Descriptors ``[start, stop)`` cut at multiples of ``BLOCK_BATCHES * batch_size``."""
    size = batch_size * BLOCK_BATCHES
    out, s = [], start
    while s < stop:
        e = min(stop, (s // size + 1) * size)
        out.append({"start": s, "stop": e})
        s = e
    return out


def _connect(address: str) -> bool:
    """Connect to (or start) Ray; True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    from openie.verbosity import is_verbose

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": is_verbose(),
                              "logging_level": "INFO" if is_verbose() else "ERROR"}
    if address == "local":
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


def ray_predict(spec: ExtractorSpec, source: RecordSource, scan: InputScan, start: int, stop: int,
                gold_batches: Iterable[list[Record]], *, address: str = "local", workers: int | None = None,
                gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0
                ) -> Iterator[tuple[list[Record], list[Record], BatchCounts]]:
    """Predictions for valid records ``[start, stop)``, batch by batch in input order, paired with
    ``gold_batches`` (the driver's own stream of the same records, aligned the same way)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ExtractError("Ray is not installed: pip install 'ray[data]'") from None

    started = _connect(address)
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    try:
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        if workers is None:
            workers = max(1, int(cluster_gpus // gpus_per_worker)) if cluster_gpus and gpus_per_worker else 1
        if workers < 1:
            raise ExtractError(f"need at least one Ray worker, got {workers}")
        blocks = _blocks(start, stop, spec.batch_size)
        ds = ray.data.from_items(blocks, override_num_blocks=len(blocks))
        ds = ds.flat_map(_read_block, fn_kwargs={"source": source, "scan": scan}, num_cpus=0.1)
        threads = max(1, int(cpus_per_worker)) if spec.backend == "hf" and not gpus_per_worker else None
        ds = ds.map_batches(ExtractionWorker, fn_constructor_kwargs={"spec": spec, "torch_threads": threads},
                            batch_size=spec.batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
                            num_cpus=cpus_per_worker,
                            num_gpus=gpus_per_worker or None, batch_format="numpy")
        rows = iter(ds.iter_rows())
        waiting: dict[int, dict[str, Any]] = {}  # reorder buffer: a guard should order ever slip
        expected = start
        for gold in gold_batches:
            preds: list[Record] = []
            counts = BatchCounts()
            for record in gold:
                while expected not in waiting:
                    row = next(rows, None)
                    if row is None:
                        raise ExtractError(f"Ray returned no prediction for input record {expected}")
                    waiting[int(row["idx"])] = row
                row = waiting.pop(expected)
                pred = Record.from_dict(json.loads(str(row["pred"])))
                if pred.id != record.id:
                    raise ExtractError(f"Ray returned record {pred.id!r} where {record.id!r} was expected")
                preds.append(pred)
                counts += BatchCounts(*(int(row[k]) for k in vars(counts)))
                expected += 1
            yield gold, preds, counts
        if next(rows, None) is not None:  # also lets Ray finish the iteration before any shutdown
            raise ExtractError("Ray returned more predictions than records were sent")
    except OpenIEError:
        raise
    except Exception as err:  # Ray wraps worker errors; keep the cause readable
        raise ExtractError(f"the Ray extraction failed: {type(err).__name__}: {err}") from err
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        if started:
            ray.shutdown()
