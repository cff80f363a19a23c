"""Method ``icl``: in-context extraction, the run's template, engine and demonstrations (no options)."""

from __future__ import annotations

from collections.abc import Callable

from openie.engines.base import Engine, capabilities
from openie.methods.icl.pipeline import InContextExtractor
from openie.methods.registry import MethodContext, MethodRegistration, register_method
from prompts.builder import PromptBuilder


def token_counter(engine: Engine | None) -> Callable[[str], int] | None:
    """Exact prompt lengths from the engine's tokenizer, where it has one (else whitespace words)."""
    tokenizer = capabilities(engine).tokenizer if engine is not None else None
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        return None
    return lambda text: len(tokenizer.encode(text))


def _build(context: MethodContext, options: None) -> InContextExtractor:
    counter = token_counter(context.engine) if context.max_prompt_tokens else None
    builder = PromptBuilder(context.template, context.schema, max_prompt_tokens=context.max_prompt_tokens,
                            count_tokens=counter)
    return InContextExtractor(context.engine, builder, demonstrations=context.demonstrations,  # type: ignore[arg-type]
                              adapter=context.adapter, max_tokens=context.max_tokens, batch_size=context.batch_size,
                              constrained=context.constrained, show_progress=False, save_io=context.save_io)


REGISTRATION = register_method(MethodRegistration(
    "icl", _build, description="in-context extraction: the template, the schema, k demonstrations, the input"),
    builtin=True)

__all__ = ["REGISTRATION", "token_counter"]
