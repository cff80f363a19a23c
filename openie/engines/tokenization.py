"""Text -> token ids shared by every backend, so all of them score and prompt the same tokens."""

from __future__ import annotations

from typing import Any

from openie.engines.base import GenerationRequest


def render_prompt(tokenizer: Any, request: GenerationRequest) -> str:
    """The prompt text of a request: chat messages go through the tokenizer's chat template."""
    if request.prompt is not None:
        return request.prompt
    if not getattr(tokenizer, "chat_template", None):
        from openie.engines.base import UnsupportedRequestError

        raise UnsupportedRequestError("request has chat messages but the model's tokenizer has no chat template")
    return tokenizer.apply_chat_template(list(request.messages or ()), tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt, with the model's own special tokens (e.g. BOS) added once.

    A chat template usually writes BOS itself; it is not added a second time.
    """
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return list(ids)


def allowed_token_ids(tokenizer: Any, texts: tuple[str, ...] | list[str], end_ids: set[int] | None = None) -> list[int]:
    """Every token that spelling any of ``texts`` (whole, or word by word with and without a leading
    space) can use, plus the end tokens: the vocabulary of an output that may only copy its input."""
    ids: set[int] = set(end_ids or ())
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for text in texts:
        ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
        for word in text.split():
            ids.update(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
            ids.update(tokenizer(word, add_special_tokens=False)["input_ids"])
    return sorted(ids)


def start_token_id(tokenizer: Any) -> int:
    """What an empty context reads as: BOS, else EOS, else the pad token (as lm-eval does)."""
    for value in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if isinstance(value, int):
            return value
    from openie.engines.base import UnsupportedRequestError

    raise UnsupportedRequestError("an empty context needs a BOS, EOS or pad token, and the tokenizer has none")


def split_pair_ids(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Ids of ``context`` and of ``continuation`` as the model would read them joined.

    The pair is encoded whole and split where the context's own encoding ends (tokens can
    merge across the seam); when the seam falls inside a token, the continuation is encoded
    on its own instead, so its tokens are always exactly the scored ones. An empty context
    (no BOS added) becomes ``start_token_id``, so the first continuation token is scored too.
    """
    ctx = prompt_ids(tokenizer, context)
    if not ctx:
        ctx = [start_token_id(tokenizer)]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return ctx, list(cont)
    whole = prompt_ids(tokenizer, context + continuation)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return ctx, list(cont)
