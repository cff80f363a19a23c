"""What a DSPy program did for one input: the tools it called and the demonstrations it was shown.

A researcher reading a prediction wants to see *why* the agent extracted what it did, and that
log must survive a program that fails half-way (a tiny model that writes an unparseable last
step still called tools first). So the log does not travel inside the ``dspy.Prediction``: it is
an :class:`ExtractionTrace` bound to the current input for the duration of one call (a context
variable, so threads of DSPy's parallel evaluator each keep their own), written to by the tools
and demonstration selectors, and read by whoever opened it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

#: characters of a tool result kept in the log (the model itself sees the whole result)
RESULT_CHARS = 300


def summarize(value: Any, limit: int = RESULT_CHARS) -> str:
    """A tool result as loggable text, cut to ``limit`` characters (an ellipsis marks the cut)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


@dataclass(frozen=True)
class ToolCall:
    """One call of a tool: its arguments, the (truncated) result or the error it raised."""

    name: str
    arguments: dict[str, Any]
    result: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "arguments": self.arguments, "result": self.result}
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class ExtractionTrace:
    """The tool calls and demonstration ids of one program call on ``text``."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    demo_ids: list[str] = field(default_factory=list)
    result_chars: int = RESULT_CHARS

    def record_call(self, name: str, arguments: dict[str, Any], result: Any = None, error: str | None = None) -> None:
        args = json.loads(json.dumps(arguments, ensure_ascii=False, default=str))  # a plain, JSON-able copy
        self.tool_calls.append(ToolCall(name, args, "" if result is None else summarize(result, self.result_chars),
                                        error))


_CURRENT: ContextVar[ExtractionTrace | None] = ContextVar("openie_agent_trace", default=None)


def current_trace() -> ExtractionTrace | None:
    """The trace of the program call in progress in this thread, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def traced(text: str) -> Iterator[ExtractionTrace]:
    """Bind a trace to ``text`` for the ``with`` block; an open trace for the same text is reused.

    Reuse lets an outer caller (the extractor) keep the log of an inner one (the agent) even
    when the inner call raises.
    """
    active = _CURRENT.get()
    if active is not None and active.text == text:
        yield active
        return
    trace = ExtractionTrace(text)
    token = _CURRENT.set(trace)
    try:
        yield trace
    finally:
        _CURRENT.reset(token)


__all__ = ["RESULT_CHARS", "ExtractionTrace", "ToolCall", "current_trace", "summarize", "traced"]
