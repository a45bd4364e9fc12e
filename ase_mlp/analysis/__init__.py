"""ase_mlp.analysis (see the issues tracker for planned content)."""
