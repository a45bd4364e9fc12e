"""ase_mlp.dynamics (see the issues tracker for planned content)."""
