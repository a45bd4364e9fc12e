"""``fit``: the one entry point that trains any ase_mlp model on labelled frames."""

from __future__ import annotations

import copy
import inspect
import pathlib
import time

import numpy as np
import torch

from ase_mlp.models.base import Model
from ase_mlp.models.committee import Committee
from ase_mlp.models.snap import NNSNAP, LinearSNAP, QuadraticSNAP
from ase_mlp.models.sum import SumModel
from ase_mlp.training.features import FeatureCache, compute_features
from ase_mlp.training.nn import train_nn


TRAINABLE = (LinearSNAP, QuadraticSNAP, NNSNAP, Committee)


def split_trainable(model: Model):
    """``(trainable, baseline)``: the member to fit and the fixed rest (or None).

    A :class:`SumModel` such as ``SumModel(ZBL(...), LinearSNAP(...))`` is
    fitted as its one SNAP-family member on top of the others, the LAMMPS
    ``hybrid/overlay`` idiom (Ta06A is SNAP fitted on top of ZBL).
    """
    if isinstance(model, TRAINABLE):
        return model, None
    if isinstance(model, SumModel):
        idx = [k for k, m in enumerate(model.models) if isinstance(m, TRAINABLE)]
        if len(idx) != 1:
            raise ValueError(
                f"a SumModel to fit needs exactly one trainable member (LinearSNAP, "
                f"QuadraticSNAP, NNSNAP or Committee), found {len(idx)} among "
                f"{[type(m).__name__ for m in model.models]}")
        rest = [m for k, m in enumerate(model.models) if k != idx[0]]
        base = rest[0] if len(rest) == 1 else SumModel(*rest)
        return model.models[idx[0]], base
    raise TypeError(f"cannot fit a {type(model).__name__}; trainable models are "
                    f"{[c.__name__ for c in TRAINABLE]} (alone or inside a SumModel)")


#: keyword options of ``fit`` that go to the NN trainer
_NN_OPTIONS = set(inspect.signature(train_nn).parameters) - {
    "model", "train", "validation", "energy_weight", "force_weight", "stress_weight",
    "element_w", "reference", "seed", "progress", "initialise"}


