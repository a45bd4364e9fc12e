"""Model file input/output: LAMMPS SNAP and ML-IAP files (:mod:`ase_mlp.io.lammps`)."""

from ase_mlp.io.lammps import (
    LammpsWrapperFormat,
    MliapFormat,
    ModelFileError,
    SnapFormat,
    detect_format,
    read_lammps_potential,
    read_mliap,
    read_snap,
    write_mliap,
    write_snap,
)


__all__ = [
    "ModelFileError",
    "read_snap",
    "read_mliap",
    "write_snap",
    "write_mliap",
    "read_lammps_potential",
    "detect_format",
    "SnapFormat",
    "MliapFormat",
    "LammpsWrapperFormat",
]
