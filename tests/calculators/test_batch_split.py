"""``MLPCalculator.calculate_batch`` splits large batches into model calls of at most
``max_batch_atoms`` atoms.

Oracle: the same batch in one model call (``max_batch_atoms=None``, the behaviour before
the split). Every structure's neighbour list and edge order are the same in a chunk as
in the whole batch and structures do not interact, so only the rounding can differ (the
compiled kernels' thread partition and BLAS blocking depend on the call's size).
Measured: SNAP + ZBL bit-identical, DeePot-SE 2.4e-16 relative; checked to 1e-12. The
chunks are recorded by wrapping the calculator's model call: consecutive whole
structures, at most ``max_batch_atoms`` atoms unless one structure is larger (then alone).
"""

import pathlib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ase_mlp import testing
from ase_mlp.calculators import MLPCalculator
from ase_mlp.calculators.mlp import MAX_BATCH_ATOMS
from ase_mlp.descriptors import Bispectrum
from ase_mlp.models import ZBL, LinearSNAP, SumModel


TOL = 1e-12
PROPS = ("energy", "forces", "stress", "energies", "stresses")


def _model(rng):
    d = Bispectrum(["W", "Be"], 4, 4.8, [0.5, 0.42], [1.0, 0.96])
    return SumModel(ZBL(["W", "Be"], 1.5, 2.3),
                    LinearSNAP(d, rng.normal(size=(2, 1 + d.n_descriptors)) * 0.02))


