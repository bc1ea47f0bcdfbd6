"""What this CPU can do, from ``/proc/cpuinfo``: the instruction sets that change which kernels run.

Runtimes pick kernels (and, left to themselves, precisions) by these flags, so two
machines with the same software can compute different numbers. Whatever depends on
the machine is keyed by ``signature()``, never assumed to carry over.
"""

from __future__ import annotations

import functools
import platform

# The flags that decide kernels and precisions in oneDNN and OpenVINO's CPU plugin.
RELEVANT = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "avx512_fp16",
    "amx_fp16",
)


@functools.lru_cache(maxsize=1)
def flags() -> frozenset:
    """Return the CPU flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def relevant() -> list[str]:
    """Return the flags among ``RELEVANT`` this CPU has, in ``RELEVANT``'s order."""
    have = flags()
    return [f for f in RELEVANT if f in have]


X86 = ("x86_64", "amd64", "i386", "i686")


def signature(have: frozenset | None = None) -> str:
    """Return a short name for this CPU class (or one with flags ``have``): the machine plus, on x86, the
    flags that decide kernels there; elsewhere (ARM's asimd, sve, bf16, i8mm ...) every flag reported,
    so two different CPUs never share a class by knowing none of their flags."""
    have = flags() if have is None else have
    machine = platform.machine()
    names = [f for f in RELEVANT if f in have] if machine.lower() in X86 else sorted(have)
    return f"{machine}:" + ",".join(names)


def has_native_bf16() -> bool:
    """Return True when the CPU computes bf16 natively (AVX512_BF16 or AMX)."""
    return bool(_bf16_flags(flags()))


def _int8_flags(have: frozenset) -> list[str]:
    return sorted({"avx512_vnni", "avx_vnni", "amx_int8"} & have)


def _bf16_flags(have: frozenset) -> list[str]:
    return sorted({"avx512_bf16", "amx_bf16"} & have)


def capabilities(have: frozenset | None = None) -> list[tuple[str, str]]:
    """Return (what, this CPU) lines a user picks a runtime and precision by (``have``: other flags)."""
    have = flags() if have is None else have
    vnni, bf16 = _int8_flags(have), _bf16_flags(have)
    return [
        ("CPU class", signature(have)),
        ("fp32 (any runtime)", "yes" + (" (AVX-512)" if "avx512f" in have else " (AVX2)" if "avx2" in have else "")),
        (
            "int8 dot products",
            f"yes ({', '.join(vnni)}): --precision int8 runs fast (its cosine gate decides per backbone)"
            if vnni
            else "no VNNI/AMX: --precision int8 runs without int8 dot products (measured about 1.9x on "
            "VGG16 on an AVX2-only CPU, against 3.6x with VNNI)",
        ),
        (
            "native bf16",
            f"yes ({', '.join(bf16)}): --precision bf16 is available (its cosine gate decides per backbone)"
            if bf16
            else "no: --precision bf16 is refused on this CPU",
        ),
    ]


def precision_hint(have: frozenset | None = None) -> str:
    """One line for an fp32 extraction on a CPU that also computes int8 or bf16 natively (else empty)."""
    have = flags() if have is None else have
    vnni, bf16 = _int8_flags(have), _bf16_flags(have)
    if not vnni and not bf16:
        return ""
    native = [(name, found) for name, found in (("int8", vnni), ("bf16", bf16)) if found]
    what = " and ".join(f"{name} ({', '.join(found)})" for name, found in native)
    options = " or ".join(name for name, _ in native)
    return (
        f"this CPU also computes {what} natively: --precision {options} can be 2-4x faster on large backbones "
        "(own cache key, checked by a cosine gate; docs/runtimes.md says which runtime and precision)"
    )
