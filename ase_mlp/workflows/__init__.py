"""ase_mlp.workflows: calculator-agnostic materials workflows.

* :mod:`~ase_mlp.workflows.phases`: AB crystal phases, fixed-pressure relaxation, enthalpies.
* :mod:`~ase_mlp.workflows.elastic`: batched evaluation, equation of state, elastic constants.
* :mod:`~ase_mlp.workflows.neb`: nudged elastic band with batched image evaluation.
* :mod:`~ase_mlp.workflows.phonons`: phonopy finite-displacement phonons (batched forces).
* :mod:`~ase_mlp.workflows.md`: MD with Langevin/Bussi/QTB thermostats, checkpoints, restarts.
"""

from ase_mlp.workflows.elastic import (
    elastic_constants,
    equation_of_state,
    evaluate_many,
    voigt_strain_tensor,
)
from ase_mlp.workflows.md import run_md
from ase_mlp.workflows.neb import BatchedNEB, run_neb
from ase_mlp.workflows.phases import (
    enthalpy_per_atom,
    phase_enthalpies,
    relax_at_pressure,
    rocksalt,
    wurtzite,
    wurtzite_parameters,
    zincblende,
)
from ase_mlp.workflows.phonons import compute_forces, phonon_summary, phonons


__all__ = [
    "BatchedNEB",
    "compute_forces",
    "elastic_constants",
    "enthalpy_per_atom",
    "equation_of_state",
    "evaluate_many",
    "phase_enthalpies",
    "phonon_summary",
    "phonons",
    "relax_at_pressure",
    "rocksalt",
    "run_md",
    "run_neb",
    "voigt_strain_tensor",
    "wurtzite",
    "wurtzite_parameters",
    "zincblende",
]
