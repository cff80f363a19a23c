"""DSPy's JSON adapter decoded under the signature's own JSON schema, on any openie engine.

DSPy's stock :class:`dspy.JSONAdapter` asks for a schema only in OpenAI's strict form and falls
back to "any JSON object" for signatures with open-ended fields, such as ReAct's
``next_tool_args: dict[str, Any]``: a small model then writes objects that miss fields or name
tools that do not exist, and the whole step fails to parse. openie engines decode any JSON
schema under a grammar (xgrammar on vLLM and transformers), so :class:`ConstrainedJSONAdapter`
sends the full schema of the output fields: every field required, items closed to their
properties, ``Literal`` fields (ReAct's tool names) as enums, open mappings left open. What the
model writes then parses by construction; what it says can still be wrong, and is scored.

The grammar writes compact JSON (no whitespace: small models loop on it), so the adapter writes
its demonstrations compactly too. DSPy's indented demonstrations under a compact grammar put
the very first token out of distribution: Gemma-3-270M then answered ``{"entities":[]}`` to
every input despite four gold demonstrations.
"""

from __future__ import annotations

import json
from typing import Any

import dspy
import pydantic
from dspy.adapters.utils import serialize_for_json

#: characters a free-text field may take under the schema (a reasoning, a thought, a mention)
MAX_TEXT_CHARS = 400


def close_schema(schema: Any, max_text_chars: int | None = None) -> Any:
    """``schema`` with every object that lists properties requiring all of them and admitting no others.

    Objects without properties (open mappings) stay open. With ``max_text_chars``, free strings
    (not enums) get that ``maxLength``: a small model caught repeating itself inside a reasoning
    must close it and still reach the fields after it. A copy; the input is not changed.
    """
    if isinstance(schema, list):
        return [close_schema(s, max_text_chars) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: close_schema(v, max_text_chars) for k, v in schema.items()}
    if isinstance(out.get("properties"), dict) and out["properties"]:
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if max_text_chars is not None and out.get("type") == "string" and "enum" not in out and "maxLength" not in out:
        out["maxLength"] = max_text_chars
    return out


def output_json_schema(signature: type[dspy.Signature], max_text_chars: int | None = MAX_TEXT_CHARS) -> dict[str, Any]:
    """The JSON schema of a signature's output fields, in their order, closed by :func:`close_schema`."""
    fields = {name: (f.annotation, ...) for name, f in signature.output_fields.items()}
    model = pydantic.create_model(f"{signature.__name__}Output", **fields)  # type: ignore[call-overload]
    return close_schema(model.model_json_schema(), max_text_chars)


class ConstrainedJSONAdapter(dspy.JSONAdapter):
    """``dspy.JSONAdapter`` that asks the LM for the output fields' exact JSON schema.

    Only an LM that declares ``response_format`` gets it (the openie DSPy LM does, see
    ``openie.engines.dspy_lm``); any other LM is prompted as the stock adapter prompts it.
    ``max_text_chars`` bounds every free-text field (None: unbounded).
    """

    def __init__(self, max_text_chars: int | None = MAX_TEXT_CHARS, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_text_chars = max_text_chars

    def format_field_with_value(self, fields_with_values: dict[Any, Any], role: str = "user") -> str:
        if role == "user":
            return super().format_field_with_value(fields_with_values, role)
        values = {field.name: value for field, value in fields_with_values.items()}
        return json.dumps(serialize_for_json(values), ensure_ascii=False, separators=(",", ":"))

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]) -> None:
        if "response_format" not in lm.supported_params or not lm.supports_response_schema:
            return
        lm_kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": signature.__name__, "schema": output_json_schema(signature, self.max_text_chars), "strict": False}}


__all__ = ["MAX_TEXT_CHARS", "ConstrainedJSONAdapter", "close_schema", "output_json_schema"]
