"""ase_mlp.workflows: calculator-agnostic materials workflows.

* :mod:`~ase_mlp.workflows.phases`: AB crystal phases, fixed-pressure relaxation, enthalpies.
* :mod:`~ase_mlp.workflows.elastic`: batched evaluation, equation of state, elastic constants.
* :mod:`~ase_mlp.workflows.neb`: nudged elastic band with batched image evaluation.
* :mod:`~ase_mlp.workflows.phonons`: phonopy finite-displacement phonons (batched forces).
* :mod:`~ase_mlp.workflows.md`: MD with Langevin/Bussi/QTB thermostats, checkpoints, restarts.
* :mod:`~ase_mlp.workflows.locality`: force locality test (perturb atoms beyond R).
* :mod:`~ase_mlp.workflows.sscha`: SSCHA ensembles evaluated in batches, relaxation loop and
  free-energy Hessian with python-sscha (optional extra ``sscha``).
"""

from ase_mlp.workflows.elastic import (
    elastic_constants,
    equation_of_state,
    evaluate_many,
    voigt_strain_tensor,
)
from ase_mlp.workflows.locality import (
    LocalityResult,
    locality_test,
    plot_locality,
    suggest_cutoff,
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
from ase_mlp.workflows.sscha import SschaResult, compute_ensemble_batched
from ase_mlp.workflows.sscha import relax as sscha_relax


__all__ = [
    "BatchedNEB",
    "LocalityResult",
    "SschaResult",
    "compute_ensemble_batched",
    "compute_forces",
    "elastic_constants",
    "enthalpy_per_atom",
    "equation_of_state",
    "evaluate_many",
    "locality_test",
    "phase_enthalpies",
    "phonon_summary",
    "phonons",
    "plot_locality",
    "relax_at_pressure",
    "rocksalt",
    "run_md",
    "run_neb",
    "sscha_relax",
    "suggest_cutoff",
    "voigt_strain_tensor",
    "wurtzite",
    "wurtzite_parameters",
    "zincblende",
]

# defect formation energy versus a static applied field
from ase_mlp.workflows.field_defects import (  # noqa: E402
    FieldDefectResult,
    defect_energy_vs_field,
)


__all__ += ["FieldDefectResult", "defect_energy_vs_field"]
