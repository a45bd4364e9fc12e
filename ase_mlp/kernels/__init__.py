"""Compiled kernels: one C++ source for the CPU (threads) and the GPU (CUDA).

The SNAP bispectrum family (linear, quadratic, NN-SNAP, with every LAMMPS flag) is
evaluated by ``sna_core.h``; the torch implementation in
:mod:`ase_mlp.descriptors.bispectrum` stays as the fallback and the test oracle.

Which implementation runs, and on how many threads, is set per call by a context
(no process-global state)::

    from ase_mlp.kernels import kernel_settings
    with kernel_settings(backend="torch"):      # "auto" (default), "compiled", "torch"
        ...
    with kernel_settings(threads=2):
        ...

:class:`~ase_mlp.calculators.MLPCalculator` takes ``threads=`` and ``backend=`` and
enters this context around its model calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass

from ase_mlp.kernels._build import KernelUnavailable, available, cache_dir, library


BACKENDS = ("auto", "compiled", "torch")


@dataclass(frozen=True)
class KernelSettings:
    backend: str = "auto"
    threads: int | None = None


_SETTINGS: contextvars.ContextVar[KernelSettings] = contextvars.ContextVar(
    "ase_mlp_kernel_settings", default=KernelSettings())  # noqa: B039 - frozen dataclass


def check_threads(threads) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


@contextlib.contextmanager
def kernel_settings(backend: str | None = None, threads: int | None = None):
    """Choose the implementation and the thread count inside a ``with`` block.

    ``None`` keeps the value of the enclosing context. Settings are context-local
    (:mod:`contextvars`): other threads and the rest of the process are unaffected.
    """
    cur = _SETTINGS.get()
    new = KernelSettings(
        backend=cur.backend if backend is None else check_backend(backend),
        threads=cur.threads if threads is None else check_threads(threads))
    token = _SETTINGS.set(new)
    try:
        yield new
    finally:
        _SETTINGS.reset(token)


def current_settings() -> KernelSettings:
    return _SETTINGS.get()


def cpu_loop_usable(floats, indices=()) -> bool:
    """Whether a compiled CPU loop may replace torch code on these tensors: all on the
    CPU, floats in float32/float64 and not needing autograd, index tensors int64, the
    kernels available and not switched off by ``kernel_settings(backend="torch")``."""
    import torch

    for x in floats:
        if x.device.type != "cpu" or x.dtype not in (torch.float64, torch.float32):
            return False
        if x.requires_grad and torch.is_grad_enabled():
            return False
    if any(x.device.type != "cpu" or x.dtype != torch.int64 for x in indices):
        return False
    if current_settings().backend == "torch":
        return False
    return available()


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(n_atoms: int) -> int:
    """Threads for ``n_atoms`` atoms when none were asked for: one per ~64 atoms, at most
    the cores of the affinity mask (threads live only for the call and do not spin, so
    an idle core is not a cost and a busy one only slows its own share of atoms)."""
    return max(1, min(available_cores(), n_atoms // 64))


__all__ = ["KernelSettings", "KernelUnavailable", "available", "available_cores",
           "cache_dir", "cpu_loop_usable", "current_settings", "default_threads",
           "kernel_settings", "library", "BACKENDS"]