def _wbe(rng, reps=(2, 2, 2)):
    atoms = bulk("W", "bcc", a=3.17, cubic=True).repeat(reps)
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.08, 0], [0, 1, 0.05], [0.04, 0, 1]]),
                   scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.set_chemical_symbols(["W", "Be"] * (len(atoms) // 2))
    return atoms


def _images(rng):
    """14 random structures of 1-30 atoms, a 16- and a 54-atom crystal, an open cluster."""
    images = testing.random_structures(["W", "Be"], 14, rng=rng, sizes=(1, 30),
                                       density=0.04, min_distance=1.9)
    images[5:5] = [_wbe(rng), _wbe(rng, (3, 3, 3))]
    cluster = _wbe(rng)[:10]
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    images.append(cluster)
    return images


def _spy(calc, monkeypatch):
    """Record the structure sizes of every model call of ``calc``."""
    calls = []
    evaluate = calc._evaluate

    def spy(graph, images, *args, **kwargs):
        sizes = [len(a) for a in images]
        assert graph.n_systems == len(sizes) and graph.n_atoms == sum(sizes)
        calls.append(sizes)
        return evaluate(graph, images, *args, **kwargs)

    monkeypatch.setattr(calc, "_evaluate", spy)
    return calls


def _assert_same(got, ref):
    assert len(got) == len(ref)
    worst = 0.0
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert g.keys() == r.keys(), k
        for key in r:
            if key == "error":
                assert g[key] == r[key]
                continue
            a, b = np.asarray(g[key]), np.asarray(r[key])
            err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
            assert err <= TOL, f"structure {k} {key}: relative difference {err:.2e}"
            worst = max(worst, err)
    return worst


def _check_chunks(calls, sizes, limit):
    assert [s for call in calls for s in call] == sizes        # whole, in order, once each
    for call in calls:
        assert sum(call) <= limit or len(call) == 1, call
    for a, b in zip(calls[:-1], calls[1:], strict=True):        # greedy: no room left
        assert sum(a) + b[0] > limit


def test_default_and_bad_values(rng):
    model = _model(rng)
    assert MLPCalculator(model, device="cpu").max_batch_atoms == MAX_BATCH_ATOMS == 2048
    assert MLPCalculator(model, device="cpu", max_batch_atoms=None).max_batch_atoms is None
    for bad in (0, -3, 2.5, "100", True):
        with pytest.raises(ValueError, match="max_batch_atoms must be a positive integer"):
            MLPCalculator(model, device="cpu", max_batch_atoms=bad)


def test_chunks_equal_one_call(rng, monkeypatch):
    model = _model(rng)
    images = _images(rng)
    sizes = [len(a) for a in images]
    whole = MLPCalculator(model, device="cpu", max_batch_atoms=None)
    whole_calls = _spy(whole, monkeypatch)
    ref = whole.calculate_batch(images, PROPS)
    assert whole_calls == [sizes]
    for limit in (40, 16, 1):
        calc = MLPCalculator(model, device="cpu", max_batch_atoms=limit)
        calls = _spy(calc, monkeypatch)
        _assert_same(calc.calculate_batch(images, PROPS), ref)
        _check_chunks(calls, sizes, limit)
        assert [54] in calls                      # larger than every limit: alone
    assert "stress" not in ref[-1] and "stress" in ref[0]   # the cluster has no stress


def test_errors_across_chunks(rng, monkeypatch):
    """Failing structures in later chunks: ``skip`` gives the one-call results and
    messages; ``raise`` names the same structure as one call does."""
    model = _model(rng)
    images = _images(rng)
    images[3] = Atoms("Cu", cell=[5, 5, 5], pbc=True)                    # unknown element
    close = images[12].copy()
    close.positions[1] = close.positions[0] + [0.05, 0.0, 0.0]           # overlapping atoms
    images[12] = close
    whole = MLPCalculator(model, device="cpu", max_batch_atoms=None)
    calc = MLPCalculator(model, device="cpu", max_batch_atoms=30)
    calls = _spy(calc, monkeypatch)
    ref = whole.calculate_batch(images, PROPS, errors="skip")
    got = calc.calculate_batch(images, PROPS, errors="skip")
    _assert_same(got, ref)
    n = len(images)
    assert got[3]["error"].startswith(f"structure 3 of {n}: element 'Cu'")
    assert got[12]["error"].startswith(f"structure 12 of {n}: atoms 0 and 1 are 0.05 Å apart")
    evaluated = [s for call in calls for s in call]
    assert len(evaluated) == n - 2 and len(calls) > 3
    for kind in ("unknown element", "overlap"):
        imgs = list(images)
        if kind == "overlap":
            imgs[3] = images[2]
        with pytest.raises(ValueError) as one:
            whole.calculate_batch(imgs, PROPS)
        with pytest.raises(ValueError) as chunked:
            calc.calculate_batch(imgs, PROPS)
        assert str(chunked.value) == str(one.value)
        assert str(one.value).startswith(f"structure {3 if kind != 'overlap' else 12} of {n}")


DATA = pathlib.Path("/work/shared/data/water-deepmd/data_0")


def test_deepmd_water_chunks_equal_one_call(tmp_path, monkeypatch):
    """Three 192-atom water frames through a DeePot-SE: two then one per call, one per
    call (a limit below a frame's size) and all in one call agree."""
    pytest.importorskip("deepmd.dpmodel")
    pytest.importorskip("h5py")
    if not DATA.is_dir():
        pytest.skip(f"no water data at {DATA}")
    path = testing.make_deepmd_se(tmp_path / "water.dp", seed=3)
    coord = np.load(DATA / "set.000/coord.npy")
    box = np.load(DATA / "set.000/box.npy")
    types = np.loadtxt(DATA / "type.raw", dtype=int)
    tmap = (DATA / "type_map.raw").read_text().split()
    images = [Atoms([tmap[t] for t in types], positions=coord[k].reshape(-1, 3),
                    cell=box[k].reshape(3, 3), pbc=True) for k in (0, 7, 14)]
    ref = MLPCalculator.from_file(path, device="cpu",
                                  max_batch_atoms=None).calculate_batch(images, PROPS)
    for limit, expect in ((400, [[192, 192], [192]]), (100, [[192]] * 3)):
        calc = MLPCalculator.from_file(path, device="cpu", max_batch_atoms=limit)
        calls = _spy(calc, monkeypatch)
        _assert_same(calc.calculate_batch(images, PROPS), ref)
        assert calls == expect
