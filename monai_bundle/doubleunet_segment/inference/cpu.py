"""What this CPU is: its model name and the instruction-set features that change which inference path is fastest.

Read from ``/proc/cpuinfo`` on Linux; elsewhere the model name falls back to :func:`platform.processor` and the
flags read as empty. The cached path decisions (:class:`.precision.DecisionCache`) are keyed on
:func:`cpu_description`, so a cache shared by several machines (a home folder on a cluster) never hands one CPU
kind the decision measured on another: two VMs both called "AMD EPYC" can differ in AVX-512, VNNI and bf16.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from .inferer import cpu_supports_bf16

__all__ = ["cpu_description", "cpu_flags", "cpu_has_vnni", "cpu_model"]

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # an int8 dot-product instruction


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "", frozenset()

    def first(field: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(field)), "")

    return first("model name"), frozenset(first("flags").split())


def cpu_model() -> str:
    """The processor's model name (``model name`` of ``/proc/cpuinfo``; else :func:`platform.processor`)."""
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` names them (empty where there is no such file)."""
    return _cpuinfo()[1]


def cpu_has_vnni() -> bool:
    """True where the CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8); False where
    that cannot be read (e.g. macOS), where 7-bit int8 weights are the safe choice."""
    return bool(VNNI_FLAGS & cpu_flags())


def cpu_description() -> str:
    """Model name, logical cores and the features the path decisions depend on, e.g.
    ``AMD EPYC x2 AVX2`` or ``AMD EPYC x2 AVX512 vnni bf16``: the vector width torch dispatches to
    (``torch.backends.cpu.get_cpu_capability``), int8 dot products (:func:`cpu_has_vnni`) and native bfloat16
    in oneDNN."""
    extras = [name for name, has in (("vnni", cpu_has_vnni()), ("bf16", cpu_supports_bf16())) if has]
    return " ".join([cpu_model(), f"x{os.cpu_count()}", torch.backends.cpu.get_cpu_capability(), *extras])
