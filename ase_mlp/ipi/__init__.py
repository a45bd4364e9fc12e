"""ase_mlp.ipi (see the issues tracker for planned content)."""
