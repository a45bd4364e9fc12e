"""ase_mlp: machine-learning interatomic potentials as first-class ASE citizens."""

from ase_mlp._version import __version__


__all__ = ["__version__"]
