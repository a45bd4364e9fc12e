"""QUIP SOAP in torch vs quippy's ``Descriptor`` (the QUIP/GAP Fortran itself).

Tolerances: descriptors are compared to 1e-10 relative to the largest element (measured
~1e-15; the only loss is float64 rounding in different summation orders) and elementwise
to 1e-10 relative for elements above 1e-6 of the largest (measured <= 4e-12);
gradients to 1e-9 relative to the largest gradient element (measured ~1e-14). The
modified spherical Bessel functions (times the Gaussian factor) are checked against scipy to
1e-12 relative per value (measured 1.5e-13, l <= 12, 0 <= x <= 480).
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from ase_mlp.descriptors.soap_quip import QuipSoap, SoapStringError


quippy_desc = pytest.importorskip("quippy.descriptors")

DESC_RTOL = 1e-10
GRAD_RTOL = 1e-9


def edges(atoms, cutoff, pos):
    """Full neighbour list (a bit beyond the cutoff: the module must select)."""
    i, j, S = neighbor_list("ijS", atoms, cutoff + 0.5)
    cell = torch.tensor(atoms.cell.array)
    vec = pos[j] - pos[i] + torch.tensor(S, dtype=torch.float64) @ cell
    return torch.tensor(i), torch.tensor(j), vec


def ours(atoms, soap, jacobian=False):
    pos = torch.tensor(atoms.positions)
    Z = torch.tensor(atoms.numbers)

    def f(p):
        i, j, vec = edges(atoms, soap.cutoff, p)
        return soap(Z, i, j, vec)[0]

    with torch.no_grad():
        i, j, vec = edges(atoms, soap.cutoff, pos)
        desc, centres = soap(Z, i, j, vec)
    if not jacobian:
        return desc.numpy(), centres.numpy()
    jac = torch.autograd.functional.jacobian(f, pos, vectorize=True,
                                         strategy="forward-mode")
    return desc.numpy(), centres.numpy(), jac.numpy()      # (nc, D, N, 3)


def quip(atoms, text, grad=False, args_str=None):
    res = quippy_desc.Descriptor(text).calc(atoms, grad=grad, args_str=args_str)
    if not grad:
        return res["data"], res["ci"]
    D = res["data"]
    jac = np.zeros((D.shape[0], D.shape[1], len(atoms), 3))
    idx = res["grad_index_0based"]
    row = np.full(len(atoms), -1)
    row[np.asarray(res["ci"]).ravel() - 1] = np.arange(D.shape[0])
    # grad_data[g, x, k] = d data[row of centre atom idx[g, 0], k] / d pos[idx[g, 1], x];
    # periodic images of one atom come as separate rows
    np.add.at(jac, (row[idx[:, 0]], slice(None), idx[:, 1]),
              res["grad_data"].transpose(0, 2, 1))
    return D, res["ci"], jac


def rattled(atoms, seed, amp=0.1):
    atoms = atoms.copy()
    atoms.rattle(amp, seed=seed)
    return atoms


def triclinic():
    rng = np.random.default_rng(3)
    cell = np.array([[3.1, 0.0, 0.0], [0.9, 2.9, 0.0], [-0.7, 0.6, 3.3]])
    frac = rng.random((4, 3))
    return Atoms("Si2O2", scaled_positions=frac, cell=cell, pbc=True)


CASES = {
    "fcc_Cu": (lambda: rattled(bulk("Cu", "fcc", 3.6) * (2, 2, 2), 1),
               "soap cutoff=4.0 n_max=6 l_max=4 atom_sigma=0.5"),
    "bcc_Fe_options": (lambda: rattled(bulk("Fe", "bcc", 2.87, cubic=True) * (2, 2, 2), 2),
                       "soap cutoff=4.5 cutoff_transition_width=1.2 n_max=5 l_max=6 "
                       "atom_sigma=0.4 central_weight=0.7 covariance_sigma0=0.3"),
    "NaCl_two_species": (lambda: rattled(bulk("NaCl", "rocksalt", 5.64), 4, 0.15) * (2, 1, 1),
                         "soap cutoff=5.0 n_max=4 l_max=4 atom_sigma=0.5 n_species=2 "
                         "species_Z={11 17} Z=17 delta=1.0 zeta=4 n_sparse=20 "
                         "covariance_type=dot_product sparse_method=cur_points"),
    "triclinic_SiO": (triclinic, "soap cutoff=4.5 n_max=4 l_max=3 atom_sigma=0.6 "
                      "n_species=2 species_Z={8 14} central_reference_all_species=T"),
    "molecule_vacuum": (lambda: molecule("CH3CH2OH"),
                        "soap cutoff=3.5 n_max=5 l_max=8 atom_sigma=0.5 n_species=3 "
                        "species_Z={1 6 8} normalise=F"),
    "diagonal_dexp": (lambda: rattled(bulk("Al", "fcc", 4.05) * (2, 1, 1), 5),
                      "soap cutoff=5.0 n_max=4 l_max=3 atom_sigma=0.5 diagonal_radial=T "
                      "cutoff_dexp=2 cutoff_scale=2.5 cutoff_rate=0.5"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_descriptor_and_gradient_match_quippy(name):
    make, text = CASES[name]
    atoms = make()
    soap = QuipSoap.from_quip_string(text)
    d, c, jac = ours(atoms, soap, jacobian=True)
    D, ci, J = quip(atoms, text, grad=True)
    assert d.shape == D.shape and d.shape[1] == soap.dimension
    np.testing.assert_array_equal(c, np.asarray(ci).ravel() - 1)
    np.testing.assert_allclose(d, D, rtol=0, atol=DESC_RTOL * np.abs(D).max())
    # elementwise too, for elements not dominated by cancellation (measured <= 4e-12)
    big = np.abs(D) > 1e-6 * np.abs(D).max()
    np.testing.assert_allclose(d[big], D[big], rtol=DESC_RTOL)
    np.testing.assert_allclose(jac, J, rtol=0, atol=GRAD_RTOL * np.abs(J).max())


def test_centre_selection_and_all_species():
    atoms = rattled(bulk("NaCl", "rocksalt", 5.64) * (1, 1, 2), 7)
    for Z in ("Z=11", "n_Z=2 Z={11 17}", ""):
        text = f"soap cutoff=4.0 n_max=3 l_max=2 atom_sigma=0.5 n_species=2 species_Z={{11 17}} {Z}"
        d, c = ours(atoms, QuipSoap.from_quip_string(text))
        D, ci = quip(atoms, text)
        np.testing.assert_allclose(d, D, rtol=0, atol=DESC_RTOL * np.abs(D).max())
        expect = np.nonzero(atoms.numbers == 11)[0] if Z == "Z=11" else np.arange(len(atoms))
        np.testing.assert_array_equal(c, expect)
    # neighbours whose species is not in species_Z are ignored (here: Cl around everyone)
    text = "soap cutoff=4.0 n_max=3 l_max=2 atom_sigma=0.5 n_species=1 species_Z=11"
    d, c = ours(atoms, QuipSoap.from_quip_string(text))
    D, _ = quip(atoms, text)
    np.testing.assert_allclose(d, D, rtol=0, atol=DESC_RTOL * np.abs(D).max())


@pytest.mark.parametrize("xml_version", [0, 1423143769, 1426512068])
def test_xml_version_compatibility(xml_version):
    """QUIP's IPModel_GAP appends the file's gap_version (0 if absent) to the descriptor
    string and to the calc arguments: before 1423143769 no 1/sqrt(2l+1), before 1426512068
    central_reference_all_species defaults to T."""
    atoms = rattled(bulk("NaCl", "rocksalt", 5.64), 11) * (1, 2, 1)
    text = "soap cutoff=4.0 n_max=3 l_max=3 atom_sigma=0.5 n_species=2 species_Z={11 17}"
    d, _ = ours(atoms, QuipSoap.from_quip_string(text, xml_version=xml_version))
    D, _ = quip(atoms, f"{text} xml_version={xml_version}", args_str=f"xml_version={xml_version}")
    np.testing.assert_allclose(d, D, rtol=0, atol=DESC_RTOL * np.abs(D).max())


def test_isolated_and_lonely_atoms():
    """No neighbours inside the cutoff: only the central Gaussian (n = 1, l = 0) remains."""
    atoms = Atoms("CuCu", positions=[[0, 0, 0], [0, 0, 4.5]])
    text = "soap cutoff=4.0 n_max=4 l_max=3 atom_sigma=0.5 central_weight=0.8"
    d, c = ours(atoms, QuipSoap.from_quip_string(text))
    D, _ = quip(atoms, text)
    np.testing.assert_allclose(d, D, rtol=0, atol=DESC_RTOL)
    assert d[0, 0] == pytest.approx(1.0) and np.abs(d[:, 1:-1]).max() < 1e-15


def test_close_contacts_small_bessel_arguments():
    """Short bonds and high l put 2 alpha r r_a in the power-series branch of i_l."""
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.35, 0.1, 0.0], [0.0, 0.0, 0.9]])
    text = "soap cutoff=3.0 n_max=8 l_max=10 atom_sigma=0.3 n_species=2 species_Z={1 8}"
    d, _ = ours(atoms, QuipSoap.from_quip_string(text))
    D, _ = quip(atoms, text)
    # QUIP's upward recursion loses digits for small x at high l (our series does not);
    # those entries are tiny, so the agreement relative to the largest element stays high
    np.testing.assert_allclose(d, D, rtol=0, atol=1e-9 * np.abs(D).max())


def test_bessel_against_scipy():
    special = pytest.importorskip("scipy.special")
    soap = QuipSoap(6.0, 10, 12, 0.3)
    r = torch.linspace(0.0, 6.0, 301, dtype=torch.float64)[1:]
    g = soap.radial(r).numpy()                                  # (E, L+1, A)
    ra = soap.r_basis.numpy()
    x = 2 * soap.alpha * r.numpy()[:, None] * ra
    for l in range(13):
        ref = (special.spherical_in(l, x)
               * np.exp(-soap.alpha * (r.numpy()[:, None] ** 2 + ra ** 2)))
        # relative error per value; the recursion branch is only used where it is accurate
        np.testing.assert_allclose(g[:, l], ref, rtol=1e-12, atol=1e-300)


def test_gradcheck_and_batching():
    soap = QuipSoap.from_quip_string("soap cutoff=3.0 cutoff_transition_width=1.0 n_max=3 "
                                     "l_max=3 atom_sigma=0.5 n_species=2 species_Z={1 8}")
    a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0.1, 0.0], [-0.3, 0.9, 0.2]])
    b = Atoms("OHO", positions=[[0, 0, 0], [1.0, 0.0, 0.2], [2.3, 0.3, 0.0]])   # b: 2.3 Å
    Z = torch.tensor(a.numbers)
    i, j = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([1, 2, 0, 2, 0, 1])
    pos = torch.tensor(a.positions, requires_grad=True)
    torch.autograd.gradcheck(lambda p: soap(Z, i, j, p[j] - p[i])[0], (pos,), fast_mode=True)
    # batched: both molecules in one call = one at a time
    parts = []
    for m in (a, b):
        p = torch.tensor(m.positions)
        parts.append(soap(torch.tensor(m.numbers), i, j, p[j] - p[i]))
    pa, pb = torch.tensor(a.positions), torch.tensor(b.positions)
    ib, jb = torch.cat([i, i + 3]), torch.cat([j, j + 3])
    pp = torch.cat([pa, pb])
    d, c = soap(torch.tensor(np.r_[a.numbers, b.numbers]), ib, jb, pp[jb] - pp[ib])
    torch.testing.assert_close(d, torch.cat([parts[0][0], parts[1][0]]), rtol=0, atol=1e-15)
    torch.testing.assert_close(c, torch.cat([parts[0][1], parts[1][1] + 3]))


def test_float32_and_invariance():
    atoms = rattled(bulk("Cu", "fcc", 3.6) * (2, 1, 1), 9)
    soap = QuipSoap.from_quip_string("soap cutoff=4.0 n_max=4 l_max=4 atom_sigma=0.5")
    d, _ = ours(atoms, soap)
    rot = atoms.copy()
    rot.rotate(37, (1, 2, 3), rotate_cell=True)
    d2, _ = ours(rot, soap)
    np.testing.assert_allclose(d2, d, rtol=0, atol=1e-13)
    i, j, vec = edges(atoms, soap.cutoff, torch.tensor(atoms.positions))
    d32, _ = soap(torch.tensor(atoms.numbers), i, j, vec.float())
    assert d32.dtype == torch.float32
    np.testing.assert_allclose(d32.numpy(), d, rtol=0, atol=1e-5)


@pytest.mark.parametrize("text,match", [
    ("soap cutoff=4 n_max=4 l_max=3 atom_sigma=0.5 average=T", "average"),
    ("soap cutoff=4 n_max=4 l_max=3 atom_sigma=0.5 radial_basis=GTO", "radial_basis"),
    ("soap cutoff=4 n_max=4 l_max=3 atom_sigma=0.5 Z_mix=T", "z_mix"),
    ("soap cutoff=4 n_max=4 l_max=3 atom_sigma=0.5 nu_R=1", "nu_r"),
    ("soap cutoff=4 n_max=4 l_max=3 atom_sigma=0.5 bogus=3", "bogus"),
    ("soap cutoff=4 n_max=4 atom_sigma=0.5", "l_max"),
    ("soap cutoff=4 n_max=4 l_max=3 atom_sigma=0.5 species_Z={1 8}", "n_species"),
    ("soap cutoff=4 n_max=4 l_max=3 atom_sigma=0.5 n_species=3 species_Z={1 8}", "n_species"),
    ("distance_2b cutoff=4", "not a soap"),
    ("soap cutoff=four n_max=4 l_max=3 atom_sigma=0.5", "cutoff"),
])
def test_refusals(text, match):
    with pytest.raises(SoapStringError, match=match):
        QuipSoap.from_quip_string(text)


def test_gap_fit_string_parses():
    text = ("soap cutoff=4.0 n_max=4 l_max=3 atom_sigma=0.5 delta=1.0 zeta=2 n_sparse=10 "
            "covariance_type=dot_product sparse_method=cur_points n_species=1 Z=29 "
            "species_Z={29 }")
    soap = QuipSoap.from_quip_string(text)
    assert soap.cutoff == 4.0 and soap.Z == [29] and soap.species_Z == [29]
    assert soap.dimension == 4 * 5 // 2 * 4 + 1


def test_batch_without_a_centre_of_its_element_gives_an_empty_block():
    """A batch with no atom of the descriptor's centre element (an Al-only structure for a
    Z=29 descriptor) gives a (0, D) block, not an error."""
    soap = QuipSoap.from_quip_string(
        "soap cutoff=4.0 n_max=4 l_max=3 atom_sigma=0.5 n_species=2 species_Z={13 29} Z=29")
    Z = torch.tensor([13, 13])
    i, j = torch.tensor([0, 1]), torch.tensor([1, 0])
    v = torch.tensor([[2.5, 0.0, 0.0], [-2.5, 0.0, 0.0]], dtype=torch.float64)
    desc, centres = soap(Z, i, j, v)
    assert desc.shape == (0, soap.dimension) and centres.numel() == 0
