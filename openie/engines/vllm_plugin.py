"""A vLLM general plugin that stops CPU LoRA kernels applying an adapter to base-model tokens.

vLLM marks a token that uses no adapter with LoRA slot index ``-1``. The GPU (Triton) kernels
skip such tokens, but the PyTorch-native ops vLLM uses on CPU (``vllm.lora.ops.torch_ops``:
``bgmv_shrink``, ``bgmv_expand``, ``bgmv_expand_slice``; the ``sgmv_*`` prefill ops call them)
gather ``weights[indices]``, and in Python ``weights[-1]`` is the *last* slot. So a base request
that shares a batch with adapter requests silently gets whatever adapter sits in the last slot
(upstream fix: vllm PR #48421). A server cannot avoid such batches (concurrent requests are
batched together), so the ops themselves are fixed here: rows whose index is ``-1`` are left
untouched, exactly as the GPU kernels do.

vLLM calls every ``vllm.general_plugins`` entry point in each of its processes (API server,
engine core, workers); ``pyproject.toml`` registers :func:`register` there, so installing
``openie`` is enough. :func:`register` is idempotent and does nothing off the CPU platform.
Set ``VLLM_PLUGINS`` to a list without ``openie_cpu_lora_fix`` to keep vLLM's own ops.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

PLUGIN_NAME = "openie_cpu_lora_fix"

_OPS_MODULE = "vllm.lora.ops.torch_ops.lora_ops"
# Modules that hold their own reference to the ops (``from ... import bgmv_shrink``).
_ALIAS_MODULES = ("vllm.lora.ops.torch_ops", "vllm.lora.punica_wrapper.punica_cpu")
_OP_NAMES = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
_MARK = "__openie_cpu_lora_fix__"


def _logger() -> logging.Logger:
    """A logger in vLLM's tree, so the patch shows in vLLM's (and the server's) log output.

    (Where the plugin loads before vLLM has set up logging, the one-off message from the first
    batch that needs the fix still shows.)
    """
    from vllm.logger import init_logger

    return init_logger(f"vllm.plugins.{PLUGIN_NAME}")


def _originals() -> dict[str, Callable[..., Any]]:
    """vLLM's own ops, kept inside vLLM's module so they survive a reload of this one."""
    return vars(importlib.import_module(_OPS_MODULE)).setdefault("_openie_cpu_lora_fix_originals", {})


def register() -> None:
    """Entry point of the ``vllm.general_plugins`` group: patch the CPU LoRA ops on CPU only.

    On every platform it also makes vLLM's kernel rebinding scan survive modules it does not
    expect (see ``patch_kernel_rebinding``).
    """
    patch_kernel_rebinding()
    try:
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
    except Exception:  # pragma: no cover - a broken platform probe must not break vLLM start-up
        _logger().exception("%s: could not detect the vLLM platform; CPU LoRA ops left as they are", PLUGIN_NAME)
        return
    if not on_cpu:
        _logger().debug("%s: not on the CPU platform, nothing to patch", PLUGIN_NAME)
        return
    patch_cpu_lora_ops()


def patch_kernel_rebinding() -> bool:
    """vLLM 0.32 rebinds Triton kernels by scanning every object of every loaded module and reading
    ``vars(obj).get("kernel")``; objects whose ``vars()`` is no dict (llvmlite's ``_lib_fn_wrapper``,
    loaded whenever numba is, e.g. by bm25s) make engine start-up fail with an AttributeError.
    The replacement skips such objects and is otherwise the same scan. Returns True if patched now.
    """
    try:
        dispatcher = importlib.import_module("vllm.triton_utils.dispatcher")
    except ImportError:  # another vLLM layout: nothing to fix
        return False
    current = getattr(dispatcher, "_rebind_kernels", None)
    if current is None or getattr(current, _MARK, False):
        return False

    def _rebind_kernels(overrides):
        with warnings.catch_warnings():  # the scan touches deprecated module attributes (torch.distributed.reduce_op)
            warnings.simplefilter("ignore")
            _rebind(overrides)

    def _rebind(overrides):
        originals = {id(original): wrapper for original, wrapper in overrides}
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attr, value in list(namespace.items()):
                wrapper = originals.get(id(value))
                if wrapper is not None:
                    setattr(module, attr, wrapper)
                    continue
                try:
                    own = vars(value)
                except TypeError:
                    continue
                if not isinstance(own, dict):
                    continue
                wrapper = originals.get(id(own.get("kernel")))
                if wrapper is None:
                    continue
                value.kernel = wrapper
                if not isinstance(value, type):
                    value.__dict__.pop("_kernel_arg_names", None)

    setattr(_rebind_kernels, _MARK, True)
    dispatcher._rebind_kernels = _rebind_kernels
    _logger().info("%s: vLLM's kernel rebinding now skips objects without an instance dict", PLUGIN_NAME)
    return True


def is_patched() -> bool:
    """Whether vLLM's CPU LoRA ops are currently the fixed ones."""
    mod = sys.modules.get(_OPS_MODULE)
    return mod is not None and all(getattr(getattr(mod, n), _MARK, False) for n in _OP_NAMES)


def patch_cpu_lora_ops() -> list[str]:
    """Replace the torch-native ``bgmv_*`` ops wherever vLLM refers to them.

    Returns the ``module.attribute`` names that were changed (empty when already patched).
    """
    ops = importlib.import_module(_OPS_MODULE)
    originals = _originals()
    for name in _OP_NAMES:
        current = getattr(ops, name)
        if not getattr(current, _MARK, False):
            originals[name] = current
    fixed = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand, "bgmv_expand_slice": bgmv_expand_slice}
    changed = []
    for mod_name in (_OPS_MODULE, *_ALIAS_MODULES):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:  # pragma: no cover - layout of another vLLM version
            _logger().warning("%s: module %s not found; its LoRA ops are not patched", PLUGIN_NAME, mod_name)
            continue
        for name in _OP_NAMES:
            if hasattr(mod, name) and getattr(mod, name) is not fixed[name]:
                setattr(mod, name, fixed[name])
                changed.append(f"{mod_name}.{name}")
    if changed:
        _logger().info("%s: CPU LoRA ops now skip tokens without an adapter (index -1): patched %s",
                  PLUGIN_NAME, ", ".join(changed))
    return changed


