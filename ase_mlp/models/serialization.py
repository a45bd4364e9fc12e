"""ase_mlp's own versioned model format.

A saved model is a ``torch.save`` archive of plain data (loaded with
``weights_only=True``, so opening a file never runs code) holding::

    {"format": "ase_mlp-model", "version": 1, "ase_mlp_version": "...",
     "model": {"class": "LinearSNAP", "config": {...}, "state": {name: tensor},
               "members": [...]},          # members only for SumModel and Committee
     "elements": [...], "cutoffs": [[...]], "units": {"energy": "eV", "length": "Angstrom"}}

``elements``, ``cutoffs`` and ``units`` are informational copies checked on load.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from ase_mlp._version import __version__
from ase_mlp.models.base import MODEL_REGISTRY, CompositeModel, Model


FORMAT = "ase_mlp-model"
VERSION = 1


class ModelFormatError(ValueError):
    """A saved model file is malformed; the message names the file and the key."""


def _to_dict(model: Model) -> dict:
    if isinstance(model, CompositeModel):  # saved as its list of members
        return {"class": type(model).__name__, "config": {}, "state": {},
                "members": [_to_dict(m) for m in model.models]}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"class": type(model).__name__, "config": model.config(), "state": state}


def save(model: Model, path) -> None:
    """Save ``model`` to ``path`` (any extension; ``.pt`` is customary)."""
    if not isinstance(model, Model):
        raise TypeError(f"can only save ase_mlp models, got {type(model).__name__}")
    data = {
        "format": FORMAT,
        "version": VERSION,
        "ase_mlp_version": __version__,
        "model": _to_dict(model),
        "elements": list(model.elements),
        "cutoffs": np.asarray(model.pair_cutoffs(), dtype=float).tolist(),
        "units": dict(model.units),
    }
    torch.save(data, pathlib.Path(path))


def _require(d: dict, key: str, where: str, path):
    if not isinstance(d, dict) or key not in d:
        raise ModelFormatError(f"{path}: missing key {key!r} in {where}")
    return d[key]


def _from_dict(d: dict, path, where="model") -> Model:
    cls_name = _require(d, "class", where, path)
    cls = MODEL_REGISTRY.get(cls_name)
    if cls is not None and issubclass(cls, CompositeModel):
        members = _require(d, "members", where, path)
        if not isinstance(members, list) or not members:
            raise ModelFormatError(f"{path}: '{where}.members' must be a non-empty list")
        try:
            return cls(*[_from_dict(m, path, f"{where}.members[{k}]")
                         for k, m in enumerate(members)])
        except (TypeError, ValueError) as err:
            if isinstance(err, ModelFormatError):
                raise
            raise ModelFormatError(f"{path}: invalid '{where}' ({cls_name}): {err}") from err
    if cls is None:
        raise ModelFormatError(
            f"{path}: unknown model class {cls_name!r} in key '{where}.class' "
            f"(known: {sorted(MODEL_REGISTRY)})")
    config = _require(d, "config", where, path)
    state = _require(d, "state", where, path)
    try:
        model = cls(**config)
    except (TypeError, ValueError) as err:
        raise ModelFormatError(f"{path}: invalid '{where}.config' for {cls_name}: {err}") from err
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unknown = sorted(set(state) - set(own))
    if missing or unknown:
        raise ModelFormatError(
            f"{path}: '{where}.state' does not match {cls_name}: missing keys {missing}, "
            f"unknown keys {unknown}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ModelFormatError(
                f"{path}: '{where}.state.{k}' has shape {tuple(v.shape)}, "
                f"expected {tuple(own[k].shape)}")
    model.load_state_dict(state)
    return model


def load(path, *, device=None, dtype=None) -> Model:
    """Load a model written by :func:`save`."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our format"
        raise ModelFormatError(f"{path}: not an ase_mlp model file ({err})") from err
    fmt = _require(data, "format", "the file header", path)
    if fmt != FORMAT:
        raise ModelFormatError(f"{path}: key 'format' is {fmt!r}, expected {FORMAT!r}")
    version = _require(data, "version", "the file header", path)
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise ModelFormatError(
            f"{path}: format version {version!r} is not supported by ase_mlp {__version__} "
            f"(supports 1..{VERSION})")
    model = _from_dict(_require(data, "model", "the file header", path), path)
    elements = _require(data, "elements", "the file header", path)
    if list(elements) != list(model.elements):
        raise ModelFormatError(
            f"{path}: key 'elements' {elements} disagrees with the model's {model.elements}")
    units = data.get("units", {"energy": "eV", "length": "Angstrom"})
    if units != {"energy": "eV", "length": "Angstrom"}:
        raise ModelFormatError(
            f"{path}: key 'units' is {units}; only eV and Angstrom are supported")
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


class OwnFormat:
    """Entry point for :meth:`MLPCalculator.from_file`: one path in ase_mlp's format."""

    name = "ase_mlp"

    @staticmethod
    def can_load(paths) -> bool:
        if len(paths) != 1:
            return False
        try:
            with open(paths[0], "rb") as fh:
                head = fh.read(4)
        except OSError:
            return False
        return head[:2] == b"PK"  # torch.save zip archive

    @staticmethod
    def load(paths) -> Model:
        return load(paths[0])
