"""Supervised LoRA fine-tuning on (prompt, target) pairs, resumable after an interruption.

The loss covers the target tokens only. The prompt is tokenised with
:func:`openie.engines.tokenization.prompt_ids`, the very ids every engine feeds the model, so the
adapter learns to continue exactly the prompts it will be served; the target ends with EOS so the
adapter also learns to stop.

A run is a pure function of its configuration: data order comes from a generator seeded with
``seed`` and the epoch, and checkpoints (``output_dir/checkpoint-N``: adapter, optimizer,
scheduler, RNG states, step) capture everything else, so a run resumed from step N continues as if
it had never stopped, and one extended with a larger ``max_steps`` continues from where it ended.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from openie.adapters.registry import AdapterInfo, AdapterRegistry
from openie.engines.base import GenerationRequest
from openie.engines.tokenization import prompt_ids, render_prompt
from openie.errors import OpenIEError

Pair = tuple[str | GenerationRequest, str]
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.pt"
# Settings a resumed run must share with the run that wrote the checkpoint.
_RESUME_KEYS = ("base_model", "rank", "alpha", "dropout", "target_modules", "lr", "weight_decay", "batch_size",
                "grad_accum", "seed", "data_sha256", "n_pairs", "schedule", "warmup_steps", "max_grad_norm",
                "auxiliary_loss")


class TrainingError(OpenIEError, RuntimeError):
    """Training cannot start or resume (the message says which setting or file)."""


@dataclass
class TrainingResult:
    path: Path                      # folder with the final adapter (peft files)
    steps: int                      # optimizer steps done in total (resumed ones included)
    final_loss: float               # mean target-token loss of the last step
    seconds: float                  # wall time of this call
    resumed_from: int = 0           # step of the checkpoint this call started from (0: fresh)
    losses: list[float] = field(default_factory=list)  # per step, this call's steps only
    adapter: AdapterInfo | None = None                 # registry entry, when registered


class AuxiliaryLoss(Protocol):
    """An extra training term on one layer's hidden states, added to the LM loss as ``weight * term``.

    ``prepare`` runs once per pair on its prompt text and token ids (what it needs per example,
    e.g. token positions); ``__call__`` gets the hidden states of ``layer`` (``hidden_states[layer]``
    of a transformers model: 0 is the embeddings, ``l`` the output of block ``l``) for a micro-batch
    and, per row, its prepared item and how many pad tokens precede it (rows are left-padded).
    ``describe`` keys the run: a resumed run must use the same term.
    """

    weight: float
    layer: int

    def prepare(self, index: int, text: str, ids: list[int], tokenizer: Any) -> Any: ...

    def __call__(self, hidden: torch.Tensor, items: list[tuple[Any, int]]) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


def default_target_modules(model: torch.nn.Module) -> list[str]:
    """Leaf names of the linear layers inside the repeated transformer blocks (attention + MLP).

    For Qwen2 / Llama / Gemma that is q/k/v/o_proj and gate/up/down_proj; the output head and
    embeddings are left out (vLLM cannot serve LoRA on them).
    """
    names = set()
    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        linear_types += (Conv1D,)
    except ImportError:  # pragma: no cover
        pass
    for name, module in model.named_modules():
        if isinstance(module, linear_types) and re.search(r"\.\d+\.", name) and "lm_head" not in name:
            names.add(name.rsplit(".", 1)[-1])
    if not names:
        raise TrainingError(f"found no linear layers inside repeated blocks of {type(model).__name__}; "
                            "pass target_modules")
    return sorted(names)


def _encode(tokenizer: Any, pairs: Sequence[Pair], max_length: int | None) -> list[tuple[list[int], int]]:
    """Token ids of prompt + target + EOS, and where the target starts."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TrainingError("the tokenizer has no EOS token; the adapter could not learn to stop")
    encoded = []
    for i, (prompt, target) in enumerate(pairs):
        text = render_prompt(tokenizer, prompt) if isinstance(prompt, GenerationRequest) else prompt
        if not isinstance(text, str) or not isinstance(target, str):
            raise TrainingError(f"pair {i}: expected (prompt, target) strings, got {type(prompt).__name__}, "
                                f"{type(target).__name__}")
        ids = prompt_ids(tokenizer, text)
        target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [eos]
        if max_length is not None and len(ids) + len(target_ids) > max_length:
            raise TrainingError(f"pair {i}: prompt ({len(ids)} tokens) + target ({len(target_ids)} tokens) exceed "
                                f"max_length {max_length}")
        encoded.append((ids + target_ids, len(ids)))
    return encoded


