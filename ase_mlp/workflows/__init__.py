"""ase_mlp.workflows (see the issues tracker for planned content)."""
