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

import copy
import json
from collections.abc import Mapping
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


def tool_step_schema(step: dict[str, Any], tool_args: Mapping[str, Mapping[str, Any]],
                     max_text_chars: int | None = MAX_TEXT_CHARS) -> dict[str, Any]:
    """A ReAct step's schema with each tool's own arguments: one ``anyOf`` branch per tool.

    ``step`` is the closed schema of ``next_thought, next_tool_name, next_tool_args``;
    ``tool_args`` maps each tool name to its arguments' JSON schemas (``dspy.Tool.args``). In a
    branch the tool name is that tool's alone and the arguments are exactly its own, all
    required, so every call the model writes is one the tool accepts.
    """
    branches = []
    for name in step["properties"]["next_tool_name"]["enum"]:
        args = dict(tool_args.get(name, {}))
        arguments: dict[str, Any] = {"type": "object", "additionalProperties": False}
        if args:
            arguments = close_schema({"type": "object", "properties": args}, max_text_chars)
        branch = copy.deepcopy(step)
        branch["properties"]["next_tool_name"] = {"type": "string", "enum": [name]}
        branch["properties"]["next_tool_args"] = arguments
        branches.append(branch)
    return {"anyOf": branches}


class ConstrainedJSONAdapter(dspy.JSONAdapter):
    """``dspy.JSONAdapter`` that asks the LM for the output fields' exact JSON schema.

    Only an LM that declares ``response_format`` gets it (the openie DSPy LM does, see
    ``openie.engines.dspy_lm``); any other LM is prompted as the stock adapter prompts it.
    ``max_text_chars`` bounds every free-text field (None: unbounded). With ``tool_args`` (tool
    name -> its arguments' schemas, ``finish`` included) a ReAct step over exactly those tools
    is decoded under :func:`tool_step_schema`: each tool called with its own arguments.
    """

    def __init__(self, max_text_chars: int | None = MAX_TEXT_CHARS,
                 tool_args: Mapping[str, Mapping[str, Any]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_text_chars = max_text_chars
        self.tool_args = dict(tool_args) if tool_args else None

    def response_schema(self, signature: type[dspy.Signature]) -> dict[str, Any]:
        """The schema ``signature``'s answers are decoded under."""
        schema = output_json_schema(signature, self.max_text_chars)
        tool = schema.get("properties", {}).get("next_tool_name", {})
        if self.tool_args and "next_tool_args" in schema["properties"] and set(tool.get("enum", ())) == set(
                self.tool_args):
            return tool_step_schema(schema, self.tool_args, self.max_text_chars)
        return schema

    def format_field_with_value(self, fields_with_values: dict[Any, Any], role: str = "user") -> str:
        if role == "user":
            return super().format_field_with_value(fields_with_values, role)
        values = {field.name: value for field, value in fields_with_values.items()}
        return json.dumps(serialize_for_json(values), ensure_ascii=False, separators=(",", ":"))

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]) -> None:
        if "response_format" not in lm.supported_params or not lm.supports_response_schema:
            return
        lm_kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": signature.__name__, "schema": self.response_schema(signature), "strict": False}}


__all__ = ["MAX_TEXT_CHARS", "ConstrainedJSONAdapter", "close_schema", "output_json_schema", "tool_step_schema"]
