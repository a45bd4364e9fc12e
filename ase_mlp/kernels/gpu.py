"""GPU launch of the SNAP kernels: the same source compiled by NVRTC through CuPy.

Data stays in torch CUDA tensors; the kernels receive their ``data_ptr()`` values
(zero copy, like DLPack) inside the same ``SnaTables``/``SnaCall`` structs as the CPU
build, copied to the device. Launches go to torch's current stream
(``cupy.cuda.ExternalStream``), so they order correctly with torch's own work.

Each GPU thread owns one atom at a time (grid-stride) and a private slice of a
scratch buffer for its per-atom workspace. cupy is an optional dependency
(``pip install 'ase-mlp[gpu]'``): without it, or without a CUDA device,
:func:`available` is False and the torch implementation runs on the GPU.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import torch

from ase_mlp.kernels._build import HERE, KernelUnavailable, library


#: threads per block, and the cap on concurrently resident atoms (their workspaces)
BLOCK = 128
MAX_THREADS = 1 << 15


def _cupy():
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise KernelUnavailable(
            "cupy is not installed: pip install 'ase-mlp[gpu]' (a CuPy wheel matching "
            "your CUDA, e.g. cupy-cuda12x)") from exc
    return cupy


def available() -> bool:
    """True when cupy imports, torch sees a CUDA device and the CPU build (which sizes
    the GPU workspaces) loads."""
    from ase_mlp.kernels._build import available as cpu_build_available

    if not torch.cuda.is_available() or not cpu_build_available():
        return False
    try:
        _cupy()
    except KernelUnavailable:
        return False
    return True


@functools.lru_cache(maxsize=None)
def module(device_index: int):
    """The NVRTC-compiled module for the architecture of CUDA device ``device_index``."""
    cupy = _cupy()
    major, minor = torch.cuda.get_device_capability(device_index)
    source = (HERE / "sna_cuda.cu").read_text()
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=source, backend="nvrtc",
                              options=("-std=c++17", f"-I{HERE}",
                                       f"--gpu-architecture=sm_{major}{minor}"))


class DeviceTables:
    """The tables of one descriptor on one CUDA device (struct and arrays)."""

    def __init__(self, host_tables, device):
        from ase_mlp.kernels.sna import _Tables

        self.arrays = {k: torch.as_tensor(v).to(device) for k, v in host_tables._keep.items()}
        s = _Tables.from_buffer_copy(bytes(host_tables.struct))  # the scalars
        for k, v in self.arrays.items():
            setattr(s, k, v.data_ptr())
        self.struct = s
        self.device_struct = _struct_on_device(s, device)


def _struct_on_device(struct, device) -> torch.Tensor:
    raw = np.frombuffer(bytes(struct), dtype=np.uint8).copy()
    return torch.from_numpy(raw).to(device)


def run(kind: int, host_tables, call, dtype, device) -> None:
    """Launch kernel ``kind`` (0 fused linear, 1 descriptors, 2 gradients, 4 fused
    NN-SNAP) on ``device``."""
    cupy = _cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    cache = host_tables.__dict__.setdefault("_device", {})
    dt = cache.get(index)
    if dt is None:
        dt = cache[index] = DeviceTables(host_tables, device)
    suffix = "f64" if dtype == torch.float64 else "f32"
    names = {0: "ase_mlp_sna_fused_", 1: "ase_mlp_sna_descriptors_",
             2: "ase_mlp_sna_gradient_", 4: "ase_mlp_sna_nn_"}
    if kind not in names:
        raise ValueError(f"no GPU version of kernel {kind}")
    name = names[kind]
    kern = module(index).get_function(name + suffix)
    n = int(call.n_atoms)
    if n == 0:
        return
    threads = min(n, MAX_THREADS)
    blocks = (threads + BLOCK - 1) // BLOCK
    # the per-atom workspace as sna_core.h defines it (asked of the CPU build)
    ws = int(library().ase_mlp_sna_workspace(kind, ctypes.byref(host_tables.struct),
                                             int(call.nn_width)))
    scratch = torch.empty(blocks * BLOCK * ws, dtype=dtype, device=device)
    call_dev = _struct_on_device(call, device)
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)
    with cupy.cuda.Device(index), stream:
        kern((blocks,), (BLOCK,), (np.uint64(dt.device_struct.data_ptr()),
                                   np.uint64(call_dev.data_ptr()),
                                   np.uint64(scratch.data_ptr()), np.int64(ws)))
    # keep the argument buffers alive until the kernel has run on the stream
    call_dev.record_stream(torch.cuda.current_stream(device))
    scratch.record_stream(torch.cuda.current_stream(device))
