"""Atomic descriptors (the SNAP bispectrum; QUIP's SOAP for GAP models)."""

from ase_mlp.descriptors._sna_tables import bispectrum_triples, n_bispectrum
from ase_mlp.descriptors.bispectrum import Bispectrum
from ase_mlp.descriptors.soap_quip import QuipSoap


__all__ = ["Bispectrum", "QuipSoap", "bispectrum_triples", "n_bispectrum"]
