"""Compiled SNAP kernels against the torch implementation (the oracle), and the
properties the compiled path must keep: thread-count independence, fork safety,
clear fallback and errors, finite differences.

Tolerances: float64 results agree to <= 1e-12 relative (the two codes sum the same
terms in different orders: ~1e-15 is typical); float32 to 1e-5 relative of the
largest component (single precision over ~1e3-1e4 term sums)."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch
from ase.build import bulk

from ase_mlp import kernels
from ase_mlp.calculators import MLPCalculator
from ase_mlp.descriptors import Bispectrum
from ase_mlp.kernels import kernel_settings
from ase_mlp.models import NNSNAP, ZBL, LinearSNAP, QuadraticSNAP, SumModel
from ase_mlp.testing import check_forces, check_stress


pytestmark = pytest.mark.skipif(not kernels.available(),
                                reason="no C++ compiler for the compiled kernels")

DESCRIPTORS = {
    "plain 2J=6": dict(elements=["Ta"], twojmax=6, rcutfac=4.67637, radii=[0.5]),
    "two elements 2J=8": dict(elements=["W", "Be"], twojmax=8, rcutfac=4.8123,
                              radii=[0.5, 0.417932], weights=[1.0, 0.959049]),
    "chemflag bnorm 2J=4": dict(elements=["In", "P"], twojmax=4, rcutfac=1.0,
                                radii=[3.8, 3.5], weights=[1.0, 0.9], chemflag=True,
                                bnormflag=True),
    "chemflag wselfall 2J=3": dict(elements=["In", "P"], twojmax=3, rcutfac=1.0,
                                   radii=[3.6, 3.5], chemflag=True, bnormflag=True,
                                   wselfallflag=True),
    "switchinner rmin0 2J=5": dict(elements=["Ta", "W"], twojmax=5, rcutfac=4.6,
                                   radii=[0.5, 0.52], rmin0=0.2, switchinnerflag=True,
                                   sinner=[1.2, 1.4], dinner=[0.8, 0.6]),
    "no switch no bzero 2J=2": dict(elements=["Ta"], twojmax=2, rcutfac=4.5, radii=[0.5],
                                    switchflag=False, bzeroflag=False),
    "2J=10": dict(elements=["Ta"], twojmax=10, rcutfac=4.67637, radii=[0.5]),
}


def _structures(elements, rng, sizes=((2, 2, 2), (3, 2, 2), (1, 1, 1))):
    out = []
    for k, rep in enumerate(sizes):
        at = bulk("Ta", "bcc", a=3.25 + 0.05 * k, cubic=True).repeat(rep)
        at.set_chemical_symbols([elements[n % len(elements)] for n in range(len(at))])
        at.positions += rng.normal(scale=0.12, size=at.positions.shape)
        at.cell[1, 0] += 0.2 * k  # triclinic
        out.append(at)
    return out


def _graph(images, desc):
    from ase_mlp.neighbors import batch_neighbor_list, graph_from_neighbors

    species = [np.array([desc.elements.index(s) for s in a.get_chemical_symbols()])
               for a in images]
    nb = batch_neighbor_list([(a.positions, a.cell.array, a.pbc) for a in images],
                             desc.cutoff)
    return graph_from_neighbors(np.concatenate([a.positions for a in images]),
                                np.stack([a.cell.array for a in images]),
                                np.concatenate(species), nb.atom_system, nb.i, nb.j, nb.shifts)


def _standardized_nn(desc, images, rng):
    """An NN-SNAP standardised on the descriptors of ``images``, as training does."""
    with kernel_settings(backend="torch"):
        B = desc(_graph(images, desc)).numpy()
    ne = len(desc.elements)
    m = NNSNAP(desc, hidden=[8, 6], activations=["tanh", "sigmoid", "linear"],
               mean=np.tile(B.mean(0), (ne, 1)), std=np.tile(B.std(0) + 1e-3, (ne, 1)))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.as_tensor(rng.normal(size=p.shape) * 0.3))
    return m


def _model(kind, desc, rng):
    K = desc.n_descriptors
    ne = len(desc.elements)
    if kind == "linear":
        return LinearSNAP(desc, rng.normal(size=(ne, 1 + K)) * 0.1)
    if kind == "quadratic":
        return QuadraticSNAP(desc, rng.normal(size=(ne, 1 + K + K * (K + 1) // 2)) * 0.01)
    m = NNSNAP(desc, hidden=[8, 6], mean=rng.normal(size=(ne, K)),
               std=rng.uniform(0.5, 2.0, size=(ne, K)))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.as_tensor(rng.normal(size=p.shape) * 0.3))
    return m


def _both(calc, images):
    out = {}
    for backend in ("torch", "compiled"):
        with kernel_settings(backend=backend, threads=2):
            out[backend] = calc.calculate_batch(images, properties=("energy", "forces",
                                                                    "stress"))
    return out["torch"], out["compiled"]


def _assert_close(ref, got, rtol):
    for r, g in zip(ref, got, strict=True):
        for key in ("energy", "energies", "forces", "stress", "stresses"):
            a, b = np.asarray(r[key]), np.asarray(g[key])
            # the total energy may be a near-cancelling sum: scale by sum |E_i|
            scale = np.abs(r["energies"]).sum() if key == "energy" else np.abs(a).max()
            scale = max(scale, 1e-300)
            err = np.abs(a - b).max() / scale
            assert err <= rtol, f"{key}: relative difference {err:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("kind", ["linear", "quadratic", "nn"])
@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
def test_compiled_equals_torch_float64(name, kind):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{kind}".encode()))
    if name == "2J=10" and kind != "linear":
        pytest.skip("2J=10 is covered by the linear model (the kernel is the same)")
    desc = Bispectrum(**DESCRIPTORS[name])
    images = _structures(desc.elements, rng)
    # networks standardised on the data, as trained ones are (a random mean/std
    # saturates tanh, where 1 - tanh^2 amplifies the last-bit differences of tanh
    # between libm and torch's vectorised version)
    model = _standardized_nn(desc, images, rng) if kind == "nn" else _model(kind, desc, rng)
    calc = MLPCalculator(model, device="cpu")
    ref, got = _both(calc, images)
    _assert_close(ref, got, 1e-12)


def _max_rel(exact, got, key):
    return max(np.abs(np.asarray(a[key]) - np.asarray(b[key])).max()
               / np.abs(np.asarray(a[key])).max() for a, b in zip(exact, got, strict=True))


@pytest.mark.parametrize("kind", ["linear", "nn"])
def test_compiled_float32_as_accurate_as_torch_float32(kind):
    """In float32 the two codes round differently, so they are compared with the
    float64 result: the compiled error is no worse than torch's (both ~1e-7 in the
    energy, 1e-6-3e-5 in forces and stress, the network amplifying the rounding of B)."""
    rng = np.random.default_rng(3)
    desc = Bispectrum(**DESCRIPTORS["two elements 2J=8"])
    images = _structures(desc.elements, rng)
    model = _model(kind, desc, rng) if kind == "linear" else _standardized_nn(desc, images, rng)
    calc = MLPCalculator(model, device="cpu", dtype="float32")
    ref, got = _both(calc, images)
    with kernel_settings(backend="torch"):
        exact = MLPCalculator(model, device="cpu").calculate_batch(images)
    for key in ("energy", "forces", "stress"):
        e_torch, e_comp = _max_rel(exact, ref, key), _max_rel(exact, got, key)
        assert e_comp <= max(2.0 * e_torch, 2e-6), (key, e_comp, e_torch)
        assert e_comp < 1e-4, (key, e_comp)


def test_descriptors_equal_torch():
    rng = np.random.default_rng(5)
    desc = Bispectrum(**DESCRIPTORS["chemflag bnorm 2J=4"])
    g = _graph(_structures(desc.elements, rng), desc)
    with kernel_settings(backend="torch"):
        ref = desc(g)
    with kernel_settings(backend="compiled"):
        got = desc(g)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12 * ref.abs().max().item())


def test_unsorted_edges_and_isolated_atoms():
    """Edges in any order (the kernel sorts them by centre) and atoms without
    neighbours (only the self term) give the torch results."""
    rng = np.random.default_rng(7)
    desc = Bispectrum(**DESCRIPTORS["two elements 2J=8"])
    model = _model("linear", desc, rng)
    from ase_mlp.neighbors import graph_from_neighbors, neighbor_list
    at = _structures(desc.elements, rng)[0]
    at.positions[0] += [0.0, 0.0, 0.0]
    i, j, S = neighbor_list(at.positions, at.cell.array, at.pbc, desc.cutoff)
    perm = rng.permutation(len(i))
    species = np.array([desc.elements.index(s) for s in at.get_chemical_symbols()])
    g = graph_from_neighbors(at.positions, at.cell.array[None], species,
                             np.zeros(len(at), dtype=np.int64), i[perm], j[perm], S[perm])
    # an extra atom far away from everything (in a big open cell it has no neighbours)
    with torch.no_grad():
        with kernel_settings(backend="torch"):
            ref = model(g)
        with kernel_settings(backend="compiled"):
            got = model(g)
    for key in ("energies", "forces", "virial", "atom_virial"):
        scale = ref[key].abs().max().item()
        assert torch.allclose(got[key], ref[key], rtol=0, atol=1e-12 * scale), key
    lone = MLPCalculator(model, device="cpu")
    from ase import Atoms
    cluster = Atoms("WBe", positions=[[0, 0, 0], [30.0, 0, 0]], cell=[60, 60, 60], pbc=False)
    ref, got = _both(lone, [cluster])
    assert ref[0]["energy"] == pytest.approx(got[0]["energy"], rel=1e-14)
    assert np.abs(got[0]["forces"]).max() == 0.0


def test_threads_do_not_change_results():
    """Every output belongs to one atom: the result is bit-identical for any thread
    count (no reduction order depends on scheduling)."""
    rng = np.random.default_rng(11)
    desc = Bispectrum(**DESCRIPTORS["two elements 2J=8"])
    calc = MLPCalculator(_model("nn", desc, rng), device="cpu")
    images = _structures(desc.elements, rng, sizes=((3, 3, 3),))
    runs = []
    for threads in (1, 2, 3, 7):
        with kernel_settings(backend="compiled", threads=threads):
            runs.append(calc.calculate_batch(images)[0])
    for r in runs[1:]:
        assert r["energy"] == runs[0]["energy"]
        assert np.array_equal(r["forces"], runs[0]["forces"])
        assert np.array_equal(r["stress"], runs[0]["stress"])


def test_finite_differences_on_compiled_path():
    rng = np.random.default_rng(2)
    desc = Bispectrum(**DESCRIPTORS["switchinner rmin0 2J=5"])
    calc = MLPCalculator(SumModel(ZBL(desc.elements, 2.0, 2.6), _model("nn", desc, rng)),
                         device="cpu", backend="compiled")
    at = _structures(desc.elements, rng, sizes=((2, 2, 2),))[0]
    check_forces(at, calc, rng=rng)
    check_stress(at, calc)


def _fork_child(q):
    q.put(float(_FORK_CALC.get_potential_energy(_FORK_ATOMS.copy())))


_FORK_CALC = None
_FORK_ATOMS = None


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_after_evaluation_does_not_hang():
    """A fork Pool after a threaded evaluation: the kernels keep no thread pool, so
    the children evaluate too (this hung with the torch path's OpenMP pool)."""
    global _FORK_CALC, _FORK_ATOMS
    rng = np.random.default_rng(4)
    desc = Bispectrum(**DESCRIPTORS["plain 2J=6"])
    _FORK_CALC = MLPCalculator(_model("linear", desc, rng), device="cpu", threads=2,
                               backend="compiled")
    _FORK_ATOMS = _structures(desc.elements, rng, sizes=((4, 4, 4),))[0]
    e0 = _FORK_CALC.get_potential_energy(_FORK_ATOMS.copy())
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_fork_child, args=(q,)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert got == [pytest.approx(e0, rel=1e-14)] * 2


def test_bad_settings():
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        MLPCalculator(LinearSNAP(Bispectrum(["Ta"], 2, 4.0, [0.5])), device="cpu", threads=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        with kernel_settings(backend="fortran"):
            pass


def test_no_compiler_falls_back_or_raises(tmp_path):
    """Without a compiler: backend 'auto' warns once and uses torch (same numbers),
    backend 'compiled' raises a clear error. Run in a fresh interpreter with an empty
    cache and no compiler on PATH."""
    script = textwrap.dedent("""
        import warnings, numpy as np, pytest
        from ase.build import bulk
        from ase_mlp.calculators import MLPCalculator
        from ase_mlp.descriptors import Bispectrum
        from ase_mlp.kernels import KernelUnavailable, available
        from ase_mlp.models import LinearSNAP
        d = Bispectrum(["Ta"], 4, 4.6, [0.5])
        m = LinearSNAP(d, np.linspace(0, 1, 1 + d.n_descriptors)[None])
        at = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
        assert not available()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            e = MLPCalculator(m, device="cpu").get_potential_energy(at)
        assert any("torch implementation" in str(x.message) for x in w), w
        assert np.isfinite(e)
        try:
            MLPCalculator(m, device="cpu", backend="compiled").get_potential_energy(at)
        except KernelUnavailable as exc:
            assert "no C++ compiler" in str(exc), exc
            print("OK")
    """)
    env = dict(os.environ, CXX="ase-mlp-no-such-compiler", ASE_MLP_CACHE=str(tmp_path),
               ASE_MLP_IGNORE_INSTALLED_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_source_compiles(tmp_path):
    """The same kernel source compiles for the GPU (sm_80 cubin); the GPU run itself
    is checked by benchmarks/gpu_check.py on a machine with a GPU."""
    from ase_mlp.kernels import cuda_build

    out = cuda_build.compile_cubin(tmp_path / "sna.cubin", arch="sm_80")
    assert out.stat().st_size > 0


@pytest.mark.parametrize("name", ["plain 2J=6", "chemflag bnorm 2J=4", "switchinner rmin0 2J=5",
                                  "chemflag wselfall 2J=3"])
def test_jacobian_equals_torch(name):
    """The descriptor Jacobian of fitting (dB_ik/dr_ij per edge) by the kernels."""
    rng = np.random.default_rng(13)
    desc = Bispectrum(**DESCRIPTORS[name])
    g = _graph(_structures(desc.elements, rng), desc)
    with kernel_settings(backend="torch"):
        B0, sel0, J0 = desc.jacobian(g)
    with kernel_settings(backend="compiled", threads=2):
        B1, sel1, J1 = desc.jacobian(g)
    assert torch.equal(sel0, sel1)
    assert torch.allclose(B1, B0, rtol=0, atol=1e-12 * B0.abs().max().item())
    assert torch.allclose(J1, J0, rtol=0, atol=1e-12 * J0.abs().max().item())


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_cache_build_is_used_and_checked(tmp_path):
    """Without the install-time library the kernels are compiled into the cache on
    first use (then reused); a library built from other sources is not loaded."""
    script = textwrap.dedent("""
        import pathlib, sys
        from ase_mlp.kernels import _build
        lib = _build.library()
        built = sorted(pathlib.Path(sys.argv[1]).glob("kernels/libsna_cpu-*.so"))
        assert len(built) == 1, built
        assert lib._name == str(built[0]), (lib._name, built)
        print("OK")
    """)
    env = dict(os.environ, ASE_MLP_CACHE=str(tmp_path), ASE_MLP_IGNORE_INSTALLED_KERNELS="1")
    for _ in range(2):  # second run: found in the cache
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    from ase_mlp.kernels import _build

    stale = next(tmp_path.glob("kernels/libsna_cpu-*.so"))
    src = tmp_path / "src"
    src.mkdir()
    for name in _build.SOURCES:
        (src / name).write_text((_build.HERE / name).read_text() + "\n// changed\n")
    assert _build.source_digest(src) != _build.source_digest()
    # a library whose digest differs from the current sources is refused
    other = tmp_path / "other.so"
    subprocess.run(["g++", *_build.CXXFLAGS, _build.digest_define(src),
                    str(src / "sna_cpu.cpp"), "-o", str(other)], check=True,
                   capture_output=True, timeout=300)
    with pytest.raises(_build.KernelUnavailable, match="other kernel sources"):
        _build._load(other)
    assert _build._load(stale) is not None


def test_zbl_and_edge_vectors_equal_torch():
    """The compiled ZBL loop and edge vectors: close pairs inside ``inner``, in the
    switching region and beyond ``outer``, two elements, a batch of triclinic cells."""
    rng = np.random.default_rng(17)
    model = ZBL(["Ta", "W"], inner=1.5, outer=2.9)
    images = []
    for k in range(3):
        at = bulk("Ta", "bcc", a=2.4 + 0.2 * k, cubic=True).repeat((2, 2, 1 + k))
        at.symbols[::2] = "W"
        at.cell[2, 0] += 0.3
        at.positions += rng.normal(scale=0.25, size=at.positions.shape)
        images.append(at)
    calc = MLPCalculator(model, device="cpu")
    ref, got = _both(calc, images)
    _assert_close(ref, got, 1e-13)
    assert max(np.abs(r["forces"]).max() for r in ref) > 1.0  # the test is not vacuous
    g = _graph(images, Bispectrum(["Ta", "W"], 2, 1.5, [1.0, 1.0]))
    with kernel_settings(backend="torch"):
        v0 = g.edge_vectors()
    v1 = g.edge_vectors()
    assert torch.allclose(v0, v1, rtol=0, atol=1e-14)


def test_nn_relu_network_in_kernel():
    """The fused NN-SNAP kernel with relu and linear hidden layers equals torch."""
    rng = np.random.default_rng(23)
    desc = Bispectrum(**DESCRIPTORS["two elements 2J=8"])
    images = _structures(desc.elements, rng)
    with kernel_settings(backend="torch"):
        B = desc(_graph(images, desc)).numpy()
    m = NNSNAP(desc, hidden=[12, 5], activations=["relu", "linear", "linear"],
               mean=np.tile(B.mean(0), (2, 1)), std=np.tile(B.std(0) + 1e-3, (2, 1)))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.as_tensor(rng.normal(size=p.shape) * 0.3))
    ref, got = _both(MLPCalculator(m, device="cpu"), images)
    _assert_close(ref, got, 1e-12)
