"""BANER (COLING 2025): boundary-aware span detection with an LLM. Building blocks so far (issue 8 is open).

- :func:`boundary_positions`: the token positions of the boundary-aware contrastive term, found
  from a tokenizer's character offsets (never from hard-coded token ids): the anchor is the last
  token of the type name in the prompt, positives the entity's first and last tokens, negatives
  the tokens at configurable offsets around them (authors: start-1, start-2, end+1, end+2).
- :func:`boundary_contrastive_loss`: ``-log sigmoid(sum cos(a, pos) - sum cos(a, neg))`` on one
  layer's hidden states, averaged over entities.
- :class:`InputTokensLogitsProcessor`: decoding restricted to the input's own tokens plus the
  span markers and the end token (transformers ``generate``, beam search included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from openie.errors import OpenIEError

NEGATIVE_OFFSETS = (-2, -1, 1, 2)  # relative to the first (negative) and last (positive) entity token


class BoundaryError(OpenIEError, ValueError):
    """A span that no token covers (outside the tokenised text, or truncated away)."""


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    for i, (s, e) in enumerate(offsets):
        if s < e and s <= char < e:
            return i
    raise BoundaryError(f"no token covers character {char}")


@dataclass(frozen=True)
class BoundaryPositions:
    """Token indices of one contrastive term: the type anchor, an entity's edges, the tokens around them."""

    anchor: int
    positives: tuple[int, ...]
    negatives: tuple[int, ...]


def boundary_positions(offsets: Sequence[tuple[int, int]], anchor_span: tuple[int, int],
                       entity_spans: Iterable[tuple[int, int]],
                       negative_offsets: Sequence[int] = NEGATIVE_OFFSETS) -> list[BoundaryPositions]:
    """One :class:`BoundaryPositions` per entity; character spans index the tokenised text.

    Negative offsets below zero count from the entity's first token, the others from its last;
    positions outside the sequence, on special tokens or inside the entity are dropped.
    """
    anchor = _token_at(offsets, anchor_span[1] - 1)
    real = [i for i, (s, e) in enumerate(offsets) if s < e]
    lo, hi = min(real), max(real)
    out = []
    for start, end in entity_spans:
        first, last = _token_at(offsets, start), _token_at(offsets, end - 1)
        negatives = []
        for off in negative_offsets:
            pos = first + off if off < 0 else last + off
            if lo <= pos <= hi and not first <= pos <= last and offsets[pos][0] < offsets[pos][1]:
                negatives.append(pos)
        out.append(BoundaryPositions(anchor, tuple(dict.fromkeys((first, last))), tuple(negatives)))
    return out


def boundary_contrastive_loss(hidden: Any, terms: Sequence[tuple[int, BoundaryPositions]]) -> Any:
    """Mean over ``(batch row, positions)`` of ``-log sigmoid(sum cos(a, p) - sum cos(a, n))``.

    ``hidden`` is ``(batch, tokens, dim)`` from the chosen layer; vectors are compared by cosine
    (L2-normalised, as in the paper). With no term it is a zero that still carries a graph.
    """
    import torch
    import torch.nn.functional as F

    if not terms:
        return hidden.sum() * 0.0
    losses = []
    for row, pos in terms:
        h = F.normalize(hidden[row], dim=-1)
        a = h[pos.anchor]
        score = (h[list(pos.positives)] @ a).sum()
        if pos.negatives:
            score = score - (h[list(pos.negatives)] @ a).sum()
        losses.append(-F.logsigmoid(score))
    return torch.stack(losses).mean()


class InputTokensLogitsProcessor:
    """Masks every token but the allowed ones (per batch row): output can only copy the input.

    ``allowed`` holds one id set per input row; with beam search, rows are expanded by
    ``num_beams`` and each beam keeps its input's set.
    """

    def __init__(self, allowed: Sequence[Iterable[int]], num_beams: int = 1):
        self.allowed = [sorted(set(a)) for a in allowed]
        self.num_beams = num_beams

    @classmethod
    def for_inputs(cls, tokenizer: Any, texts: Sequence[str], extra: Iterable[str] = ("<<<", ">>>"),
                   num_beams: int = 1) -> InputTokensLogitsProcessor:
        """The tokens of each text (with and without a leading space) plus the markers and the end token."""
        always = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        for marker in extra:
            for variant in (marker, " " + marker):
                always.update(tokenizer(variant, add_special_tokens=False)["input_ids"])
        sets = []
        for text in texts:
            ids = set(tokenizer(text, add_special_tokens=False)["input_ids"])
            for word in text.split():
                ids.update(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
                ids.update(tokenizer(word, add_special_tokens=False)["input_ids"])
            sets.append(ids | always)
        return cls(sets, num_beams)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        mask = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            mask[row, self.allowed[row // self.num_beams]] = 0.0
        return scores + mask


__all__ = ["NEGATIVE_OFFSETS", "BoundaryError", "BoundaryPositions", "InputTokensLogitsProcessor",
           "boundary_contrastive_loss", "boundary_positions"]
