"""GPU kernels (CuPy/NVRTC) equal the CPU kernels: runs where a CUDA device and cupy
are present, skips cleanly elsewhere (benchmarks/gpu_check.py is the fuller check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from ase_mlp.kernels import gpu


pytestmark = pytest.mark.skipif(not gpu.available(), reason="needs a CUDA device and cupy")


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_gpu_equals_cpu(dtype, tol):
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.descriptors import Bispectrum
    from ase_mlp.models import NNSNAP, LinearSNAP

    rng = np.random.default_rng(1)
    d = Bispectrum(["W", "Be"], 8, 4.8123, [0.5, 0.417932], [1.0, 0.959049])
    models = [LinearSNAP(d, rng.normal(size=(2, 1 + d.n_descriptors)) * 0.1),
              NNSNAP(d, hidden=[8])]
    images = []
    for rep in [(2, 2, 2), (3, 2, 2), (1, 1, 1)]:
        at = bulk("W", "bcc", a=3.2, cubic=True).repeat(rep)
        at.symbols[::3] = "Be"
        at.positions += rng.normal(scale=0.1, size=at.positions.shape)
        images.append(at)
    for model in models:
        cpu = MLPCalculator(model, device="cpu", dtype=dtype, backend="compiled")
        cuda = MLPCalculator(model, device="cuda", dtype=dtype, backend="compiled")
        for a, b in zip(cpu.calculate_batch(images), cuda.calculate_batch(images), strict=True):
            for key in ("energy", "energies", "forces", "stress"):
                x, y = np.asarray(a[key]), np.asarray(b[key])
                assert np.abs(x - y).max() <= tol * np.abs(x).max(), key
    assert torch.cuda.is_available()
