"""ase_mlp.dynamics: integrators no other ASE package ships.

* :class:`~ase_mlp.dynamics.qtb.QTB`: quantum thermal bath and adaptive QTB (NVT, NPT).
* :func:`~ase_mlp.dynamics.estimators.energy_temperature`: ``E / (3 N k_B)`` curves.
* :class:`~ase_mlp.dynamics.field_md.FieldDrivenMD`: MD under static fields and laser pulses
  (:mod:`~ase_mlp.dynamics.fields`); static fields in relaxations:
  :class:`ase_mlp.calculators.FieldCalculator`.
"""

from ase_mlp.dynamics.estimators import energy_temperature
from ase_mlp.dynamics.qtb import QTB, deconvolve_theta, qtb_filter


__all__ = ["QTB", "deconvolve_theta", "energy_temperature", "qtb_filter"]

# uniform electric fields and field-driven MD (methods section 3)
from ase_mlp.dynamics.field_md import FieldDrivenMD  # noqa: E402
from ase_mlp.dynamics.fields import (  # noqa: E402
    GaussianPulse,
    StaticField,
    SumField,
    as_field,
    thz_to_angular,
)


__all__ += ["FieldDrivenMD", "GaussianPulse", "StaticField", "SumField", "as_field",
            "thz_to_angular"]

# cell metadynamics (methods section 2)
from ase_mlp.dynamics.metad import CellMetadynamics  # noqa: E402


__all__ += ["CellMetadynamics"]

# device-resident MD of one or many systems (issue 9)
from ase_mlp.dynamics.resident import ResidentMD  # noqa: E402


__all__ += ["ResidentMD"]
