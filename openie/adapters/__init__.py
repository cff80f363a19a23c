"""LoRA adapters: a registry of trained adapters (with vLLM compatibility checks) and LoRA training.

``openie.adapters.registry`` is light (no torch); the training names load torch on first use.
"""

from __future__ import annotations

from typing import Any

from openie.adapters.registry import (
    AdapterCompatibilityError,
    AdapterInfo,
    AdapterRegistry,
    check_adapter_dir,
    compatibility_problems,
)

_TRAINING = ("TrainingError", "TrainingResult", "default_target_modules", "train_lora")


def __getattr__(name: str) -> Any:
    if name in _TRAINING:
        from openie.adapters import training

        return getattr(training, name)
    raise AttributeError(f"module 'openie.adapters' has no attribute {name!r}")


__all__ = ["AdapterCompatibilityError", "AdapterInfo", "AdapterRegistry", "check_adapter_dir",
           "compatibility_problems", *_TRAINING]
