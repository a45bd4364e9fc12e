"""``neighbor_list`` / ``batch_neighbor_list`` against ASE's neighbour list as the oracle.

Every geometry compares the *set* of ``(i, j, S)`` triples with
``ase.neighborlist.neighbor_list("ijS", ...)`` exactly.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from ase_mlp.neighbors import BatchNeighbors, batch_neighbor_list, neighbor_list
from ase_mlp.neighbors import lists as lists_module


# --------------------------------------------------------------------------- helpers


def triples(i, j, S):
    return set(
        zip(
            np.asarray(i).tolist(),
            np.asarray(j).tolist(),
            map(tuple, np.asarray(S).tolist()),
            strict=True,
        )
    )


def oracle(atoms, cutoff):
    return triples(*ase_neighbor_list("ijS", atoms, cutoff))


def random_atoms(cell, pbc, n, seed, lo=0.0, hi=1.0, extent=None):
    """n atoms at fractional coordinates in [lo, hi) along periodic directions.

    Along open directions (zero cell rows allowed) the Cartesian coordinates
    are uniform in [0, extent).
    """
    rng = np.random.default_rng(seed)
    cell = np.asarray(cell, dtype=float)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    frac = rng.uniform(lo, hi, size=(n, 3))
    frac[:, ~pbc] = 0.0
    positions = frac @ cell
    if extent is not None:
        positions[:, ~pbc] += rng.uniform(0.0, extent, size=(n, int((~pbc).sum())))
    return Atoms(positions=positions, cell=cell, pbc=pbc)


def bcc_ta(repeat=(3, 3, 3), seed=0, noise=0.1):
    atoms = bulk("Ta", "bcc", a=3.306, cubic=True).repeat(repeat)
    atoms.positions += np.random.default_rng(seed).normal(0.0, noise, atoms.positions.shape)
    return atoms


SHEARED = np.array([[4.0, 0.0, 0.0], [6.0, 4.0, 0.0], [-5.0, 3.0, 4.5]])
HEX_XY = np.array([[5.0, 0.0, 0.0], [2.5, 4.33, 0.0], [0.0, 0.0, 0.0]])


def case(name):
    """(atoms, cutoff) for each named geometry."""
    if name == "cubic-bcc":
        return bcc_ta(), 5.0
    if name == "triclinic-sheared":
        return random_atoms(SHEARED, True, 40, seed=1), 4.5
    if name == "bcc-primitive-1-atom":
        # cell much shorter than the cutoff: many images, i == j pairs only
        return bulk("Ta", "bcc", a=3.306), 3 * 3.306
    if name == "two-atom-small-cell":
        return random_atoms(0.6 * SHEARED, True, 2, seed=2), 5.0
    if name == "open-zero-cell":
        return random_atoms(np.zeros((3, 3)), False, 30, seed=3, extent=8.0), 3.5
    if name == "open-ignored-cell":
        return random_atoms(SHEARED, False, 30, seed=4, lo=-1.0, hi=2.0), 3.5
    if name == "slab-xy-zero-c":
        return random_atoms(HEX_XY, [True, True, False], 30, seed=5, extent=12.0), 4.0
    if name == "slab-xy-vacuum-c":
        cell = HEX_XY + np.array([[0, 0, 0], [0, 0, 0], [0.5, 0.2, 25.0]])
        atoms = random_atoms(cell, [True, True, False], 30, seed=6, hi=0.4)
        return atoms, 4.0
    if name == "slab-xz-triclinic":
        return random_atoms(SHEARED, [True, False, True], 30, seed=7, lo=-0.5, hi=1.5), 4.0
    if name == "wire-z":
        cell = np.zeros((3, 3))
        cell[2] = [0.4, 0.3, 3.1]  # period shorter than the cutoff
        return random_atoms(cell, [False, False, True], 12, seed=8, extent=6.0), 4.5
    if name == "wire-rotated":
        cell = np.zeros((3, 3))
        cell[0] = [2.0, 2.0, 1.0]
        return random_atoms(cell, [True, False, False], 10, seed=9, extent=5.0), 4.0
    if name == "atoms-outside-cell":
        return random_atoms(SHEARED, True, 30, seed=10, lo=-2.0, hi=3.0), 4.5
    if name == "atoms-far-outside-cell":
        atoms = bcc_ta((2, 2, 2), seed=11)
        atoms.positions[::3] += np.array([500, -300, 800]) @ atoms.cell.array
        return atoms, 5.0
    if name == "sparse-open-1e6":
        # would make vesin's cell grid degenerate (SIGFPE) without the guard
        positions = [[0, 0, 0], [1e6, 0, 0], [1e6, 1.5, 0], [0, 0, 1e6], [0.5, 1.0, 1e6]]
        return Atoms(positions=positions), 3.0
    if name == "flat-open-flake":
        positions = [[0, 0, 0], [1e3, 1e3, 0], [1e3 + 1.2, 1e3, 0], [1.0, 0.5, 0]]
        return Atoms(positions=positions), 3.0
    if name == "slab-adatom-far":
        atoms = random_atoms(HEX_XY, [True, True, False], 10, seed=12, extent=4.0)
        atoms += Atoms(positions=[[1.0, 1.0, 5e4], [1.0, 2.0, 5e4]])
        return atoms, 3.0
    if name == "wire-sparse-cross-section":
        cell = np.zeros((3, 3))
        cell[0] = [2.5, 0.0, 0.0]
        positions = [[0, 0, 0], [1e4, 1e5, 0], [1e4, 1e5, 1.0], [0.5, 1e6, 2e6]]
        return Atoms(positions=positions, cell=cell, pbc=[True, False, False]), 3.0
    raise KeyError(name)


CASES = [
    "cubic-bcc",
    "triclinic-sheared",
    "bcc-primitive-1-atom",
    "two-atom-small-cell",
    "open-zero-cell",
    "open-ignored-cell",
    "slab-xy-zero-c",
    "slab-xy-vacuum-c",
    "slab-xz-triclinic",
    "wire-z",
    "wire-rotated",
    "atoms-outside-cell",
    "atoms-far-outside-cell",
    "sparse-open-1e6",
    "flat-open-flake",
    "slab-adatom-far",
    "wire-sparse-cross-section",
]


def run(atoms, cutoff, **kwargs):
    return neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, **kwargs)


# --------------------------------------------------------------------------- single systems


@pytest.mark.parametrize("name", CASES)
def test_matches_ase(name):
    atoms, cutoff = case(name)
    i, j, S = run(atoms, cutoff)
    expected = oracle(atoms, cutoff)
    assert triples(i, j, S) == expected
    assert len(i) == len(expected)  # no duplicates


@pytest.mark.parametrize(
    "name", ["triclinic-sheared", "slab-xz-triclinic", "wire-z", "open-zero-cell"]
)
def test_matches_ase_with_matscipy_backend(name, monkeypatch):
    """The fallback used with vesin < 0.5.8 gives the same lists."""
    monkeypatch.setattr(lists_module, "_BACKEND", "matscipy")
    atoms, cutoff = case(name)
    assert triples(*run(atoms, cutoff)) == oracle(atoms, cutoff)


@pytest.mark.parametrize("name", CASES)
def test_output_contract(name):
    atoms, cutoff = case(name)
    i, j, S = run(atoms, cutoff)
    assert i.dtype == j.dtype == S.dtype == np.int64
    assert i.shape == j.shape == (len(i),) and S.shape == (len(i), 3)
    # sorted by i, then j, then S
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    np.testing.assert_array_equal(order, np.arange(len(i)))
    # no self pair without shift, all within the cutoff, no shift along open directions
    assert not ((i == j) & ~S.any(axis=1)).any()
    r = atoms.positions[j] - atoms.positions[i] + S @ atoms.cell.array
    assert (np.linalg.norm(r, axis=1) < cutoff).all()
    assert not S[:, ~atoms.pbc].any()
    # full list: every (i, j, S) comes with (j, i, -S)
    assert triples(i, j, S) == triples(j, i, -S)


def test_self_images_in_small_cell():
    atoms, cutoff = case("bcc-primitive-1-atom")
    i, j, S = run(atoms, cutoff)
    assert (i == 0).all() and (j == 0).all()
    assert len(i) > 100 and S.any(axis=1).all()


def test_accepts_atoms_outside_cell_like_wrapped():
    atoms, cutoff = case("atoms-outside-cell")
    wrapped = atoms.copy()
    wrapped.wrap()
    # same pairs; shifts differ by the lattice vectors the atoms were moved by
    k = np.rint((atoms.positions - wrapped.positions) @ np.linalg.inv(atoms.cell.array))
    k = k.astype(np.int64)
    i, j, S = run(atoms, cutoff)
    wi, wj, wS = run(wrapped, cutoff)
    assert triples(i, j, S + k[j] - k[i]) == triples(wi, wj, wS)


def test_empty_and_single_atom():
    for n in (0, 1):
        i, j, S = neighbor_list(np.zeros((n, 3)), None, False, 3.0)
        assert i.shape == (0,) and j.shape == (0,) and S.shape == (0, 3)
        assert i.dtype == S.dtype == np.int64


# --------------------------------------------------------------------------- pair cutoffs

RADII = np.array([1.5, 2.2])
RCUTFAC = 1.1
PAIR_CUTOFFS = RCUTFAC * (RADII[:, None] + RADII[None, :])


@pytest.mark.parametrize(
    "name", ["cubic-bcc", "triclinic-sheared", "slab-xy-zero-c", "open-zero-cell"]
)
def test_pair_cutoffs(name):
    atoms, _ = case(name)
    species = np.random.default_rng(20).integers(0, 2, len(atoms))
    i, j, S = run(atoms, None, species=species, pair_cutoffs=PAIR_CUTOFFS)
    ri, rj, rS, rd = ase_neighbor_list("ijSd", atoms, PAIR_CUTOFFS.max())
    keep = rd < PAIR_CUTOFFS[species[ri], species[rj]]
    assert triples(i, j, S) == triples(ri[keep], rj[keep], rS[keep])
    # both species pairs really differ, so the filter is exercised
    assert keep.sum() < len(keep)


def test_pair_cutoffs_capped_by_cutoff():
    atoms, _ = case("cubic-bcc")
    species = np.random.default_rng(21).integers(0, 2, len(atoms))
    cutoff = 3.5
    i, j, S = run(atoms, cutoff, species=species, pair_cutoffs=PAIR_CUTOFFS)
    ri, rj, rS, rd = ase_neighbor_list("ijSd", atoms, cutoff)
    keep = rd < np.minimum(PAIR_CUTOFFS, cutoff)[species[ri], species[rj]]
    assert triples(i, j, S) == triples(ri[keep], rj[keep], rS[keep])


# --------------------------------------------------------------------------- batches


def batch_systems():
    cubic, _ = case("cubic-bcc")
    slab, _ = case("slab-xy-zero-c")
    prim, _ = case("bcc-primitive-1-atom")
    cluster, _ = case("open-zero-cell")
    lonely = Atoms("H", positions=[[0.0, 0.0, 0.0]])  # 1 atom, 0 edges
    empty = Atoms()  # 0 atoms
    return [cubic, lonely, slab, prim, empty, cluster]


@pytest.mark.parametrize("as_tuples", [False, True], ids=["ase-atoms", "tuples"])
def test_batch_equals_concatenated_single_calls(as_tuples):
    systems = batch_systems()
    inputs = [(a.positions, a.cell.array, a.pbc) for a in systems] if as_tuples else systems
    cutoff = 4.2
    nb = batch_neighbor_list(inputs, cutoff)
    assert isinstance(nb, BatchNeighbors)
    sizes = [len(a) for a in systems]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    singles = [run(a, cutoff) for a in systems]
    np.testing.assert_array_equal(nb.offsets, offsets)
    np.testing.assert_array_equal(
        nb.i, np.concatenate([s[0] + o for s, o in zip(singles, offsets[:-1], strict=True)])
    )
    np.testing.assert_array_equal(
        nb.j, np.concatenate([s[1] + o for s, o in zip(singles, offsets[:-1], strict=True)])
    )
    np.testing.assert_array_equal(nb.shifts, np.concatenate([s[2] for s in singles]))
    np.testing.assert_array_equal(
        nb.edge_system, np.repeat(np.arange(len(systems)), [len(s[0]) for s in singles])
    )
    np.testing.assert_array_equal(nb.atom_system, np.repeat(np.arange(len(systems)), sizes))
    for arr in (nb.i, nb.j, nb.shifts, nb.edge_system, nb.atom_system, nb.offsets):
        assert arr.dtype == np.int64
    assert (nb.atom_system[nb.i] == nb.edge_system).all()
    assert (nb.atom_system[nb.j] == nb.edge_system).all()
    assert nb.n_systems == len(systems) and nb.n_atoms == sum(sizes) and nb.n_edges == len(nb.i)
    assert not (nb.edge_system == 1).any()  # the lonely atom has no neighbours


def test_batch_with_pair_cutoffs():
    systems = batch_systems()
    rng = np.random.default_rng(22)
    species = [rng.integers(0, 2, len(a)) for a in systems]
    nb = batch_neighbor_list(systems, None, species=species, pair_cutoffs=PAIR_CUTOFFS)
    offsets = nb.offsets
    expected = set()
    for k, (atoms, sp) in enumerate(zip(systems, species, strict=True)):
        i, j, S = run(atoms, None, species=sp, pair_cutoffs=PAIR_CUTOFFS)
        expected |= triples(i + offsets[k], j + offsets[k], S)
    assert triples(nb.i, nb.j, nb.shifts) == expected


def test_batch_empty():
    nb = batch_neighbor_list([], 3.0)
    assert nb.n_systems == 0 and nb.n_edges == 0
    np.testing.assert_array_equal(nb.offsets, [0])


# --------------------------------------------------------------------------- vesin grid guard


def test_vesin_grid_guard_predicts_degenerate_grid():
    # 1e6 Å by 1 Å by 1 Å at 3 Å: vesin's rescaling would make a grid dimension 0
    assert not lists_module._vesin_grid_ok(np.array([1.01e6, 1.0, 1.0]), 3.0)
    assert not lists_module._vesin_grid_ok(np.array([1.01e3, 1.01e3, 1.0]), 3.0)
    assert lists_module._vesin_grid_ok(np.array([50.0, 50.0, 50.0]), 3.0)
    assert lists_module._vesin_grid_ok(np.array([1e6, 1e6, 1e6]), 3.0)


# --------------------------------------------------------------------------- validation


def cubic_inputs():
    atoms, _ = case("cubic-bcc")
    return atoms.positions.copy(), atoms.cell.array.copy()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_rejects_non_finite_positions(bad):
    positions, cell = cubic_inputs()
    positions[7, 1] = bad
    with pytest.raises(ValueError, match=r"atom 7 is not finite"):
        neighbor_list(positions, cell, True, 4.0)


@pytest.mark.parametrize(
    "cell, pbc, match",
    [
        (np.diag([3.0, 3.0, 0.0]), True, r"zero volume: cell vector 2 .*zero length"),
        (np.diag([0.0, 3.0, 3.0]), [True, False, False], r"zero volume: cell vector 0"),
        (
            np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]]),
            True,
            r"zero volume: .*linearly dependent",
        ),
        (
            np.array([[3.0, 1.0, 0], [0, 0, 3.0], [6.0, 2.0, 0]]),
            [True, False, True],
            r"zero volume: .*\[0, 2\] are linearly dependent",
        ),
    ],
    ids=["zero-vector", "zero-vector-wire", "dependent-3d", "parallel-slab"],
)
def test_rejects_zero_volume_periodic_cell(cell, pbc, match):
    positions, _ = cubic_inputs()
    with pytest.raises(ValueError, match=match):
        neighbor_list(positions, cell, pbc, 4.0)


def test_zero_rows_allowed_along_open_directions():
    positions, _ = cubic_inputs()
    i, _, _ = neighbor_list(positions, np.diag([3.0, 3.0, 0.0]), [True, True, False], 4.0)
    assert len(i) > 0


@pytest.mark.parametrize("cutoff", [0.0, -1.0, np.nan, np.inf, "abc"], ids=str)
def test_rejects_bad_cutoff(cutoff):
    positions, cell = cubic_inputs()
    with pytest.raises(ValueError, match="cutoff must be a positive finite number"):
        neighbor_list(positions, cell, True, cutoff)


def test_rejects_missing_cutoff():
    positions, cell = cubic_inputs()
    with pytest.raises(ValueError, match="cutoff is required"):
        neighbor_list(positions, cell, True, None)


@pytest.mark.parametrize(
    "species, pair_cutoffs, match",
    [
        ("too-short", np.full((1, 1), 3.0), "one entry per atom"),
        ("zeros", np.full((2, 3), 3.0), "square"),
        ("zeros", np.array([[3.0, 3.5], [3.2, 4.0]]), "symmetric"),
        ("zeros", np.array([[3.0, -1.0], [-1.0, 4.0]]), "non-negative"),
        (None, np.full((2, 2), 3.0), "needs species"),
        ("twos", np.full((2, 2), 3.0), r"\[0, 2\)"),
    ],
    ids=["species-length", "not-square", "not-symmetric", "negative", "no-species", "out-of-range"],
)
def test_rejects_bad_species_or_pair_cutoffs(species, pair_cutoffs, match):
    positions, cell = cubic_inputs()
    n = len(positions)
    species = {
        None: None,
        "too-short": np.zeros(n - 1, int),
        "zeros": np.zeros(n, int),
        "twos": np.full(n, 2),
    }[species]
    with pytest.raises(ValueError, match=match):
        neighbor_list(positions, cell, True, None, species=species, pair_cutoffs=pair_cutoffs)


def test_rejects_bad_positions_shape():
    with pytest.raises(ValueError, match=r"shape \(n_atoms, 3\)"):
        neighbor_list(np.zeros((4, 2)), None, False, 3.0)


def test_batch_errors_name_the_system():
    good, bad = case("cubic-bcc")[0], case("open-zero-cell")[0]
    bad.positions[2] = np.nan
    with pytest.raises(ValueError, match=r"system 1: .*atom 2"):
        batch_neighbor_list([good, bad], 3.0)
    with pytest.raises(ValueError, match="one array per system"):
        batch_neighbor_list(
            [good, good], None, species=[np.zeros(len(good), int)], pair_cutoffs=PAIR_CUTOFFS
        )
    with pytest.raises(ValueError, match=r"ase.Atoms or a \(positions, cell, pbc\)"):
        batch_neighbor_list([good, 3], 3.0)
