"""dtype "auto" from the hardware: bfloat16 only where it is native, float32 otherwise."""

from __future__ import annotations

import pytest

from openie.engines.base import EngineError, GenerationRequest, request_key
from openie.engines.hardware import (
    DtypeChoice,
    cpu_flags,
    dtype_name,
    hardware_summary,
    native_bf16,
    resolve_dtype,
)
from openie.engines.scripted import ScriptedEngine

AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c
"""
AVX512_BF16 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: sse2 avx2 avx512f amx_bf16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve bf16 i8mm
"""
GRAVITON2 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
"""
NO_GPU = (False, False)


def test_cpu_flags_are_read_from_x86_flags_and_arm_features():
    assert {"avx2", "fma"} <= cpu_flags(AVX2_ONLY) and "avx512_bf16" not in cpu_flags(AVX2_ONLY)
    assert "bf16" in cpu_flags(GRAVITON3) and "asimd" in cpu_flags(GRAVITON2)
    assert cpu_flags("") == frozenset()  # no /proc/cpuinfo (macOS): no flags, so float32


@pytest.mark.parametrize(("cpuinfo", "machine", "native"), [
    (AVX2_ONLY, "x86_64", False), (AVX512_BF16, "x86_64", True), (SAPPHIRE_RAPIDS, "x86_64", True),
    (GRAVITON3, "aarch64", True), (GRAVITON2, "aarch64", False), ("", "x86_64", False),
])
def test_native_bf16_needs_bf16_instructions(cpuinfo, machine, native):
    assert native_bf16(cpu_flags(cpuinfo), machine) is native


def test_auto_is_float32_on_a_cpu_without_native_bf16():
    choice = resolve_dtype("auto", "cpu", flags=cpu_flags(AVX2_ONLY), machine="x86_64")
    assert choice == DtypeChoice("auto", "float32", "cpu", choice.reason)
    assert "emulated" in choice.reason and str(choice).startswith("dtype auto -> float32")


def test_auto_is_bfloat16_on_a_cpu_with_avx512_bf16_or_amx():
    for info in (AVX512_BF16, SAPPHIRE_RAPIDS):
        choice = resolve_dtype("auto", "auto", flags=cpu_flags(info), machine="x86_64", cuda=NO_GPU)
        assert (choice.dtype, choice.device) == ("bfloat16", "cpu")
        assert ("avx512_bf16" in choice.reason) or ("amx_bf16" in choice.reason)


def test_auto_on_a_gpu_follows_its_bf16_support():
    assert resolve_dtype("auto", "auto", flags=cpu_flags(AVX2_ONLY), cuda=(True, True)).dtype == "bfloat16"
    assert resolve_dtype("auto", "cuda", flags=cpu_flags(AVX2_ONLY), cuda=(True, False)).dtype == "float16"


def test_explicit_dtypes_are_kept_and_normalised():
    assert resolve_dtype("bf16", "cpu", flags=cpu_flags(AVX2_ONLY)).dtype == "bfloat16"  # as asked, even emulated
    assert resolve_dtype("fp32", "cpu").dtype == "float32"
    assert resolve_dtype(None, "cpu", flags=frozenset()).dtype == "float32"
    with pytest.raises(EngineError, match="unknown dtype 'float8'"):
        resolve_dtype("float8", "cpu")
    assert dtype_name("torch.bfloat16") == "bfloat16" and dtype_name("fp16") == "float16" and dtype_name(None) is None


def test_hardware_summary_names_the_kernel_flags():
    line = hardware_summary(AVX2_ONLY)
    assert "AMD EPYC 7B12" in line and "avx2 fma" in line and "native bf16: no" in line
    assert "avx512_bf16" in hardware_summary(AVX512_BF16)


def test_the_resolved_dtype_keys_the_cache():
    """Outputs differ between float32 and bfloat16, so cached answers must not cross between them."""
    request = GenerationRequest(prompt="Paris is", max_tokens=4)
    fp32, bf16, bare = ScriptedEngine({}), ScriptedEngine({}), ScriptedEngine({})
    fp32.dtype, bf16.dtype = "float32", "bfloat16"
    keys = {request_key(e, "generate", request) for e in (fp32, bf16, bare)}
    assert len(keys) == 3
