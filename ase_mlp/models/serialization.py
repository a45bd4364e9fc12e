"""ase_mlp's own versioned model format.

A saved model is a ``torch.save`` archive of plain data (loaded with
``weights_only=True``, so opening a file never runs code) holding::

    {"format": "ase_mlp-model", "version": 1, "ase_mlp_version": "...",
     "model": {"class": "LinearSNAP", "config": {...}, "state": {name: tensor},
               "members": [...]},          # members only for SumModel and Committee
     "elements": [...], "cutoffs": [[...]], "units": {"energy": "eV", "length": "Angstrom"}}

``elements``, ``cutoffs`` and ``units`` are informational copies checked on load.

Files written by this version also hold
``"checksum": {"algorithm": "sha256", "digest": ..., "of": "model"}``, the :func:`checksum`
of the ``model`` entry (class names, configs, tensor dtypes, shapes and bytes; the header
keys are checked against the model instead), which is also :func:`model_checksum` of the
saved model. :func:`load` recomputes it and raises :class:`ModelFormatError` ("corrupt")
when it differs, so a damaged file (a flipped bit in a weight, which ``torch.load`` does
not notice) is never evaluated. Files written before checksums existed load as before.
The same helpers (:func:`with_checksum`, :func:`verify_checksum`) guard the NN training
checkpoints of ``fit --resume``.
"""

from __future__ import annotations

import hashlib
import math
import pathlib
import struct

import numpy as np
import torch

from ase_mlp._version import __version__
from ase_mlp.models.base import MODEL_REGISTRY, CompositeModel, Model, check_finite_parameters


FORMAT = "ase_mlp-model"
VERSION = 1


class ModelFormatError(ValueError):
    """A saved model file is malformed; the message names the file and the key."""


#: key of the checksum entry in model files and training checkpoints
CHECKSUM_KEY = "checksum"
_ALGORITHM = "sha256"


