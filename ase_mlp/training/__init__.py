"""Fitting models to reference data: data handling, SNAP least squares, NN-SNAP, committees.

The entry point is :func:`fit`::

    from ase_mlp.training import fit, read_frames, split_frames
    frames = read_frames("data.extxyz")
    train, val, test = split_frames(frames, (0.8, 0.1, 0.1), seed=0)
    model = fit(LinearSNAP(Bispectrum(["Ta"], twojmax=6, rcutfac=4.67637, radii=[0.5])),
                train, val, energy_weight=1.0, force_weight=1.0)

From a configuration file (``ase-mlp fit CONFIG``; see ``docs/training.md``)::

    from ase_mlp.training import load_config, run_fit
    result = run_fit(load_config("fit.toml"))
"""

from ase_mlp.training.config import ConfigError, FitConfig, load_config, run_fit
from ase_mlp.training.data import (
    DataError,
    Labels,
    LabelSpec,
    label,
    labels_of,
    read_deepmd,
    read_frames,
    reference_energies_from_isolated,
    split_frames,
    validate_frames,
)
from ase_mlp.training.features import FeatureCache, FrameFeatures, compute_features
from ase_mlp.training.fit import fit
from ase_mlp.training.metrics import compute_metrics, format_table


__all__ = ["fit", "read_frames", "read_deepmd", "split_frames", "validate_frames", "labels_of",
           "label", "LabelSpec", "Labels", "DataError", "reference_energies_from_isolated",
           "FeatureCache", "FrameFeatures", "compute_features", "compute_metrics", "format_table",
           "load_config", "run_fit", "FitConfig", "ConfigError"]
