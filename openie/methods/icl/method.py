"""Method ``icl``: in-context extraction with the run's template, engine and demonstrations.

Its options say how a long input and a large schema are split (``chunk_tokens``, ``chunk_overlap``,
``max_labels``), whether an answer cut at ``max_tokens`` is asked again (``retry_cut``) and whether
prompts go through the model's chat template (``chat``, for instruct models).
"""

from __future__ import annotations

from dataclasses import dataclass

from openie.methods.icl.pipeline import DEFAULT_CHUNK_TOKENS, InContextExtractor, token_counter
from openie.methods.registry import MethodContext, MethodRegistration, register_method
from prompts.builder import PromptBuilder


@dataclass(frozen=True)
class ICLOptions:
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS  # model tokens of input per prompt (less if the context is smaller)
    chunk_overlap: int = 32  # tokens two consecutive chunks share (at most a quarter of a chunk)
    max_labels: int = 20  # a NER schema with more entity types is split across prompts (answers merged)
    retry_cut: bool = False  # ask an answer cut at max_tokens again, once, with twice the budget
    sentence_chunks: bool = True  # a record longer than chunk_tokens: one sentence per prompt (False: packed)
    chat: bool = False  # send each prompt as one user turn through the model's chat template (instruct models)

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16 or self.chunk_overlap < 0:
            raise ValueError(f"need chunk_tokens >= 16 and chunk_overlap >= 0, got {self.chunk_tokens} and "
                             f"{self.chunk_overlap}")
        if self.max_labels < 1:
            raise ValueError(f"max_labels must be >= 1, got {self.max_labels}")


def _build(context: MethodContext, options: ICLOptions) -> InContextExtractor:
    counter = token_counter(context.engine) if context.max_prompt_tokens else None
    builder = PromptBuilder(context.template, context.schema, max_prompt_tokens=context.max_prompt_tokens,
                            count_tokens=counter, max_labels=options.max_labels, chat=options.chat)
    return InContextExtractor(context.engine, builder, demonstrations=context.demonstrations,  # type: ignore[arg-type]
                              adapter=context.adapter, max_tokens=context.max_tokens, batch_size=context.batch_size,
                              constrained=context.constrained, show_progress=False, save_io=context.save_io,
                              chunk_tokens=options.chunk_tokens, chunk_overlap_tokens=options.chunk_overlap,
                              retry_cut=options.retry_cut, sentence_chunks=options.sentence_chunks)


REGISTRATION = register_method(MethodRegistration(
    "icl", _build, options=ICLOptions,
    description="in-context extraction: the template, the schema, k demonstrations, the input"), builtin=True)

__all__ = ["REGISTRATION", "ICLOptions"]
