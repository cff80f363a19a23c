"""Quiet by default: what the libraries under openie print, and what openie itself says.

vLLM, transformers, torch, Ray and huggingface_hub log dozens of INFO and WARNING lines per
engine start, which bury the progress bar and the result a researcher is waiting for. The
command line calls :func:`configure` first (before any of them is imported, since vLLM and
transformers read their levels from the environment at import time): library messages below
ERROR are hidden unless ``--verbose``; errors always show; openie's own notes (the dtype chosen,
a model converted once) go to stderr as ``openie: ...``.

Subprocesses (a vLLM server, Ray workers) inherit the environment variables set here.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Loggers of the libraries openie drives; each is set to ERROR when quiet.
LIBRARY_LOGGERS = ("vllm", "transformers", "torch", "ray", "huggingface_hub", "sentence_transformers", "httpx",
                   "httpcore", "urllib3", "filelock", "datasets", "peft", "accelerate", "gliner", "dspy", "LiteLLM",
                   "litellm", "faiss", "numexpr", "xgrammar", "bm25s", "optuna", "jieba", "matplotlib")
# Read by the libraries at import time (and by child processes).
QUIET_ENVIRONMENT = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "VLLM_CONFIGURE_LOGGING": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "RAY_DEDUP_LOGS": "1",
    "RAY_BACKEND_LOG_LEVEL": "error",
    "PYTHONWARNINGS": "ignore",
    "TOKENIZERS_PARALLELISM": "false",
}
_STATE = {"verbose": False, "quiet": False}


class _OpenieFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "openie" if record.levelno < logging.WARNING else f"openie {record.levelname.lower()}"
        return f"{prefix}: {record.getMessage()}"


def configure(verbose: bool = False) -> None:
    """Set library verbosity for this process and its children; idempotent.

    Quiet: library loggers at ERROR, Python warnings from libraries ignored, library progress bars
    off (openie's own bars stay). Verbose: the libraries' defaults, and openie's debug notes.
    """
    _STATE["verbose"], _STATE["quiet"] = verbose, not verbose
    own = logging.getLogger("openie")
    if not any(isinstance(h.formatter, _OpenieFormatter) for h in own.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OpenieFormatter())
        own.addHandler(handler)
    own.setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        return
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"openie(\.|$)")
    transformers = sys.modules.get("transformers")  # already imported: its own switches (never imported here)
    if transformers is not None:
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


def is_verbose() -> bool:
    """Whether ``configure(verbose=True)`` asked for library output (workers it starts then log too)."""
    return _STATE["verbose"]


def is_quiet() -> bool:
    """Whether ``configure()`` made this process quiet (library progress bars off too)."""
    return _STATE["quiet"]
