"""What this CPU can do, from ``/proc/cpuinfo``: the instruction sets that change which kernels run.

Runtimes pick kernels (and, left to themselves, precisions) by these flags, so two
machines with the same software can compute different numbers. Whatever depends on
the machine is keyed by ``signature()``, never assumed to carry over.
"""
from __future__ import annotations

import functools
import platform

# The flags that decide kernels and precisions in oneDNN and OpenVINO's CPU plugin.
RELEVANT = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
            "amx_int8", "avx512_fp16", "amx_fp16")


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


def signature() -> str:
    """Return a short name for this CPU class: machine plus its relevant flags."""
    return f"{platform.machine()}:" + ",".join(relevant())


def has_native_bf16() -> bool:
    """Return True when the CPU computes bf16 natively (AVX512_BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & flags())


def capabilities() -> list[tuple[str, str]]:
    """Return (what, this CPU) lines a user picks a runtime and precision by."""
    have = flags()
    vnni = sorted({"avx512_vnni", "avx_vnni", "amx_int8"} & have)
    bf16 = sorted({"avx512_bf16", "amx_bf16"} & have)
    return [
        ("CPU class", signature()),
        ("fp32 (any runtime)", "yes" + (" (AVX-512)" if "avx512f" in have else " (AVX2)" if "avx2" in have else "")),
        ("int8 dot products", f"yes ({', '.join(vnni)}): --runtime openvino --precision int8 runs fast (its cosine gate decides per backbone)"
         if vnni else "no VNNI/AMX: int8 is emulated, expect little gain"),
        ("native bf16", f"yes ({', '.join(bf16)})" if bf16 else "no: bf16 would be emulated"),
    ]