def _data_hash(pairs: Sequence[Pair]) -> str:
    digest = hashlib.sha256()
    for prompt, target in pairs:
        text = json.dumps(prompt.to_dict(), sort_keys=True) if isinstance(prompt, GenerationRequest) else prompt
        digest.update(json.dumps([text, target]).encode("utf-8"))
    return digest.hexdigest()


def _collate(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[dict[str, torch.Tensor], torch.Tensor,
                                                                          list[int]]:
    """Left-padded batch (targets end at the last column), target labels, and each row's pad count.

    Left padding lines every row's target up at the end, so the LM head runs only on the last
    ``max target length + 1`` positions: with a 262k vocabulary that head costs more than the rest.
    """
    width = max(len(ids) for ids, _ in examples)
    span = max(len(ids) - start for ids, start in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), span), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    pads = []
    for r, (ids, start) in enumerate(examples):
        pad = width - len(ids)
        pads.append(pad)
        input_ids[r, pad:] = torch.tensor(ids)
        attention[r, pad:] = 1
        n_target = len(ids) - start
        labels[r, span - n_target:] = torch.tensor(ids[start:])
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention, "position_ids": positions}, labels, pads


def _target_loss(model: Any, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                 hidden_layer: int | None) -> tuple[torch.Tensor, Any]:
    """Mean cross-entropy over target tokens, computing logits only where targets are predicted."""
    span = labels.shape[1]
    extra = {"output_hidden_states": True} if hidden_layer is not None else {}
    try:
        out = model(**batch, logits_to_keep=span + 1, **extra)
    except TypeError:  # architectures without logits_to_keep
        out = model(**batch, **extra)
    logits = out.logits[:, -(span + 1):-1].float()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100)
    return loss, (out.hidden_states[hidden_layer] if hidden_layer is not None else None)


