"""Which floating-point type a model should run in on this machine, and the CPU facts behind it.

bfloat16 halves memory traffic, but only hardware with bfloat16 instructions computes in it
natively: a GPU, or a CPU with AVX512_BF16 / AMX (x86) or the BF16 extension (Arm). Elsewhere
(AVX2-only x86, for one) it is emulated and runs 2-4x slower than float32 for the same answers,
so ``dtype="auto"`` picks bfloat16 only where it is native. The choice changes outputs, so it
is recorded in run configs and cache keys by its resolved name, never as ``auto``.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from functools import lru_cache

from openie.engines.base import EngineError

DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16", "half": "float16"}
DTYPES = ("auto", "float32", "bfloat16", "float16")
# x86 flags (Linux /proc/cpuinfo names) and the Arm feature that mean bfloat16 arithmetic in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
ARM_BF16_FLAG = "bf16"
# Flags worth printing beside a CPU benchmark figure: they decide which kernels run.
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve",
                  "bf16")


@lru_cache(maxsize=1)
def _proc_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (``flags`` on x86, ``Features`` on Arm) from ``/proc/cpuinfo``.

    Empty where the file does not exist (macOS, Windows): such a machine is treated as having no
    native bfloat16, which costs at most speed, never correctness.
    """
    text = _proc_cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    text = _proc_cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "cpu model", "hardware"):
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def native_bf16(flags: frozenset[str] | set[str], machine: str | None = None) -> bool:
    """Whether a CPU with these flags computes bfloat16 in hardware."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return ARM_BF16_FLAG in flags
    return bool(NATIVE_BF16_FLAGS & set(flags))


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype and why it was chosen (printed once, recorded with every run)."""

    requested: str
    dtype: str  # float32 | bfloat16 | float16
    device: str  # cpu | cuda
    reason: str

    def __str__(self) -> str:
        if self.requested == "auto":
            return f"dtype auto -> {self.dtype} ({self.reason})"
        return f"dtype {self.dtype} (as asked, on {self.device})"


def _cuda() -> tuple[bool, bool]:
    """(a CUDA device is visible, it supports bfloat16); torch is only imported when already needed."""
    if "torch" not in sys.modules:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False, False
    import torch

    if not torch.cuda.is_available():
        return False, False
    return True, bool(torch.cuda.is_bf16_supported())


def resolve_dtype(requested: str | None = "auto", device: str = "auto", *, flags: frozenset[str] | None = None,
                  machine: str | None = None, cuda: tuple[bool, bool] | None = None) -> DtypeChoice:
    """Resolve ``auto`` (or ``None``) for ``device`` (``auto``: CUDA when visible, else CPU).

    ``flags``, ``machine`` and ``cuda`` (visible, bf16-capable) stand in for the hardware in tests.
    Explicit names are normalised (``bf16`` -> ``bfloat16``) and kept as asked.
    """
    name = "auto" if requested is None else str(requested).strip().lower()
    if name != "auto" and name not in DTYPE_NAMES:
        raise EngineError(f"unknown dtype {requested!r}; use one of {', '.join(DTYPES)}")
    device = (device or "auto").lower()
    if device == "auto":
        visible, cuda_bf16 = cuda if cuda is not None else _cuda()
        device = "cuda" if visible else "cpu"
    elif device.startswith("cuda"):
        visible, cuda_bf16 = cuda if cuda is not None else _cuda()
        device = "cuda"
    else:
        device, cuda_bf16 = "cpu", False
    if name != "auto":
        return DtypeChoice(name, DTYPE_NAMES[name], device, "as asked")
    if device == "cuda":
        if cuda_bf16:
            return DtypeChoice("auto", "bfloat16", device, "GPU with bfloat16 support")
        return DtypeChoice("auto", "float16", device, "GPU without bfloat16 support")
    found = cpu_flags() if flags is None else frozenset(flags)
    if native_bf16(found, machine):
        have = sorted((NATIVE_BF16_FLAGS | {ARM_BF16_FLAG}) & found)
        return DtypeChoice("auto", "bfloat16", "cpu", f"CPU has native bfloat16: {', '.join(have)}")
    return DtypeChoice("auto", "float32", "cpu", "CPU without native bfloat16 (no avx512_bf16 / amx_bf16): "
                                                 "bfloat16 would be emulated, 2-4x slower")


def hardware_summary(cpuinfo: str | None = None) -> str:
    """One line for benchmark output: CPU model, core count and the flags that choose kernels."""
    import os

    flags = cpu_flags(cpuinfo)
    shown = [f for f in REPORTED_FLAGS if f in flags]
    return (f"{cpu_model(cpuinfo)}, {os.cpu_count()} cores, {platform.machine()}, "
            f"flags: {' '.join(shown) or 'none of ' + '/'.join(REPORTED_FLAGS[:6])}, "
            f"native bf16: {'yes' if native_bf16(flags) else 'no'}")


_ANNOUNCED: set[tuple[str, str]] = set()


def announce(choice: DtypeChoice) -> None:
    """Log a dtype choice once per process and (dtype, device) on the ``openie`` logger (the CLI
    shows it on stderr); an ``auto`` choice passed on as its resolved name is not said twice."""
    import logging

    if (choice.dtype, choice.device) in _ANNOUNCED:
        return
    _ANNOUNCED.add((choice.dtype, choice.device))
    logging.getLogger("openie").info(str(choice))


def dtype_name(dtype: object) -> str | None:
    """``torch.bfloat16`` / ``"bf16"`` / ``"bfloat16"`` -> ``"bfloat16"``; ``None`` stays ``None``."""
    if dtype is None:
        return None
    text = str(dtype).removeprefix("torch.").lower()
    return DTYPE_NAMES.get(text, text)
