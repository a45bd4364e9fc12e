"""Bispectrum: analytic limits, LAMMPS reference values, invariances, precision."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from ase_mlp.descriptors import Bispectrum, n_bispectrum
from ase_mlp.neighbors import graph_from_neighbors, neighbor_list


def graph(atoms, descriptor, dtype=torch.float64):
    species = np.array([descriptor.elements.index(s) for s in atoms.get_chemical_symbols()])
    i, j, S = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, None,
                            species=species, pair_cutoffs=descriptor.pair_cutoffs())
    return graph_from_neighbors(atoms.positions, atoms.cell.array[None], species,
                                np.zeros(len(atoms), dtype=np.int64), i, j, S, dtype=dtype)


def B(atoms, descriptor, dtype=torch.float64):
    with torch.no_grad():
        return descriptor(graph(atoms, descriptor, dtype)).numpy()


@pytest.mark.parametrize("twojmax,K", [(0, 1), (1, 2), (2, 5), (4, 14), (6, 30), (8, 55), (3, 8),
                                       (5, 20)])
def test_component_count(twojmax, K):
    # K = m(m+1)(2m+1)/6 (even twojmax = 2(m-1)), m(m+1)(m+2)/3 (odd twojmax = 2m-1)
    assert n_bispectrum(twojmax) == K


def test_isolated_atom_and_b000():
    d = Bispectrum(["Cu"], 2, 1.0, [2.0], [1.0], bzeroflag=False)
    np.testing.assert_allclose(B(Atoms("Cu"), d)[0], [1, 2, 3, 3, 3], atol=1e-14)
    d0 = Bispectrum(["Cu"], 2, 1.0, [2.0], [1.0], bzeroflag=True)
    np.testing.assert_allclose(B(Atoms("Cu"), d0)[0], 0.0, atol=1e-14)
    # B_000 = (1 + sum_j f_c(r_j) w_j)^3
    atoms = Atoms("Cu3", positions=[[0, 0, 0], [2.0, 0, 0], [0, 1.5, 0]])
    fc = [0.5 * (np.cos(np.pi * r / 4.0) + 1) for r in (2.0, 1.5)]
    assert B(atoms, d)[0, 0] == pytest.approx((1 + sum(fc)) ** 3, rel=1e-13)


# methods.md S1: rcutfac 1, R 2, rfac0 0.99363, w 1, bzeroflag 0
S1 = {
    "dimer": ([[0, 0, 0], [2, 0, 0]], True, 2,
              [3.375, 3.7800174169, 2.6703264738, 4.1256006969, 1.1259010453]),
    "trimer": ([[0, 0, 0], [2, 0, 0], [0, 1.5, 0]], True, 2,
               [10.5227758447, 9.9896947563, 5.2696357172, 6.4640251688, 0.9479825728]),
    "trimer_noswitch": ([[0, 0, 0], [2, 0, 0], [0, 1.5, 0]], False, 2,
                        [27, 22.8421194274, 8.2940127015, 12.6457923137, -1.176374392]),
    "trimer_2j4": ([[0, 0, 0], [2, 0, 0], [0, 1.5, 0]], True, 4,
                   [10.5227758447, 9.9896947563, 5.2696357172, 6.4640251688, 3.8377921773,
                    0.9479825728, 2.8469413794, 11.7464240667, 8.8563896485, 1.8070025377,
                    4.4836366091, 21.2639576848, 5.06418303, 9.521904813]),
}


@pytest.mark.parametrize("case", sorted(S1))
def test_reference_values_s1(case):
    pos, switch, twojmax, ref = S1[case]
    d = Bispectrum(["Cu"], twojmax, 1.0, [2.0], [1.0], bzeroflag=False, switchflag=switch)
    atoms = Atoms(f"Cu{len(pos)}", positions=pos)
    np.testing.assert_allclose(B(atoms, d)[0], ref, rtol=2e-10, atol=1e-9)


def test_reference_fcc_cu_s2():
    ref = np.array([
        630.84909938, 4.8197599303, -0.070335799847, 0.17912915263, 0.13730582579,
        -0.0017427136633, 0.079220345481, 20.663457773, -4.6812401767, -0.20103087444,
        -0.29633445510, 6.8538519815, 1.3360066026, 243.04141981, -5.9920055119,
        -2.0248655267, -0.24083983401, 7.2933417910, 62.502808699, 17.937002250,
        36.882065305, 0.14668308511, -0.28155468448, 2.0767531694, 7.5959937767,
        1.9216303456, 469.59291142, 2.7253009048, 47.490776031, 5.3294779386])
    cu = bulk("Cu", "fcc", a=3.621262, cubic=True)
    d = Bispectrum(["Cu"], 6, 5.0, [0.5], [1.0], bzeroflag=False)
    b = B(cu, d)
    assert np.ptp(b, axis=0).max() < 1e-10  # every atom equivalent
    np.testing.assert_allclose(b[0], ref, rtol=1e-9, atol=1e-9)


def test_rotation_and_permutation_invariance(rng):
    atoms = bulk("W", "bcc", a=3.2, cubic=True).repeat(2)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.set_chemical_symbols(["W", "Be"] * 8)
    d = Bispectrum(["W", "Be"], 6, 4.8, [0.5, 0.42], [1.0, 0.96], chemflag=True, bnormflag=True)
    b0 = B(atoms, d)
    R = Rotation.random(random_state=3).as_matrix()
    rot = atoms.copy()
    rot.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
    rot.positions = atoms.positions @ R.T
    np.testing.assert_allclose(B(rot, d), b0, rtol=1e-10, atol=1e-10)
    perm = rng.permutation(len(atoms))
    np.testing.assert_allclose(B(atoms[perm], d), b0[perm], rtol=1e-12, atol=1e-12)


def test_float32_close_to_float64(rng):
    atoms = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    d = Bispectrum(["Ta"], 6, 4.67637, [0.5], [1.0], bzeroflag=False)
    b64 = B(atoms, d)
    b32 = B(atoms, d.to(torch.float32), dtype=torch.float32)
    assert b32.dtype == np.float32
    # float32 keeps ~7 digits of the largest components
    np.testing.assert_allclose(b32, b64, rtol=0, atol=2e-5 * np.abs(b64).max())


def test_bad_parameters():
    with pytest.raises(ValueError, match="unknown chemical element"):
        Bispectrum(["Xx"], 6, 4.0, [0.5])
    with pytest.raises(ValueError, match="radii"):
        Bispectrum(["Ta", "W"], 6, 4.0, [0.5])
    with pytest.raises(ValueError, match="twojmax"):
        Bispectrum(["Ta"], -2, 4.0, [0.5])
    with pytest.raises(ValueError, match="switchinnerflag"):
        Bispectrum(["Ta"], 6, 4.0, [0.5], sinner=[1.0], dinner=[0.5])
    with pytest.raises(ValueError, match="sinner"):
        Bispectrum(["Ta"], 6, 4.0, [0.5], switchinnerflag=True)


JACOBIAN_CASES = [
    dict(elements=["Ta"], twojmax=6, rcutfac=4.67637, radii=[0.5]),
    dict(elements=["Ga", "N"], twojmax=3, rcutfac=1.0, radii=[2.0, 1.8], weights=[1.0, 0.7],
         chemflag=True),
    dict(elements=["Ga", "N"], twojmax=4, rcutfac=1.0, radii=[2.0, 1.8], weights=[1.0, 0.7],
         switchinnerflag=True, sinner=[1.2, 1.0], dinner=[0.6, 0.5], bzeroflag=False),
]


@pytest.mark.parametrize("case", range(len(JACOBIAN_CASES)))
def test_jacobian_finite_differences(case, rng):
    """dB_i/dr_ij from ``jacobian`` equals central differences of B along each edge."""
    kw = JACOBIAN_CASES[case]
    d = Bispectrum(**kw)
    if kw["elements"] == ["Ta"]:
        atoms = bulk("Ta", "bcc", a=3.3, cubic=True)
    else:
        atoms = bulk("GaN", "rocksalt", a=4.2, cubic=True)
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    g = graph(atoms, d)
    Bj, sel, J = d.jacobian(g)
    np.testing.assert_allclose(Bj.numpy(), B(atoms, d), rtol=0, atol=1e-12)
    # moving atom m by h changes every B_i through all edges ending or starting at m:
    # dB_i/dx_m = sum_{e=(i,m)} J_e - [i == m] sum_{e=(m,j)} J_e
    ei, ej = (g.edge_index[:, sel]).numpy()
    Jn = J.numpy()
    h = 1e-5
    for m in (0, 1):
        for d_ in range(3):
            ana = np.zeros(Bj.shape)
            np.add.at(ana, ei[ej == m], Jn[ej == m][:, :, d_])
            ana[m] -= Jn[ei == m][:, :, d_].sum(0)
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[m, d_] += h
            minus.positions[m, d_] -= h
            fd = (B(plus, d) - B(minus, d)) / (2 * h)
            np.testing.assert_allclose(ana, fd, rtol=0, atol=2e-6 * max(1.0, np.abs(fd).max()))


def test_jacobian_contracts_to_adjoint_gradient(rng):
    """sum_k beta_ik J_e,k reproduces the adjoint edge gradient of evaluate() to rounding."""
    d = Bispectrum(elements=["Ga", "N"], twojmax=5, rcutfac=1.0, radii=[2.0, 1.8],
                   weights=[1.0, 0.7])
    atoms = bulk("GaN", "wurtzite", a=3.19, c=5.19).repeat((2, 2, 1))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    g = graph(atoms, d)
    v = g.edge_vectors()
    beta = torch.as_tensor(rng.normal(size=(len(atoms), d.n_descriptors)))
    start = [0]

    def fn(Bc, species):
        n = Bc.shape[0]
        b = beta[start[0]:start[0] + n]
        start[0] += n
        return (Bc * b).sum(1), b

    _, grad = d.evaluate(g, v, fn, True, atom_chunk=5)
    _, sel, J = d.jacobian(g, v)
    mine = torch.einsum("ek,ekd->ed", beta[g.edge_index[0, sel]], J)
    np.testing.assert_allclose(mine.numpy(), grad[sel].numpy(), rtol=0,
                               atol=1e-11 * float(grad.abs().max()))
