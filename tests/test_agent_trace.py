"""The per-call trace: tools and selectors write into it, the extractor reads it, threads keep their own."""

from __future__ import annotations

import threading

from openie.agent.trace import ToolCall, current_trace, summarize, traced


def test_summaries_are_cut_with_an_ellipsis():
    assert summarize("abc", 5) == "abc"
    assert summarize("abcdefgh", 5) == "abcd…"
    assert summarize({"a": [1, 2]}) == '{"a": [1, 2]}'


def test_a_trace_is_bound_for_the_block_and_reused_for_the_same_text():
    assert current_trace() is None
    with traced("Anna visited Paris .") as outer:
        outer.record_call("type_descriptions", {}, "{}")
        with traced("Anna visited Paris .") as inner:
            assert inner is outer
            inner.record_call("propose_spans", {"labels": ("person",)}, "x" * 400)
        with traced("another text") as other:
            assert other is not outer and current_trace() is other
        assert current_trace() is outer
    assert current_trace() is None
    assert outer.tool_calls[0] == ToolCall("type_descriptions", {}, "{}")
    call = outer.tool_calls[1]
    assert call.arguments == {"labels": ["person"]} and len(call.result) == 300 and call.result.endswith("…")
    assert call.to_dict() == {"name": "propose_spans", "arguments": {"labels": ["person"]}, "result": call.result}
    assert ToolCall("t", {}, error="boom").to_dict()["error"] == "boom"


def test_threads_keep_their_own_trace():
    seen = {}

    def work(name: str) -> None:
        with traced(name) as trace:
            trace.record_call(name, {})
            seen[name] = [c.name for c in current_trace().tool_calls]

    with traced("main") as main:
        threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert seen == {"a": ["a"], "b": ["b"]} and main.tool_calls == []