def fit(model: Model, train, validation=None, *, energy_weight: float = 1.0,
        force_weight: float = 1.0, stress_weight: float = 0.0, element_force_weights=None,
        reference_energies: dict | None = None, group_weights: dict | None = None,
        regularization="auto", committee: int | None = None,
        committee_method: str | None = None, labels=None, cache=None, cache_dir=None,
        seed: int = 0, progress: bool = False, return_report: bool = False, **nn_options):
    """Fit ``model`` to labelled frames and return the fitted model (a copy).

    Parameters
    ----------
    model : Model
        An unfitted ``LinearSNAP``, ``QuadraticSNAP``, ``NNSNAP`` or
        ``Committee`` of those, alone or inside a ``SumModel`` whose other
        members (e.g. ``ZBL``) stay fixed and are subtracted from the labels.
    train, validation : list of ase.Atoms
        Labelled frames (:func:`ase_mlp.training.data.read_frames`, or Atoms
        carrying calculator results / info keys per ``labels``).
    energy_weight, force_weight, stress_weight : float
        The loss is ``w_E MSE(E/N) + w_F MSE(F) + w_S MSE(stress in GPa)``, each
        mean over the rows of its kind (eV/atom, eV/Å, GPa).
    element_force_weights : None, "balanced" or dict
        Per-element force weights; "balanced" gives every element the same total
        weight however many atoms it has.
    reference_energies : dict, optional
        Isolated-atom energies; the model learns the rest and adds them back.
    group_weights : dict, optional
        ``{group: {"energy": w, "forces": w, "stress": w}}`` multipliers of the
        rows of frames in each group (FitSNAP's per-group weights); a plain
        number multiplies all three. Groups come from ``info["config_type"]``
        (:func:`~ase_mlp.training.data.read_frames` sets them to file stems).
    regularization : "auto" or float
        Ridge strength (relative) for linear/quadratic SNAP; "auto" chooses it
        on ``validation`` (generalised cross-validation without one).
    committee : int, optional
        Fit a committee of this many members instead (``Committee`` result; with
        fixed terms such as ZBL each member is a ``SumModel(ZBL, fitted member)``);
        ``committee_method`` "bootstrap" (default for linear models) or "seed"
        (default for NN-SNAP: new initialisation and shuffling per member).
    cache, cache_dir : descriptor cache (in memory / on disk), reused across fits.
    seed : int
        Makes the fit deterministic (initialisation, shuffling, bootstraps).
    nn_options :
        NN-SNAP only: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
        ``patience``, ``lr_patience``, ``lr_factor``, ``min_lr``, ``lbfgs_steps``,
        ``dtype`` (float32 allowed; the model is returned in float64),
        ``checkpoint``, ``checkpoint_every``, ``resume``, ``log``. Committee member
        ``k`` checkpoints to ``<stem>.member<k><suffix>`` next to ``checkpoint``.
    return_report : bool
        Also return a dict describing the fit (chosen regularisation, history...).
    """
    from ase_mlp.training.data import DataError, validate_frames

    t0 = time.perf_counter()
    model = copy.deepcopy(model)
    target, baseline = split_trainable(model)
    if committee is not None:
        if int(committee) < 2:
            raise ValueError(f"committee must be >= 2 members, got {committee}")
        if isinstance(target, Committee):
            raise ValueError("model is already a Committee; do not also pass committee=")
    is_nn = isinstance(target, NNSNAP) or (
        isinstance(target, Committee) and isinstance(target.models[0], NNSNAP))
    unknown = set(nn_options) - _NN_OPTIONS
    if unknown:
        raise TypeError(f"unknown fit options {sorted(unknown)}; NN-SNAP options are "
                        f"{sorted(_NN_OPTIONS)}")
    if nn_options and not is_nn:
        raise TypeError(f"options {sorted(nn_options)} only apply to NN-SNAP models")
    for name, w in (("energy_weight", energy_weight), ("force_weight", force_weight),
                    ("stress_weight", stress_weight)):
        if not (np.isfinite(w) and w >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {w}")
    if energy_weight == force_weight == stress_weight == 0:
        raise ValueError("all loss weights are zero")
    require = tuple(k for k, w in (("energy", energy_weight), ("forces", force_weight),
                                   ("stress", stress_weight)) if w > 0)
    train = list(train)
    validate_frames(train, elements=model.elements, require=require, name="train",
                    spec=labels)
    if validation is not None:
        validation = list(validation)
        if not validation:
            raise DataError("validation: no frames (pass None to fit without a validation "
                            "set)")
        validate_frames(validation, elements=model.elements, require=require,
                        name="validation", spec=labels)

    # options checked before the descriptors are computed
    if committee_method is not None and committee_method not in ("seed", "bootstrap"):
        raise ValueError(f"committee_method must be 'seed' or 'bootstrap', got "
                         f"{committee_method!r}")
    if not is_nn and not (isinstance(regularization, str) and regularization == "auto"):
        try:
            ok = np.isfinite(float(regularization)) and float(regularization) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"regularization must be 'auto' or a finite number >= 0, got "
                             f"{regularization!r}")
    if element_force_weights is not None:
        from ase_mlp.training.linear import element_weights

        element_weights(element_force_weights, model.elements, [])
    if reference_energies:
        unknown_el = set(reference_energies) - set(model.elements)
        if unknown_el:
            raise ValueError(f"reference_energies name elements {sorted(unknown_el)} that the "
                             f"model does not cover ({model.elements})")
    if group_weights:
        from ase_mlp.training.data import labels_of

        group_table(group_weights, {labels_of(a, labels, index=k).group
                                    for k, a in enumerate(train + (validation or []))})

    descriptor = (target.models[0] if isinstance(target, Committee) else target).descriptor
    if cache is None:
        cache = FeatureCache(cache_dir)
    eref = None
    if reference_energies:
        eref = np.array([float(reference_energies.get(e, 0.0)) for e in model.elements])
    # float32 NN training keeps its descriptor gradients in float32 (half the memory)
    store = torch.float32 if is_nn and nn_options.get("dtype") == torch.float32 else None
    feats = dict(elements=model.elements, baseline=baseline, store_dtype=store,
                 reference_energies=reference_energies, cache=cache, labels=labels,
                 progress=progress)
    ftrain = compute_features(descriptor, train, **feats)
    fval = compute_features(descriptor, validation, **feats) if validation else None
    if group_weights:
        apply_group_weights(group_weights, ftrain + (fval or []))
    t_desc = time.perf_counter() - t0

    common = dict(energy_weight=energy_weight, force_weight=force_weight,
                  stress_weight=stress_weight)
    if committee is not None:
        n = int(committee)
        members = [copy.deepcopy(target) for _ in range(n)]
        fitted = Committee(*members)
    else:
        fitted = target
    if isinstance(fitted, Committee):
        method = committee_method or ("seed" if is_nn else "bootstrap")
        if method not in ("seed", "bootstrap"):
            raise ValueError(f"committee_method must be 'seed' or 'bootstrap', got {method!r}")
        reports = []
        rng = np.random.default_rng(seed)
        for k, member in enumerate(fitted.models):
            data = ftrain
            if method == "bootstrap":
                pick = rng.integers(0, len(ftrain), size=len(ftrain))
                data = [ftrain[p] for p in pick]
            opts = nn_options
            if nn_options.get("checkpoint") is not None:  # one checkpoint file per member
                ck = pathlib.Path(nn_options["checkpoint"])
                opts = {**nn_options, "checkpoint": ck.with_name(f"{ck.stem}.member{k}{ck.suffix}")}
            reports.append(_fit_one(member, data, fval, eref, common, element_force_weights,
                                    regularization, seed + 1000 * k, progress, opts))
        report = {"members": reports, "method": method}
    else:
        report = _fit_one(fitted, ftrain, fval, eref, common, element_force_weights,
                          regularization, seed, progress, nn_options)
    if isinstance(fitted, Committee) and baseline is not None:
        # A Committee result, each member the fixed terms plus one fitted member (in the
        # SumModel's order): SumModel(ZBL, Committee) would predict the same mean but
        # hide the spread (energy_std, forces_std) from MLPCalculator.
        model = Committee(*[
            SumModel(*[member if m is target else copy.deepcopy(m) for m in model.models])
            for member in fitted.models])
    elif committee is not None:
        model = fitted
    report.update(descriptor_seconds=t_desc, seconds=time.perf_counter() - t0,
                  n_train=len(train), n_validation=len(validation or []))
    model.eval()
    return (model, report) if return_report else model


