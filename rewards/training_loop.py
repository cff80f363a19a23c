"""The optimisation loop the reward model and the distilled retriever share.

Shuffled mini-batches each epoch, AdamW, linear warm-up then linear decay to zero, gradient-norm
clipping at 1, a progress bar, and a per-step history of the loss parts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")
LossFn = Callable[[list[Any], random.Random], tuple[Any, dict[str, float]]]


def train_in_steps(module: Any, items: Sequence[Item], loss_fn: LossFn, *, epochs: int, per_step: int, lr: float,
                   weight_decay: float = 0.0, warmup_ratio: float = 0.1, seed: int = 0, desc: str = "train",
                   show_progress: bool | None = None) -> list[dict[str, float]]:
    """Train ``module`` on ``items``; ``loss_fn(batch, rng)`` returns (loss tensor, parts to log).

    The caller seeds torch (before building the module, so random heads are reproducible); ``seed``
    drives the batch order and any sampling ``loss_fn`` does with ``rng``.
    """
    import torch

    rng = random.Random(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(items) / per_step)
    warmup = max(1, int(steps * warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    bar = tqdm(total=steps, desc=desc, unit="step", disable=show_progress is False)
    history: list[dict[str, float]] = []
    module.train()
    for epoch in range(epochs):
        order = list(range(len(items)))
        rng.shuffle(order)
        for i in range(0, len(order), per_step):
            loss, parts = loss_fn([items[j] for j in order[i:i + per_step]], rng)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            history.append({"step": len(history) + 1, "epoch": epoch, **parts})
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
    bar.close()
    module.eval()
    return history


__all__ = ["train_in_steps"]
