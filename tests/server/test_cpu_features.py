"""Which precision the pipeline picks: bf16 only on CPUs with bf16 hardware, fp16 on CUDA."""

import pytest

from vibe_server.pipeline import cpu_features
from vibe_server.pipeline.cpu_features import choose_precision, cpu_has_fast_bf16, default_precision, parse_cpu_flags

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n"
SKYLAKE_X = "flags\t\t: fpu avx2 avx512f avx512bw avx512vl avx512_vnni\n"  # AVX-512 but no bf16
HASWELL = "flags\t\t: fpu sse4_2 avx avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_flags_are_read_from_every_processor_line():
    assert {"avx512_bf16", "avx2", "fpu"} <= parse_cpu_flags(ZEN4)
    assert "AuthenticAMD" not in parse_cpu_flags(ZEN4)
    assert parse_cpu_flags("") == set()


@pytest.mark.parametrize(
    "cpuinfo, fast", [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (SKYLAKE_X, False), (HASWELL, False), (GRAVITON3, False)]
)
def test_bf16_hardware_is_avx512_bf16_or_amx(cpuinfo, fast):
    assert cpu_has_fast_bf16(cpuinfo) is fast
    assert default_precision("cpu", cpuinfo_text=cpuinfo) == ("bf16" if fast else "fp32")


@pytest.mark.parametrize(
    "capability, fast", [("AVX512", False), ("AVX2", False), ("DEFAULT", False), ("AMX_BF16", True)]
)
def test_without_cpuinfo_torch_capability_decides(monkeypatch, capability, fast):
    monkeypatch.setattr(cpu_features, "_torch_capability", lambda: capability)
    assert cpu_has_fast_bf16("") is fast


def test_unreadable_cpuinfo_falls_back_to_torch(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_features, "CPUINFO_PATH", tmp_path / "missing")
    monkeypatch.setattr(cpu_features, "_torch_capability", lambda: "AVX2")
    assert cpu_has_fast_bf16() is False


def test_cuda_gets_fp16_and_explicit_choices_win():
    assert default_precision("cuda:0", cpuinfo_text=HASWELL) == "fp16"
    assert choose_precision("fp32", fast=True, device="cuda:0") == "fp32"
    assert choose_precision("auto", fast=True, device="cpu") == "bf16"
    assert choose_precision("auto", fast=True, device="cuda") == "fp16"
    assert choose_precision("auto", fast=False, device="cuda") == "fp16"