def apply_group_weights(group_weights: dict, frames) -> None:
    """Set ``kind_weights`` of every frame from ``{group: weights}``."""
    table = group_table(group_weights, {f.group for f in frames})
    for f in frames:
        f.kind_weights = table.get(f.group, (1.0, 1.0, 1.0))


def group_table(group_weights: dict, known) -> dict:
    """``{group: (w_energy, w_forces, w_stress)}``, checked against the ``known`` groups."""
    unknown = set(group_weights) - known
    if unknown:
        raise ValueError(f"group_weights names groups {sorted(unknown)} that no frame has "
                         f"(groups: {sorted(known)})")
    table = {}
    for g, w in group_weights.items():
        if isinstance(w, dict):
            bad = set(w) - {"energy", "forces", "stress"}
            if bad:
                raise ValueError(f"group_weights[{g!r}]: unknown keys {sorted(bad)}; use "
                                 f"'energy', 'forces', 'stress'")
            vals = (w.get("energy", 1.0), w.get("forces", 1.0), w.get("stress", 1.0))
        else:
            vals = (w, w, w)
        vals = tuple(float(v) for v in vals)
        if not all(np.isfinite(v) and v >= 0 for v in vals):
            raise ValueError(f"group_weights[{g!r}] must be finite and >= 0, got {vals}")
        table[g] = vals
    return table


def _fit_one(member, ftrain, fval, eref, common, element_force_weights, regularization, seed,
             progress, nn_options):
    from ase_mlp.training.linear import element_weights, fit_linear

    if isinstance(member, NNSNAP):
        if member.activations[-1] != "linear":
            raise ValueError("NN-SNAP training needs a linear output activation, got "
                             f"{member.activations[-1]!r}")
        ew = element_weights(element_force_weights, member.elements, ftrain)
        opts = dict(nn_options)
        opts.setdefault("dtype", torch.float64)
        return train_nn(member, ftrain, fval, element_w=ew, reference=eref, seed=seed,
                        progress=progress, **common, **opts)
    return fit_linear(member, ftrain, fval, element_force_weights=element_force_weights,
                      regularization=regularization, reference=eref, **common)
