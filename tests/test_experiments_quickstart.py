"""openie quickstart: the same records with random and with retrieved demonstrations, a page, and quiet output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from openie.engines import ScriptedEngine, vllm_available
from openie.experiments.quickstart import run_quickstart
from openie.records import iter_jsonl

QUERY = re.compile(r'Input: "(.*)"\nOutput:$', re.S)
# A library log line: vLLM's "(MainProcess pid=1) INFO 12-07 18:09:19 [x.py:1]", transformers' / Python's
# "INFO:name:" or "WARNING:name:", Ray's "[INFO]", torch's C++ "[W1207 ...]" and "... Warning:".
LIBRARY_LINE = re.compile(r"\b(INFO|DEBUG)\b|\bWARNING\b|^\[W\d{4}|Warning: |FutureWarning|UserWarning", re.M)


def _first_capitalised_word(request) -> str:
    """Answers 'person: <first capitalised word of the query>' (right for some records, wrong for others)."""
    query = QUERY.search(request.prompt).group(1)
    word = next((w for w in query.split() if w[:1].isupper() and w.isalpha()), None)
    return f"person: {word}" if word else "None"


def test_quickstart_compares_random_and_retrieved_demonstrations_on_the_same_records(tmp_path):
    engine = ScriptedEngine(_first_capitalised_word)
    said: list[str] = []
    result = run_quickstart(tmp_path / "qs", engine=engine, limit=6, k=2, show_progress=False, say=said.append)

    random_arm, retrieved_arm = result.arms["random"], result.arms["retrieved"]
    assert random_arm.records == retrieved_arm.records == 6 and len(engine.calls) == 12
    assert random_arm.f1 is not None and retrieved_arm.f1 is not None
    random_preds = list(iter_jsonl(random_arm.output))
    retrieved_preds = list(iter_jsonl(retrieved_arm.output))
    assert [p.id for p in random_preds] == [p.id for p in retrieved_preds]  # the same records
    assert any(a.meta["demo_ids"] != b.meta["demo_ids"] for a, b in zip(random_preds, retrieved_preds, strict=True))
    assert all(len(p.meta["demo_ids"]) == 2 for p in random_preds + retrieved_preds)

    lines = result.lines()
    assert lines[0].startswith("random demonstrations") and f"strict F1 {random_arm.f1:.4f}" in lines[0]
    assert lines[1].startswith("retrieved demonstrations") and "bm25s" in lines[1]
    assert lines[2] == f"difference (retrieved - random): {retrieved_arm.f1 - random_arm.f1:+.4f} F1"
    assert any(line.startswith("hardware: ") for line in said)

    page = result.page.read_text(encoding="utf-8")
    for pred in random_preds:
        assert pred.id in page
    assert page.count("<details>") == 12  # one prompt + raw answer per record and arm
    assert "Here are some examples" in page and "person: " in page and "finish: stop" in page
    summary = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert summary["settings"]["k"] == 2 and set(summary["arms"]) == {"random", "retrieved"}

    again = run_quickstart(tmp_path / "qs", engine=engine, limit=6, k=2, show_progress=False, say=said.append)
    assert again.arms["random"].resumed == 6 and len(engine.calls) == 12  # resumed, no engine call


def test_quickstart_refuses_settings_that_compare_nothing(tmp_path):
    with pytest.raises(ValueError, match="k and limit must be >= 1"):
        run_quickstart(tmp_path, engine=ScriptedEngine([]), k=0)


def _quickstart_cli(tmp_path: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENIE_HOME": str(tmp_path / "home")}
    for key in ("VLLM_LOGGING_LEVEL", "TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS"):  # the CLI's defaults decide
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "openie.cli", *extra, "quickstart", "--out", str(tmp_path / "qs"), "--model", str(model),
         "--backend", "vllm", "--k", "1", "--max-tokens", "8", "--engine-option", "max_model_len=1024",
         "--engine-option", "cpu_threads=1", "--no-progress", *(["--limit", "3"] if not extra else ["--limit", "1"])],
        capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
def test_quickstart_cli_on_a_tiny_model_prints_both_f1_lines_and_no_library_log(long_decoder, tmp_path):
    run = _quickstart_cli(tmp_path / "quiet", long_decoder)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"^random demonstrations +\(k=1\): strict F1 \d\.\d{4}", run.stdout, re.M)
    assert re.search(r"^retrieved demonstrations \(k=1, bm25s\): strict F1 \d\.\d{4}", run.stdout, re.M)
    assert re.search(r"^difference \(retrieved - random\): [+-]\d\.\d{4} F1$", run.stdout, re.M)
    page = re.search(r"^report: (\S+)", run.stdout, re.M).group(1)
    assert Path(page).is_file() and "openie quickstart" in Path(page).read_text(encoding="utf-8")
    noise = LIBRARY_LINE.findall(run.stdout + run.stderr)
    assert not noise, (run.stdout + run.stderr)[-3000:]
    assert re.search(r"^openie: dtype auto -> (float32|bfloat16) \(", run.stderr, re.M)  # said once, by openie

    loud = _quickstart_cli(tmp_path / "verbose", long_decoder, "--verbose")  # the check above can fail
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert LIBRARY_LINE.search(loud.stdout + loud.stderr)
