"""Quiet by default: library loggers and warnings hidden, openie's own notes shown, --verbose restores them."""

from __future__ import annotations

import logging
import subprocess
import sys


def _probe(verbose: bool) -> subprocess.CompletedProcess:
    code = f"""
import logging, os, warnings
from openie.verbosity import configure
configure({verbose})
logging.getLogger("vllm.engine").warning("LIBRARY WARNING LINE")
logging.getLogger("transformers").info("LIBRARY INFO LINE")
logging.getLogger("ray").error("LIBRARY ERROR LINE")
warnings.warn("LIBRARY PYTHON WARNING", UserWarning)
logging.getLogger("openie.engines").info("dtype auto -> float32 (note)")
print("env", os.environ.get("VLLM_LOGGING_LEVEL"), os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"))
"""
    if verbose:  # library defaults: give the library loggers a handler as the libraries do themselves
        code = code.replace("configure(True)", "configure(True); logging.basicConfig(level=logging.INFO)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_quiet_hides_library_messages_below_error_and_keeps_openie_notes():
    run = _probe(False)
    assert run.returncode == 0, run.stderr
    assert "LIBRARY ERROR LINE" in run.stderr  # errors always show
    for hidden in ("LIBRARY WARNING LINE", "LIBRARY INFO LINE", "LIBRARY PYTHON WARNING"):
        assert hidden not in run.stderr
    assert "openie: dtype auto -> float32 (note)" in run.stderr
    assert "env ERROR 1" in run.stdout  # children (a vLLM server, Ray workers) inherit the quiet settings


def test_verbose_shows_library_messages():
    run = _probe(True)
    assert run.returncode == 0, run.stderr
    assert "LIBRARY WARNING LINE" in run.stderr and "LIBRARY INFO LINE" in run.stderr
    assert "LIBRARY PYTHON WARNING" in run.stderr and "env None None" in run.stdout


def test_configure_is_idempotent():
    from openie.verbosity import configure

    own = logging.getLogger("openie")
    before = list(own.handlers)
    try:
        configure(True)
        configure(True)
        assert len([h for h in own.handlers if h not in before]) <= 1
    finally:
        for h in list(own.handlers):
            if h not in before:
                own.removeHandler(h)
        own.setLevel(logging.NOTSET)