def pairs_loss(model: Any, tokenizer: Any, pairs: Sequence[Pair], *, batch_size: int = 8) -> float:
    """Mean target-token loss of ``pairs`` under ``model`` (no gradient): what a merge or a
    checkpoint is judged by (LoRAHub's objective), computed exactly as training computes it."""
    encoded = _encode(tokenizer, pairs, None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    total = count = 0.0
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            batch, labels, _ = _collate(chunk, pad_id)
            loss, _ = _target_loss(model, {k: v.to(device) for k, v in batch.items()}, labels.to(device), None)
            n = int(labels.ne(-100).sum())
            total += float(loss) * n
            count += n
    return total / max(count, 1.0)


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def train_lora(base_model: str | Path, pairs: Iterable[Pair] | Callable[[], Iterable[Pair]],
               output_dir: str | Path, *, rank: int = 8, alpha: float = 16, dropout: float = 0.0,
               target_modules: Sequence[str] | None = None, lr: float = 2e-4, weight_decay: float = 0.0,
               epochs: float = 1, max_steps: int | None = None, batch_size: int = 4, grad_accum: int = 1,
               schedule: str = "constant", warmup_steps: int = 0, max_grad_norm: float | None = 1.0,
               max_length: int | None = None, seed: int = 0, device: str = "auto", dtype: str | torch.dtype = "auto",
               save_every: int = 50, keep_checkpoints: int = 2, resume: bool = True, tokenizer: Any = None,
               model_kwargs: dict[str, Any] | None = None, registry: AdapterRegistry | str | Path | None = None,
               name: str | None = None, task: str | None = None, languages: Iterable[str] = (),
               labels: Iterable[str] = (), progress: bool = True,
               callback: Callable[[int, float], None] | None = None,
               auxiliary_loss: AuxiliaryLoss | None = None) -> TrainingResult:
    """Train a LoRA adapter on ``pairs`` and save it in ``output_dir``.

    ``pairs`` yields (prompt, target); a prompt is text or a :class:`GenerationRequest` (chat
    messages are rendered with the chat template). Steps are optimizer steps of
    ``batch_size * grad_accum`` examples; ``max_steps`` (if given) overrides ``epochs``.
    ``schedule`` is ``constant`` or ``linear`` (decay to 0 at the last step), after
    ``warmup_steps``. A checkpoint is written every ``save_every`` steps and at the end; with
    ``resume`` the latest one in ``output_dir`` is continued (it must come from the same data and
    settings), without it old checkpoints are deleted. ``callback(step, loss)`` runs after each
    step. A KeyboardInterrupt saves a checkpoint at the last finished step before it propagates.
    With ``registry`` and ``name`` the final adapter is registered there with its training settings
    and final loss. ``auxiliary_loss`` adds ``weight * term`` on a layer's hidden states (BANER's
    boundary contrastive loss); the losses reported stay the LM loss, the term is logged apart.
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openie.engines.hf import resolve_device, resolve_dtype
    from openie.models import resolve_model

    started = time.perf_counter()
    if schedule not in ("constant", "linear"):
        raise TrainingError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    if batch_size < 1 or grad_accum < 1 or save_every < 1:
        raise TrainingError("batch_size, grad_accum and save_every must be >= 1")
    if registry is not None and not name:
        raise TrainingError("registering the adapter needs a name")
    data = list(pairs() if callable(pairs) else pairs)
    if not data:
        raise TrainingError("no training pairs")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    model_path = resolve_model(base_model)
    tok = tokenizer if tokenizer is not None and not isinstance(tokenizer, str | Path) else \
        AutoTokenizer.from_pretrained(str(tokenizer or model_path))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    random.seed(seed)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=resolve_dtype(dtype, dev, training=True), **(model_kwargs or {}))
    base.to(dev)
    limit = max_length or getattr(base.config.get_text_config(), "max_position_embeddings", None)
    encoded = _encode(tok, data, limit)
    prepared = None
    if auxiliary_loss is not None:
        prepared = []
        for i, (prompt, _) in enumerate(data):
            text = render_prompt(tok, prompt) if isinstance(prompt, GenerationRequest) else prompt
            prepared.append(auxiliary_loss.prepare(i, text, encoded[i][0][:encoded[i][1]], tok))
    modules = sorted(target_modules) if target_modules else default_target_modules(base)
    config = {
        "base_model": str(base_model), "rank": rank, "alpha": alpha, "dropout": dropout, "target_modules": modules,
        "lr": lr, "weight_decay": weight_decay, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
        "grad_accum": grad_accum, "schedule": schedule, "warmup_steps": warmup_steps, "max_grad_norm": max_grad_norm,
        "seed": seed, "n_pairs": len(data), "data_sha256": _data_hash(data),
        "auxiliary_loss": auxiliary_loss.describe() if auxiliary_loss is not None else None,
    }
    micro_per_epoch = math.ceil(len(encoded) / batch_size)
    total = max_steps if max_steps is not None else math.ceil(epochs * micro_per_epoch / grad_accum)
    if total < 1:
        raise TrainingError(f"nothing to train: {total} steps (epochs={epochs}, max_steps={max_steps})")
    config["total_steps"] = total

    found = _checkpoints(output_dir)
    if found and not resume:
        for _, folder in found:
            shutil.rmtree(folder)
        found = []
    start_step, state = 0, None
    if found:
        start_step, latest = found[-1]
        state = torch.load(latest / STATE_FILE, map_location="cpu", weights_only=True)
        differing = [k for k in _RESUME_KEYS if state["config"].get(k) != config.get(k)]
        if differing:
            details = ", ".join(f"{k}: {state['config'].get(k)!r} -> {config.get(k)!r}" for k in differing)
            raise TrainingError(f"cannot resume from {latest}: settings differ ({details}); use another "
                                "output_dir or resume=False")
        model = PeftModel.from_pretrained(base, str(latest), is_trainable=True)
    else:
        lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules,
                          task_type="CAUSAL_LM", bias="none")
        model = get_peft_model(base, lora)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def lr_factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "linear":
            return max(0.0, (total - step) / max(1, total - warmup_steps))
        return 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
        if dev.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], dev)

    orders: dict[int, list[int]] = {}

    def micro_batch(m: int) -> list[int]:
        epoch, k = divmod(m, micro_per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        return orders[epoch][k * batch_size:(k + 1) * batch_size]

    def save_checkpoint(step: int, loss: float) -> None:
        folder = output_dir / f"checkpoint-{step}"
        staging = output_dir / f"checkpoint-{step}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        rng = {"python": random.getstate(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        torch.save({"step": step, "loss": loss, "config": config, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng}, staging / STATE_FILE)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        for _, old in _checkpoints(output_dir)[:-keep_checkpoints] if keep_checkpoints > 0 else []:
            shutil.rmtree(old)

    losses: list[float] = []
    aux_losses: list[float] = []
    step = start_step
    loss_value = float(state["loss"]) if state is not None else math.nan
    model.train()
    bar = tqdm(total=total, initial=start_step, desc=f"LoRA {output_dir.name}", disable=not progress, unit="step")
    try:
        while step < total:
            optimizer.zero_grad(set_to_none=True)
            step_loss = step_aux = 0.0
            for a in range(grad_accum):
                rows = micro_batch(step * grad_accum + a)
                batch, targets, pads = _collate([encoded[j] for j in rows], pad_id)
                batch = {k: v.to(dev) for k, v in batch.items()}
                loss, hidden = _target_loss(model, batch, targets.to(dev),
                                            auxiliary_loss.layer if auxiliary_loss is not None else None)
                total_loss = loss
                if auxiliary_loss is not None and prepared is not None:
                    term = auxiliary_loss(hidden, [(prepared[j], pad) for j, pad in zip(rows, pads, strict=True)])
                    total_loss = loss + auxiliary_loss.weight * term
                    step_aux += float(term.detach()) / grad_accum
                (total_loss / grad_accum).backward()
                step_loss += float(loss.detach()) / grad_accum
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = step_loss
            losses.append(step_loss)
            bar.update(1)
            if auxiliary_loss is not None:
                aux_losses.append(step_aux)
                bar.set_postfix(loss=f"{step_loss:.4f}", aux=f"{step_aux:.4f}")
            else:
                bar.set_postfix(loss=f"{step_loss:.4f}")
            if step % save_every == 0 and step < total:
                save_checkpoint(step, step_loss)
            if callback is not None:
                callback(step, step_loss)
    except KeyboardInterrupt:
        if step > start_step and not (output_dir / f"checkpoint-{step}" / STATE_FILE).is_file():
            save_checkpoint(step, loss_value)
        raise
    finally:
        bar.close()
    if not (output_dir / f"checkpoint-{step}" / STATE_FILE).is_file():
        save_checkpoint(step, loss_value)
    model.eval()
    model.save_pretrained(str(output_dir))
    config["steps_done"] = step
    (output_dir / "openie_training.json").write_text(
        json.dumps({"config": config, "final_loss": loss_value, "losses": losses, "auxiliary_losses": aux_losses,
                    "seconds": time.perf_counter() - started}, indent=2) + "\n", encoding="utf-8")
    result = TrainingResult(path=output_dir, steps=step, final_loss=loss_value,
                            seconds=time.perf_counter() - started, resumed_from=start_step, losses=losses)
    if registry is not None:
        reg = registry if isinstance(registry, AdapterRegistry) else AdapterRegistry(registry)
        result.adapter = reg.register(output_dir, name, base_model=str(base_model), task=task,
                                      languages=languages, labels=labels, training=config,
                                      metrics={"final_loss": loss_value}, overwrite=True)
    return result


__all__ = ["AuxiliaryLoss", "TrainingError", "pairs_loss", "TrainingResult", "default_target_modules", "train_lora"]
