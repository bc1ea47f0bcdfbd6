"""What bneck says a CPU can do, for every class of CPU (flag sets given, not this machine's)."""

from __future__ import annotations

import pytest

from bneck.features.runtimes import cpu

pytestmark = pytest.mark.pure

CLASSES = {
    "avx2 only": frozenset({"avx", "avx2", "fma"}),
    "avx-512 without vnni": frozenset({"avx", "avx2", "fma", "avx512f"}),
    "avx-vnni (client)": frozenset({"avx", "avx2", "fma", "avx_vnni"}),
    "avx-512 vnni": frozenset({"avx", "avx2", "fma", "avx512f", "avx512_vnni"}),
    "vnni and bf16": frozenset({"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}),
    "amx": frozenset({"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}),
    "no flags (not x86)": frozenset(),
}


@pytest.mark.parametrize("name", CLASSES)
def test_each_cpu_class_is_told_exactly_the_precisions_it_computes_natively(name):
    have = CLASSES[name]
    int8 = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & have)
    bf16 = bool({"avx512_bf16", "amx_bf16"} & have)
    lines = dict(cpu.capabilities(have))
    assert lines["CPU class"] == cpu.signature(have) and all(f in lines["CPU class"] for f in have)
    assert lines["int8 dot products"].startswith("yes") == int8
    assert lines["native bf16"].startswith("yes") == bf16
    assert ("refused" in lines["native bf16"]) == (not bf16)  # what --precision bf16 does there
    hint = cpu.precision_hint(have)
    assert bool(hint) == (int8 or bf16)
    assert ("int8" in hint) == int8 and ("bf16" in hint) == bf16
    if hint:
        options = hint.split("--precision ", 1)[1].split(" can be")[0]
        assert options == " or ".join(p for p, on in (("int8", int8), ("bf16", bf16)) if on)


def test_this_machine_is_one_of_the_classes_it_is_told_about():
    assert cpu.capabilities() == cpu.capabilities(cpu.flags())
    assert cpu.precision_hint() == cpu.precision_hint(cpu.flags())


def test_cpus_of_other_architectures_are_told_apart_by_every_flag(monkeypatch):
    monkeypatch.setattr(cpu.platform, "machine", lambda: "aarch64")
    neoverse = frozenset({"fp", "asimd", "sve", "bf16", "i8mm"})
    older = frozenset({"fp", "asimd"})
    assert cpu.signature(neoverse) != cpu.signature(older)
    assert all(f in cpu.signature(neoverse) for f in neoverse)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    assert cpu.signature(frozenset({"avx2", "sse2", "avx512_vnni"})) == "x86_64:avx2,avx512_vnni"
