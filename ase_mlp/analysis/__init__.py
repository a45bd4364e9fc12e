"""Trajectory analysis: pure functions over ASE trajectories or numpy arrays.

* :mod:`~ase_mlp.analysis.diffusion`: unwrapping, time-origin averaged MSD (FFT), diffusion
  coefficients with error bars, reordered (permutation-invariant) MSD.
* :mod:`~ase_mlp.analysis.structure`: partial and total RDFs (ASE/LAMMPS normalisation),
  coordination numbers, bond-angle distributions.
* :mod:`~ase_mlp.analysis.phases`: per-atom coordination numbers, phase labels (zincblende /
  wurtzite / rocksalt / CsCl, diamond / beta-tin), nuclei of a new phase, X-ray powder
  patterns, metadynamics plots (matplotlib on demand).
* :mod:`~ase_mlp.analysis.spectra`: mass-weighted vibrational density of states, zero-point
  and effective quantum temperatures.
* :mod:`~ase_mlp.analysis.environments`: unsupervised classification of local atomic
  environments (descriptors, PCA, k-means / Gaussian mixtures with BIC / HDBSCAN), stable
  labels across frames, fractions versus time and position (scikit-learn on demand).
* :mod:`~ase_mlp.analysis.plots`: optional matplotlib figures (imported on demand, not
  re-exported here).

Units: Å, fs, amu, K; angular frequencies in rad/fs. See ``docs/analysis.md``.
"""

from ase_mlp.analysis.diffusion import (
    DiffusionFit,
    diffusion_coefficient,
    mic_msd,
    msd,
    msd_blocks,
    reordered_msd,
    unwrap_positions,
)
from ase_mlp.analysis.environments import (
    EnvironmentClassifier,
    EnvironmentDescriptor,
    EnvironmentResult,
    classify_environments,
    plot_environments,
)
from ase_mlp.analysis.phases import (
    AB_PHASES,
    GROUP14_PHASES,
    Coordination,
    PhaseFingerprint,
    PhaseLabels,
    PowderPattern,
    coordination_numbers,
    default_cutoffs,
    find_nuclei,
    form_factor,
    nucleus_sizes,
    phase_labels,
    plot_metad,
    powder_pattern,
    read_metad_log,
    xrd_along_trajectory,
    xrd_pattern,
)
from ase_mlp.analysis.spectra import (
    HBAR_EV_FS,
    effective_temperature,
    omega_to_cm1,
    omega_to_mev,
    omega_to_thz,
    spectral_resolution,
    vdos,
    zero_point_temperature,
)
from ase_mlp.analysis.structure import angle_distribution, coordination_number, partial_rdf, rdf


__all__ = [
    "EnvironmentClassifier",
    "EnvironmentDescriptor",
    "EnvironmentResult",
    "classify_environments",
    "plot_environments",
    "DiffusionFit",
    "HBAR_EV_FS",
    "angle_distribution",
    "coordination_number",
    "diffusion_coefficient",
    "effective_temperature",
    "mic_msd",
    "msd",
    "msd_blocks",
    "omega_to_cm1",
    "omega_to_mev",
    "omega_to_thz",
    "partial_rdf",
    "rdf",
    "reordered_msd",
    "spectral_resolution",
    "unwrap_positions",
    "vdos",
    "zero_point_temperature",
    # phases: coordination, phase labels, nuclei, XRD, metadynamics plot
    "AB_PHASES",
    "GROUP14_PHASES",
    "Coordination",
    "PhaseLabels",
    "PowderPattern",
    "coordination_numbers",
    "default_cutoffs",
    "find_nuclei",
    "form_factor",
    "nucleus_sizes",
    "phase_labels",
    "PhaseFingerprint",
    "plot_metad",
    "powder_pattern",
    "read_metad_log",
    "xrd_along_trajectory",
    "xrd_pattern",
]
