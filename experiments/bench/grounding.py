"""Grounding benchmark: fuzzy spans in megabyte texts, against the difflib implementation it replaced.

    python experiments/bench/grounding.py [--skip-baseline] [--out results.json]

A model that misspells or paraphrases a span sends grounding to its fuzzy step. The old step
(``_legacy_fuzzy`` below, copied verbatim from ``openie/grounding.py`` before the change) scored
every window of input words with difflib: quadratic per window, ~30 s for one span in 1 MB. Measured
in one run, on one machine:

  1. one misspelled span near the end of a ~1 MB English text (CoNLL-2003 train sentences joined
     in order; the span is the last multi-word entity that occurs once): ``ground`` (everything,
     index build included) vs the legacy fuzzy step alone on the same span (goal < 0.5 s, same
     offsets); ``--skip-baseline`` leaves the legacy run out.
  2. ``ground_all`` of 50 entity spans spread over the same text, every other one misspelled, in
     one call: seconds, methods, and how many landed on an occurrence of the entity's text.
  3. a paraphrased span in a ~200 kB Chinese text (seeded sentences from fixed templates, one target
     sentence near the end, the span in the middle of a clause): new vs legacy, whose regex words
     are whole clauses of Han characters, too long to match the span.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from collections.abc import Sequence
from difflib import SequenceMatcher
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from openie.grounding import Alignment, AlignmentStatus, ground, ground_all  # noqa: E402

# --- legacy baseline: openie/grounding.py's fuzzy step before rapidfuzz ------------------------

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def _legacy_fuzzy(text: str, span: str, query: str, words: Sequence[re.Match[str]], taken: set[tuple[int, int]],
                  threshold: float) -> Alignment:
    """Best window of input words by character similarity (difflib ratio), if above threshold."""
    n_query = max(1, len(_WORD.findall(query)))
    target = query.casefold()
    best: tuple[float, int, int] | None = None
    for width in range(max(1, n_query - 1), n_query + 2):
        for i in range(len(words) - width + 1):
            s, e = words[i].start(), words[i + width - 1].end()
            if (s, e) in taken:
                continue
            ratio = SequenceMatcher(None, target, text[s:e].casefold(), autojunk=False).ratio()
            if best is None or ratio > best[0]:
                best = (ratio, s, e)
    if best is not None and best[0] >= threshold:
        return Alignment(span, best[1], best[2], AlignmentStatus.FUZZY, round(best[0], 4), "fuzzy")
    return Alignment(span, None, None, AlignmentStatus.NOT_FOUND, round(best[0], 4) if best else 0.0, "none")


def legacy(text: str, span: str, threshold: float = 0.8) -> Alignment:
    return _legacy_fuzzy(text, span, span.strip(), list(_WORD.finditer(text)), set(), threshold)


# --- inputs ---------------------------------------------------------------------------------------

def english_text(size: int) -> tuple[str, list[tuple[int, int]]]:
    """CoNLL-2003 train sentences joined in order up to ``size`` characters, and their entities' offsets."""
    from openie.datasets import load_records

    parts, entities, pos = [], [], 0
    for r in load_records("conll2003:train"):
        if pos + len(r.text) > size:
            break
        parts.append(r.text)
        entities += [(pos + e.start, pos + e.end) for e in r.entities]
        pos += len(r.text) + 1
    return "\n".join(parts), entities


def misspell(span: str, seed: int) -> str:
    """Two deterministic typos: a doubled letter and a changed vowel, as a model might write a name."""
    rng = random.Random(seed)
    letters = [i for i, c in enumerate(span) if c.isalpha()]
    i = letters[rng.randrange(len(letters))]
    out = span[:i] + span[i] + span[i:]
    vowels = [i for i, c in enumerate(out) if c in "aeiou"]
    if vowels:
        j = vowels[rng.randrange(len(vowels))]
        out = out[:j] + {"a": "e", "e": "a", "i": "y", "o": "u", "u": "o"}[out[j]] + out[j + 1:]
    return out


_ZH_SUBJECTS = ["北京市政府", "上海交通大学", "中国科学院", "深圳的一家科技公司", "广州市气象台", "浙江省教育厅", "国家统计局"]
_ZH_VERBS = ["宣布", "表示", "发布了", "公布了", "报告说", "指出"]
_ZH_OBJECTS = ["今年第三季度的经济数据", "一项新的人工智能研究计划", "城市交通改善方案", "暴雨预警信息",
               "高校招生的最新政策", "居民消费价格指数", "新能源汽车的销售情况"]
_ZH_TAILS = ["，引起了社会各界的广泛关注。", "，专家认为这将对未来产生深远影响。", "。", "，相关部门表示将继续跟进。",
             "，据悉该计划将于明年正式实施。"]
ZH_TARGET = "国家航天局今天上午宣布嫦娥七号探测器将于明年八月在海南文昌航天发射场发射升空"
ZH_PARAPHRASE = "国家航天局今天宣布嫦娥七号探测器将在明年八月于海南文昌发射场发射升空"
# the target is the middle of one clause: no punctuation between it and this prefix and suffix
ZH_BEFORE, ZH_AFTER = "据新华社记者从北京发回的报道", "并将开展月球南极的综合探测任务"


