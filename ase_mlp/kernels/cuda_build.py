"""Build checks of the GPU side of the kernels with nvcc (no GPU needed).

The GPU runtime compiles the same source with NVRTC (:mod:`ase_mlp.kernels.gpu`);
this module compiles it ahead of time with ``nvcc -cubin`` to check that it builds
and to report register and stack use (``ptxas -v``)."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

from ase_mlp.kernels._build import HERE, KernelUnavailable


CUDA_SOURCE = HERE / "sna_cuda.cu"
NVCC_FLAGS = ("-O3", "-std=c++17")


def _nvcc(nvcc: str | None) -> str:
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise KernelUnavailable("nvcc is not on PATH (install the CUDA toolkit)")
    return nvcc


def compile_cubin(target, arch: str = "sm_80", nvcc: str | None = None,
                  verbose: bool = False) -> pathlib.Path:
    """Compile ``sna_cuda.cu`` to a cubin for ``arch``; returns the path.

    With ``verbose`` the ptxas report is kept in ``target.with_suffix('.ptxas.txt')``."""
    target = pathlib.Path(target)
    cmd = [_nvcc(nvcc), "-cubin", f"-arch={arch}", *NVCC_FLAGS, f"-I{HERE}",
           str(CUDA_SOURCE), "-o", str(target)]
    if verbose:
        cmd.insert(1, "-Xptxas=-v")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise KernelUnavailable(f"nvcc failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    if verbose:
        target.with_suffix(".ptxas.txt").write_text(proc.stderr)
    return target


def ptxas_report(arch: str = "sm_80", nvcc: str | None = None) -> dict[str, dict]:
    """Registers, stack frame and spills of every kernel, from ``ptxas -v``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cubin = compile_cubin(pathlib.Path(tmp) / "sna.cubin", arch, nvcc, verbose=True)
        text = cubin.with_suffix(".ptxas.txt").read_text()
    out: dict[str, dict] = {}
    name = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            out[name] = {}
            continue
        if name is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                      r"loads", line)
        if m and "stack" not in out[name]:
            out[name].update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                             spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[name]["registers"] = int(m.group(1))
    return out


if __name__ == "__main__":  # python -m ase_mlp.kernels.cuda_build [arch]
    import sys

    arch = sys.argv[1] if len(sys.argv) > 1 else "sm_80"
    print(f"{'kernel':32s} {'registers':>9s} {'stack B':>8s} {'spills B':>9s}  ({arch})")
    for k, v in ptxas_report(arch).items():
        print(f"{k:32s} {v.get('registers', 0):9d} {v.get('stack', 0):8d} "
              f"{v.get('spill_stores', 0) + v.get('spill_loads', 0):9d}")
