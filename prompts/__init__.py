"""The prompt layer: versioned template files, output formats, a builder and parsers.

A one-liner preview for notebooks::

    from prompts import render
    print(render("ner.ruie.v1", record, schema, demonstrations))
"""

from __future__ import annotations

from collections.abc import Sequence

from openie.records import Record
from openie.schema import Schema
from prompts.builder import Prompt, PromptBuilder
from prompts.formats import FORMATS, JsonFormat, ParseProblem, ParseResult, QuestionFormat, RuieFormat, get_format
from prompts.registry import Template, TemplateError, TemplateRegistry, default_registry


def render(template: str, record: Record, schema: Schema, demonstrations: Sequence[Record] = (), **kwargs) -> str:
    """The prompt(s) ``template`` makes for ``record``: the quickest way to look at a prompt."""
    return PromptBuilder(template, schema, **kwargs).render(record, demonstrations)


def list_templates() -> list[str]:
    return default_registry().names()


__all__ = [
    "FORMATS", "JsonFormat", "ParseProblem", "ParseResult", "Prompt", "PromptBuilder", "QuestionFormat",
    "RuieFormat", "Template", "TemplateError", "TemplateRegistry", "default_registry", "get_format",
    "list_templates", "render",
]