def _feed(h, obj) -> None:
    """Add ``obj`` to the hash ``h`` in a canonical, type-tagged form.

    Tensors contribute their dtype, shape and raw bytes (CPU, contiguous); dict
    entries are taken in the order of their sorted keys' reprs, lists and tuples
    alike in order; Python (and numpy) scalars by exact value.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous()
        h.update(b"T" + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D%d:" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d:" % len(obj))
        for item in obj:
            _feed(h, item)
    elif obj is None:
        h.update(b"N")
    elif isinstance(obj, (bool, np.bool_)):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, (int, np.integer)):
        h.update(b"I" + str(int(obj)).encode() + b";")
    elif isinstance(obj, (float, np.floating)):
        x = float(obj)
        h.update(b"F" + (struct.pack("<d", x) if not math.isnan(x) else b"nan"))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(data) + data)
    elif isinstance(obj, bytes):
        h.update(b"Y%d:" % len(obj) + obj)
    elif isinstance(obj, np.ndarray):
        _feed(h, torch.as_tensor(np.ascontiguousarray(obj)))
    else:
        text = repr(obj).encode()
        h.update(b"R%d:" % len(text) + text)


def checksum(obj) -> str:
    """SHA-256 hex digest of nested plain data (dicts, lists, tensors, scalars, strings).

    A pure function of the values: the same data gives the same digest in any
    process, whichever device or memory layout its tensors had (each tensor is
    hashed by dtype, shape and bytes). A top-level ``"checksum"`` entry is left
    out, so ``checksum(with_checksum(d)) == checksum(d)``.
    """
    h = hashlib.sha256()
    if isinstance(obj, dict) and CHECKSUM_KEY in obj:
        obj = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    _feed(h, obj)
    return h.hexdigest()


def with_checksum(data: dict) -> dict:
    """A shallow copy of ``data`` with its :func:`checksum` under ``"checksum"``
    (``{"algorithm": "sha256", "digest": ...}``), for :func:`verify_checksum`."""
    out = {k: v for k, v in data.items() if k != CHECKSUM_KEY}
    out[CHECKSUM_KEY] = {"algorithm": _ALGORITHM, "digest": checksum(out)}
    return out


def verify_checksum(data, path, what: str = "model file", *, required: bool = False) -> str | None:
    """Check the ``"checksum"`` entry of loaded ``data`` against its contents.

    The entry's optional ``"of"`` names the one key it covers (model files: ``"model"``);
    without it the digest covers every other entry. Returns the stored digest, or None
    when the data carry none (files written
    before checksums existed; an error instead when ``required``). Raises
    :class:`ModelFormatError` naming ``path`` when the digest differs: the file
    was damaged or modified after it was written.
    """
    if not isinstance(data, dict) or CHECKSUM_KEY not in data:
        if required:
            raise ModelFormatError(f"{path}: {what} has no checksum")
        return None
    entry = data[CHECKSUM_KEY]
    if (not isinstance(entry, dict) or entry.get("algorithm") != _ALGORITHM
            or not isinstance(entry.get("digest"), str)):
        raise ModelFormatError(
            f"{path}: {what} is corrupt: its checksum entry is malformed ({entry!r})")
    of = entry.get("of")
    if of is not None and (not isinstance(of, str) or of not in data):
        raise ModelFormatError(
            f"{path}: {what} is corrupt: its checksum covers key {of!r}, which is missing")
    actual = checksum(data if of is None else data[of])
    if actual != entry["digest"]:
        raise ModelFormatError(
            f"{path}: {what} is corrupt: the {_ALGORITHM} checksum of its contents is "
            f"{actual[:16]}..., but {entry['digest'][:16]}... was stored when it was written "
            "(the file was damaged or modified since); restore it from a backup or write it "
            "again")
    return entry["digest"]


def model_checksum(model: Model) -> str:
    """Checksum of a model's class, config and tensors: the digest a file written by
    :func:`save` stores (in float64 on the CPU as saved), identifying the model."""
    return checksum(_to_dict(model))


def _to_dict(model: Model) -> dict:
    if isinstance(model, CompositeModel):  # saved as its list of members
        return {"class": type(model).__name__, "config": {}, "state": {},
                "members": [_to_dict(m) for m in model.models]}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"class": type(model).__name__, "config": model.config(), "state": state}


def _check_saveable(model: Model) -> None:
    """Refuse, before anything is written, a model (or a member of a sum/committee) whose
    class cannot be rebuilt from this format: a foreign model (GAP, metatomic, DeePMD,
    NequIP, MACE) is kept as its own file."""
    if isinstance(model, CompositeModel):
        for m in model.models:
            _check_saveable(m)
        return
    cls = type(model)
    if MODEL_REGISTRY.get(cls.__name__) is not cls:
        raise TypeError(
            f"{cls.__name__} cannot be saved in ase_mlp's format (its class is not registered "
            "with ase_mlp.models.register_model: a model loaded from another framework's file "
            "is kept as that file; rebuild sums of it in Python)")


def save(model: Model, path) -> None:
    """Save ``model`` to ``path`` (any extension; ``.pt`` is customary)."""
    if not isinstance(model, Model):
        raise TypeError(f"can only save ase_mlp models, got {type(model).__name__}")
    _check_saveable(model)
    data = {
        "format": FORMAT,
        "version": VERSION,
        "ase_mlp_version": __version__,
        "model": _to_dict(model),
        "elements": list(model.elements),
        "cutoffs": np.asarray(model.pair_cutoffs(), dtype=float).tolist(),
        "units": dict(model.units),
    }
    # the digest covers the model only (not the version strings), so it identifies the
    # model: MLPCalculator reports the same value for a model in memory
    digest = checksum(data["model"])
    data[CHECKSUM_KEY] = {"algorithm": _ALGORITHM, "digest": digest, "of": "model"}
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
    """Load a model written by :func:`save`.

    The model's ``source_file`` attribute is set to ``path`` (``MLPCalculator`` records
    it). Raises :class:`ModelFormatError`, naming the file, for a malformed or corrupt
    file (checksum mismatch) and for NaN or infinite weights (naming the parameter).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our format"
        raise ModelFormatError(
            f"{path}: not an ase_mlp model file, or a corrupt one ({err})") from err
    fmt = _require(data, "format", "the file header", path)
    if fmt != FORMAT:
        raise ModelFormatError(f"{path}: key 'format' is {fmt!r}, expected {FORMAT!r}")
    version = _require(data, "version", "the file header", path)
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise ModelFormatError(
            f"{path}: format version {version!r} is not supported by ase_mlp {__version__} "
            f"(supports 1..{VERSION})")
    model_dict = _require(data, "model", "the file header", path)
    # before anything is built from the contents (a damaged config could ask for anything)
    verify_checksum(data, path)
    model = _from_dict(model_dict, path)
    elements = _require(data, "elements", "the file header", path)
    if list(elements) != list(model.elements):
        raise ModelFormatError(
            f"{path}: key 'elements' {elements} disagrees with the model's {model.elements}")
    units = data.get("units", {"energy": "eV", "length": "Angstrom"})
    if units != {"energy": "eV", "length": "Angstrom"}:
        raise ModelFormatError(
            f"{path}: key 'units' is {units}; only eV and Angstrom are supported")
    try:
        check_finite_parameters(model)
    except ValueError as err:
        raise ModelFormatError(f"{path}: {err}") from None
    model.source_file = str(path.resolve())
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


class OwnFormat:
    """Entry point for :meth:`MLPCalculator.from_file`: one path in ase_mlp's format."""

    name = "ase_mlp"
    #: asked after every specific format: it claims any ``torch.save`` archive (to say what
    #: is wrong with a damaged model file), so pickled modules of other frameworks (MACE)
    #: must be recognised first
    fallback = True

    @staticmethod
    def can_load(paths) -> bool:
        if len(paths) != 1:
            return False
        try:
            with open(paths[0], "rb") as fh:
                head = fh.read(4)
        except OSError:
            return False
        if head[:2] != b"PK":  # torch.save zip archive
            return False
        return _is_torch_save(paths[0]) and not _is_torchscript(paths[0])

    @staticmethod
    def load(paths) -> Model:
        return load(paths[0])


def _is_torch_save(path) -> bool:
    """A ``torch.save`` archive: a zip with a ``<name>/data.pkl`` (AOTInductor packages,
    e.g. NequIP ``.nequip.pt2``, have none)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("/data.pkl") for name in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _is_torchscript(path) -> bool:
    """A TorchScript archive (``torch.jit.save``; metatomic ``.pt`` models): a zip with a
    ``<name>/code/`` folder, which ``torch.save`` archives never have."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in name for name in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