def unpatch_cpu_lora_ops() -> list[str]:
    """Put vLLM's own ops back (for tests that show the bug); returns what was restored."""
    restored = []
    for mod_name in (_OPS_MODULE, *_ALIAS_MODULES):
        mod = sys.modules.get(mod_name)
        if mod is None:
            continue
        for name in _OP_NAMES:
            if getattr(getattr(mod, name, None), _MARK, False) and name in _originals():
                setattr(mod, name, _originals()[name])
                restored.append(f"{mod_name}.{name}")
    if restored:
        _logger().info("%s: restored vLLM's CPU LoRA ops: %s", PLUGIN_NAME, ", ".join(restored))
    return restored


def _mark(fn: Callable[..., Any]) -> Callable[..., Any]:
    setattr(fn, _MARK, True)
    return fn


def _rows_to_apply(indices: Any, *tensors: Any) -> Any:
    """The rows that use an adapter, ``None`` for all rows, or an empty tensor for none.

    Row ``i`` of every tensor belongs to ``indices[i]``; when the shapes do not line up that
    way (vLLM's broadcasting corner cases) ``None`` falls back to vLLM's op on clamped indices.
    """
    valid = indices >= 0
    if bool(valid.all()):
        return None
    _note_first_skip()
    if any(t.shape[0] != indices.shape[0] for t in tensors):
        return None
    return valid.nonzero().squeeze(1)


_skipped_once = False


def _note_first_skip() -> None:
    """Log once per process when the fix first matters (the log at patch time can come before
    vLLM has set up its log handlers)."""
    global _skipped_once
    if not _skipped_once:
        _skipped_once = True
        _logger().info("%s: a LoRA batch has tokens without an adapter; the patched CPU ops leave them "
                       "unchanged (vLLM's own ops would apply the last adapter slot)", PLUGIN_NAME)


def _gather(weights: Any, indices: Any, dtype: Any) -> Any:
    selected = weights[indices].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    return selected


@_mark
def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    """``output[i, :r] = scaling * inputs[i] @ A[idx[i]]`` for rows with an adapter only."""
    import torch

    rows = _rows_to_apply(lora_indices_tensor, inputs, output_tensor)
    if rows is None:
        return _masked_fallback("bgmv_shrink", inputs, lora_a_weights, output_tensor, lora_indices_tensor,
                                scaling)
    if rows.numel() == 0:
        return None
    selected = _gather(lora_a_weights, lora_indices_tensor[rows], output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs[rows].to(dtype=output_tensor.dtype), selected)
    output_tensor[rows, : outputs.shape[1]] = scaling * outputs
    return None


@_mark
def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    """``output[i] (+)= inputs[i] @ B[idx[i]]`` for rows with an adapter only."""
    import torch

    rows = _rows_to_apply(lora_indices_tensor, inputs, output_tensor)
    if rows is None:
        return _masked_fallback("bgmv_expand", inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                                add_inputs)
    if rows.numel() == 0:
        return None
    selected = _gather(lora_b_weights, lora_indices_tensor[rows], output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs[rows].to(dtype=output_tensor.dtype), selected)
    # LoRA adapter and model may add different amounts of padding to the output (as upstream).
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[rows, :common] += outputs[:, :common]
    else:
        output_tensor[rows, :common] = outputs[:, :common]
    return None


@_mark
def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    """``output[i, off:off+size] (+)= inputs[i] @ B[idx[i]]`` for rows with an adapter only."""
    import torch

    rows = _rows_to_apply(lora_indices_tensor, inputs, output_tensor)
    if rows is None:
        return _masked_fallback("bgmv_expand_slice", inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                                slice_offset, slice_size, add_inputs)
    if rows.numel() == 0:
        return None
    selected = _gather(lora_b_weights, lora_indices_tensor[rows], output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs[rows].to(dtype=output_tensor.dtype), selected)
    if add_inputs:
        output_tensor[rows, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[rows, slice_offset: slice_offset + slice_size] = outputs
    return None


def _masked_fallback(name: str, inputs, weights, output_tensor, indices, *args):
    """vLLM's own op, with ``-1`` rows zeroed out of the inputs so they contribute nothing.

    Runs when every row has an adapter (then it is vLLM's op unchanged) or when rows and
    indices differ in number (vLLM's ops broadcast a single row there).
    """
    valid = indices >= 0
    if bool(valid.all()):
        return _originals()[name](inputs, weights, output_tensor, indices, *args)
    if not bool(valid.any()):
        return None
    if inputs.shape[0] == indices.shape[0]:
        inputs = inputs * valid.unsqueeze(1).to(inputs.dtype)
    return _originals()[name](inputs, weights, output_tensor, indices.clamp(min=0), *args)
