"""ASE calculators backed by ase_mlp models."""

from ase_mlp.calculators.field import FieldCalculator
from ase_mlp.calculators.mlp import MLPCalculator, load_model, model_formats


__all__ = ["FieldCalculator", "MLPCalculator", "load_model", "model_formats"]
