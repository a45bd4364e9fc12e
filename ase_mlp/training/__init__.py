"""ase_mlp.training (see the issues tracker for planned content)."""
