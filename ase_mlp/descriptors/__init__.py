"""Atomic descriptors (the SNAP bispectrum)."""

from ase_mlp.descriptors._sna_tables import bispectrum_triples, n_bispectrum
from ase_mlp.descriptors.bispectrum import Bispectrum


__all__ = ["Bispectrum", "bispectrum_triples", "n_bispectrum"]