def chinese_text(size: int, seed: int = 0) -> tuple[str, int]:
    """Seeded template sentences up to ``size`` characters, the target sentence at ~95%; the target's offset."""
    rng = random.Random(seed)
    parts: list[str] = []
    pos, target_at = 0, -1
    while pos < size:
        if target_at < 0 and pos >= 0.95 * size:
            target_at = pos + len(ZH_BEFORE)
            parts.append(f"{ZH_BEFORE}{ZH_TARGET}{ZH_AFTER}。")
        else:
            number = rng.randrange(1, 100)
            parts.append(f"{rng.choice(_ZH_SUBJECTS)}在第{number}次会议上{rng.choice(_ZH_VERBS)}"
                         f"{rng.choice(_ZH_OBJECTS)}{rng.choice(_ZH_TAILS)}")
        pos += len(parts[-1])
    return "".join(parts), target_at


def timed(fn, *args, repeats: int = 1, **kw):
    """The best of ``repeats`` runs: the CPU is shared, the minimum is the least disturbed."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(*args, **kw)
        best = min(best, time.perf_counter() - t)
    return best, out


def where(a: Alignment) -> str:
    return f"({a.start}, {a.end}) {a.status.value}/{a.method} sim={a.similarity}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1_000_000, help="characters of English text")
    ap.add_argument("--zh-size", type=int, default=200_000, help="characters of Chinese text")
    ap.add_argument("--spans", type=int, default=50, help="spans given to ground_all at once")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the new code; the best counts")
    ap.add_argument("--skip-baseline", action="store_true", help="leave out the legacy difflib runs (~30 s)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    from openie.engines.hardware import hardware_summary

    print(f"hardware: {hardware_summary()}", flush=True)
    result: dict[str, object] = {"config": vars(args), "python": platform.python_version(), "cpus": os.cpu_count()}

    text, entities = english_text(args.size)
    once = [(s, e) for s, e in entities if e - s >= 12 and " " in text[s:e] and text.count(text[s:e]) == 1]
    s0, e0 = once[-1]
    gold, span = text[s0:e0], misspell(text[s0:e0], seed=0)
    print(f"english text: {len(text)} chars; target {gold!r} at ({s0}, {e0}) = {100 * s0 / len(text):.0f}% "
          f"of the text; query {span!r}")
    ground("warm up", "warm")  # compiles the unit regex once per process (~25 ms)
    new_s, new = timed(ground, text, span, repeats=args.repeats)
    print(f"new ground():        {new_s:.3f} s  {where(new)} (index included; best of {args.repeats})")
    row: dict[str, object] = {"chars": len(text), "gold": [s0, e0], "query": span, "new_seconds": new_s,
                              "new": [new.start, new.end]}
    if not args.skip_baseline:
        old_s, old = timed(legacy, text, span)
        same = (old.start, old.end) == (new.start, new.end)
        print(f"legacy difflib:      {old_s:.3f} s  {where(old)}")
        print(f"speedup legacy/new:  {old_s / new_s:.0f}x; same offsets: {same}")
        row |= {"legacy_seconds": old_s, "legacy": [old.start, old.end], "speedup": old_s / new_s, "same": same}
    result["english_one_span"] = row

    step = max(1, len(entities) // args.spans)
    picked = entities[::step][:args.spans]
    spans = [text[s:e] if k % 2 == 0 else misspell(text[s:e], seed=k) for k, (s, e) in enumerate(picked)]
    all_s, got = timed(ground_all, text, spans, repeats=args.repeats)
    statuses = {m: sum(a.method == m for a in got) for m in ("exact", "casefold", "whitespace", "fuzzy", "none")}
    same_text = sum(a.found and text[a.start:a.end].casefold() == text[s:e].casefold()
                    for a, (s, e) in zip(got, picked, strict=True))
    print(f"ground_all {len(spans)} spans ({len(spans) // 2} misspelled): {all_s:.3f} s "
          f"({1000 * all_s / len(spans):.1f} ms/span); methods {statuses}; "
          f"on an occurrence of the entity's text {same_text}/{len(spans)}")
    result["english_ground_all"] = {"spans": len(spans), "seconds": all_s, "methods": statuses,
                                    "same_text": same_text}

    zh, at = chinese_text(args.zh_size)
    gold_zh = (at, at + len(ZH_TARGET))
    print(f"chinese text: {len(zh)} chars; target at {gold_zh}; query {ZH_PARAPHRASE!r}")
    zh_s, zh_new = timed(ground, zh, ZH_PARAPHRASE, repeats=args.repeats)
    print(f"new ground():        {zh_s:.3f} s  {where(zh_new)} (best of {args.repeats}); on the target: "
          f"{(zh_new.start, zh_new.end) == gold_zh}; {zh[zh_new.start:zh_new.end] if zh_new.found else ''!r}")
    row = {"chars": len(zh), "gold": list(gold_zh), "new_seconds": zh_s, "new": [zh_new.start, zh_new.end]}
    if not args.skip_baseline:
        zh_old_s, zh_old = timed(legacy, zh, ZH_PARAPHRASE)
        print(f"legacy difflib:      {zh_old_s:.3f} s  {where(zh_old)}")
        print(f"speedup legacy/new:  {zh_old_s / zh_s:.0f}x; same offsets: "
              f"{(zh_old.start, zh_old.end) == (zh_new.start, zh_new.end)}")
        row |= {"legacy_seconds": zh_old_s, "legacy": [zh_old.start, zh_old.end]}
    result["chinese_one_span"] = row
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
