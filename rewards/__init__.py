"""Rewards that train demonstration retrievers (RUIE, arXiv 2409.11673).

* ``LLMPreferenceScorer`` — a frozen LLM's mean log-likelihood of a query's gold answer given each
  candidate demonstration (any engine, batched; cache through ``CachedEngine``).
* ``KeywordRewardModel`` — a cross-encoder over keyword-marked (query + answer, candidate) pairs,
  trained listwise on the LLM's preferences; a reranker once trained.
* ``BiEncoderDistiller`` — distils the reward model into a bi-encoder for faiss search.

Importing this package loads no model library; models load on first use.
"""

from rewards.distill import BiEncoderDistiller, DistillationConfig, DistillationGroup, distillation_group
from rewards.keyword import (
    KeywordRewardModel,
    RewardGroup,
    RewardTrainingConfig,
    keyword_spans,
    mark_keywords,
    reward_groups,
)
from rewards.preference import OTHER_TASK_SCORE, LLMPreferenceScorer, PreferenceExample

__all__ = [
    "OTHER_TASK_SCORE", "BiEncoderDistiller", "DistillationConfig", "DistillationGroup", "KeywordRewardModel",
    "LLMPreferenceScorer", "PreferenceExample", "RewardGroup", "RewardTrainingConfig", "distillation_group",
    "keyword_spans", "mark_keywords", "reward_groups",
]
