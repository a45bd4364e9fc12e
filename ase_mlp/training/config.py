"""Fit configurations: a TOML (or YAML/JSON) file describing one training run.

``ase-mlp fit CONFIG`` and :func:`run_fit` read a configuration with
:func:`load_config`, which validates it completely *before* any work is done:
unknown keys (with a "did you mean" suggestion), wrong types, missing required
keys, bad values and missing data files all raise :class:`ConfigError` naming
the full key path, e.g. ``model.descriptor.twojmx: unknown key; did you mean
'twojmax'?``. Relative paths (data files, ``output``) are relative to the
directory of the configuration file.

TOML is read with the standard library (``tomllib``, Python >= 3.11; ``tomli``
on 3.10). YAML (``.yaml``/``.yml``) needs PyYAML (``pip install pyyaml``);
``.json`` files are read too. The keys are the same in every format.

Schema (every key shown; those marked *required* must be given)::

    seed = 0                      # int: split, initialisation, shuffling, bootstraps
    output = "out"                # directory for model.pt, metrics.json/.txt, plots,
                                  # checkpoint.pt, cache/ (descriptors), config.json

    [data]
    train = ["a.extxyz", "b/*.xyz"]   # required: files, globs or DeePMD directories
    validation = []               # optional explicit validation files
    test = []                     # optional explicit test files
    split = [0.8, 0.1, 0.1]       # train/validation/test fractions of the `train` frames,
                                  # used for the sets not given explicitly
    split_by_group = true         # split inside each group (file stem or config_type)

    [data.labels]                 # optional: LabelSpec fields (ase_mlp.training.LabelSpec)
    energy = "energy"             # key of the energy (calculator result or info)
    forces = "forces"
    stress = "stress"             # false: read no stress
    virial = "virial"             # false: read no virial
    stress_unit = "bar"           # eV/A^3 (default), GPa, kbar, bar
    stress_sign = "compressive"   # ase (tensile positive, default) or compressive
    weight = "weight"             # info key of a per-structure weight
    group = "config_type"         # info key of the group name
    source = "auto"               # auto, calc, info
    check_magnitudes = true       # refuse implausible magnitudes (unit mistakes: a stress
                                  # above 160 GPa at an ordinary volume, forces > 500 eV/Å,
                                  # |E| > 1e6 eV/atom); false accepts them

    [model]
    type = "nn"                   # required: linear | quadratic | nn
    elements = ["Ta"]             # required: element order of the model
    hidden = [32, 32]             # nn only (default [32, 32])
    activations = ["tanh", "tanh", "linear"]   # nn only; one per layer, output "linear"
    committee = 2                 # >= 2: fit a committee of that many members (default 0)
    committee_method = "bootstrap"   # or "seed" (default: bootstrap linear, seed nn)

    [model.descriptor]            # required: ase_mlp.descriptors.Bispectrum arguments
    twojmax = 6                   # required
    rcutfac = 4.67637             # required
    radii = {Ta = 0.5}            # required: per element, a table or a list
    weights = {Ta = 1.0}          # default 1.0 each
    rfac0 = 0.99363
    rmin0 = 0.0
    switchflag = true
    bzeroflag = true
    chemflag = false
    bnormflag = false
    wselfallflag = false
    switchinnerflag = false
    # sinner = {Ta = 1.0}         # with switchinnerflag = true
    # dinner = {Ta = 0.5}

    [model.zbl]                   # optional fixed ZBL baseline (SNAP is fitted on top)
    inner = 4.0                   # required in the section, Å
    outer = 4.8                   # required in the section, Å
    z = {Ta = 73}                 # optional nuclear charges (default atomic numbers)

    [fit]
    energy_weight = 1.0
    force_weight = 1.0
    stress_weight = 0.0
    element_force_weights = "balanced"   # or {Ta = 1.0, ...}; default none
    reference_energies = {Ta = 0.0}      # isolated-atom energies (eV); default none
    # regularization = "auto"            # linear/quadratic only: or a relative ridge >= 0
    group_weights = {Liquid = {energy = 4.67, forces = 1}, GSF_110 = 2.0}

    [fit.nn]                      # nn only: options of ase_mlp.training.fit
    epochs = 300
    batch_size = 8
    lr = 3e-3
    weight_decay = 0.0
    patience = 40
    lr_patience = 10
    lr_factor = 0.5
    min_lr = 1e-5
    lbfgs_steps = 0
    dtype = "float64"             # or "float32"
    checkpoint_every = 10         # epochs between writes of output/checkpoint.pt
    optimizer = "adam"            # or "lbfgs": full-batch L-BFGS (small data sets)
    max_iter = 1000               # lbfgs: iteration budget
    lbfgs_patience = 8            # lbfgs (and the polish): chunks of 25 without improvement
    warm_start = "auto"           # "linear" (start from linear SNAP), "none"; auto: linear
                                  # with lbfgs, none with adam

    [export]
    lammps = false                # also write LAMMPS files into `output`

The NN options ``checkpoint``, ``resume`` and ``log`` are set by
:func:`run_fit` (``output/checkpoint.pt``, ``--resume``) and are refused here.
See ``docs/training.md`` for a walk-through.
"""

from __future__ import annotations

import difflib
import glob
import json
import math
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any


__all__ = ["ConfigError", "FitConfig", "DataConfig", "ModelConfig", "FitOptions",
           "ExportConfig", "load_config", "config_from_dict", "run_fit"]

MODEL_TYPES = ("linear", "quadratic", "nn")
ACTIVATIONS = ("linear", "tanh", "sigmoid", "relu")
#: NN options of :func:`ase_mlp.training.fit` that the workflow sets itself
MANAGED_NN_OPTIONS = {
    "checkpoint": "set by ase-mlp fit (it is always <output>/checkpoint.pt)",
    "resume": "use 'ase-mlp fit CONFIG --resume' (run_fit(..., resume=True)) instead",
    "log": "not configurable from a file",
}


class ConfigError(ValueError):
    """An invalid fit configuration; the message names the key path and the problem."""


# --------------------------------------------------------------------------- checkers
_ABSENT = object()


def _describe(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class _Kind:
    what = "a value"

    def check(self, value, path, errors):  # pragma: no cover - interface
        raise NotImplementedError


class _Int(_Kind):
    def __init__(self, minimum=None):
        self.minimum = minimum
        self.what = "an integer" + (f" >= {minimum}" if minimum is not None else "")

    def check(self, value, path, errors):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
            return None
        if self.minimum is not None and value < self.minimum:
            errors.append(f"{path}: expected {self.what}, got {value}")
            return None
        return value


class _Float(_Kind):
    def __init__(self, minimum=None, positive=False, maximum=None):
        self.minimum, self.positive, self.maximum = minimum, positive, maximum
        if positive:
            self.what = "a number > 0"
        elif minimum is not None:
            self.what = f"a number >= {minimum:g}"
        else:
            self.what = "a number"
        if maximum is not None:
            self.what += f" and <= {maximum:g}"

    def check(self, value, path, errors):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
            return None
        value = float(value)
        bad = (not math.isfinite(value) or (self.positive and value <= 0)
               or (self.minimum is not None and value < self.minimum)
               or (self.maximum is not None and value > self.maximum))
        if bad:
            errors.append(f"{path}: expected a finite {self.what[2:]}, got {value}")
            return None
        return value


class _Bool(_Kind):
    what = "true or false"

    def check(self, value, path, errors):
        if not isinstance(value, bool):
            errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
            return None
        return value


class _Str(_Kind):
    def __init__(self, choices=None):
        self.choices = None if choices is None else tuple(choices)
        self.what = ("one of " + ", ".join(repr(c) for c in self.choices)) if choices \
            else "a string"

    def check(self, value, path, errors):
        if not isinstance(value, str):
            errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
            return None
        if self.choices is not None and value not in self.choices:
            near = difflib.get_close_matches(value, self.choices, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            errors.append(f"{path}: {value!r} is not {self.what}{hint}")
            return None
        return value


class _OptStr(_Kind):
    what = "a string, or false for none"

    def check(self, value, path, errors):
        if value is None or value is False:
            return None
        if isinstance(value, str) and value:
            return value
        errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
        return None


class _List(_Kind):
    def __init__(self, item: _Kind, length=None, min_length=0, scalar_ok=False):
        self.item, self.length, self.min_length, self.scalar_ok = item, length, min_length, \
            scalar_ok
        n = f"{length} entries, " if length else ""
        self.what = f"a list ({n}each {item.what})"

    def check(self, value, path, errors):
        if self.scalar_ok and not isinstance(value, (list, tuple, dict)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
            return None
        if self.length is not None and len(value) != self.length:
            errors.append(f"{path}: expected {self.length} entries, got {len(value)}")
            return None
        if len(value) < self.min_length:
            errors.append(f"{path}: expected at least {self.min_length} entr"
                          f"{'y' if self.min_length == 1 else 'ies'}, got {len(value)}")
            return None
        n = len(errors)
        out = [self.item.check(v, _join(path, k), errors) for k, v in enumerate(value)]
        return out if len(errors) == n else None


class _Map(_Kind):
    """A table with free (string) keys and values of one kind."""

    def __init__(self, value: _Kind, what=None):
        self.value = value
        self.what = what or f"a table of name = value ({value.what})"

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
            return None
        n = len(errors)
        out = {}
        for k, v in value.items():
            out[str(k)] = self.value.check(v, _join(path, str(k)), errors)
        return out if len(errors) == n else None


class _Union(_Kind):
    def __init__(self, *kinds: _Kind, what=None):
        self.kinds = kinds
        self.what = what or " or ".join(k.what for k in kinds)

    def check(self, value, path, errors):
        attempts = []
        for kind in self.kinds:
            trial: list[str] = []
            out = kind.check(value, path, trial)
            if not trial:
                return out
            attempts.append(trial)
        # report the attempt that got furthest (an error inside a table rather than its type)
        inner = [t for t in attempts if not any(m.startswith(f"{path}: expected") for m in t)]
        if inner:
            errors.extend(inner[0])
        else:
            errors.append(f"{path}: expected {self.what}, got {_describe(value)}")
        return None


@dataclass
class _Key:
    kind: _Kind
    required: bool = False
    default: Any = _ABSENT


class _Section(_Kind):
    what = "a table"

    def __init__(self, keys: dict, reserved: dict | None = None):
        self.keys = keys
        self.reserved = reserved or {}

    def check(self, value, path, errors):
        if not isinstance(value, dict):
            errors.append(f"{path or 'configuration'}: expected a table, got {_describe(value)}")
            return None
        out = {}
        for k, v in value.items():
            sub = _join(path, str(k))
            if k in self.reserved:
                errors.append(f"{sub}: not allowed here: {self.reserved[k]}")
                continue
            if k not in self.keys:
                near = difflib.get_close_matches(str(k), list(self.keys), n=1, cutoff=0.6)
                if near:
                    errors.append(f"{sub}: unknown key; did you mean {near[0]!r}?")
                else:
                    errors.append(f"{sub}: unknown key; allowed keys here: "
                                  f"{', '.join(self.keys)}")
                continue
            out[k] = self.keys[k].kind.check(v, sub, errors)
        for k, spec in self.keys.items():
            if k in value:
                continue
            if spec.required:
                what = "section" if isinstance(spec.kind, _Section) else "key"
                errors.append(f"{_join(path, k)}: required {what} missing")
            elif spec.default is not _ABSENT:
                default = spec.default
                if isinstance(spec.kind, _Section):
                    default = spec.kind.check({} if default is None else default,
                                              _join(path, k), errors)
                out[k] = default
        return out


_PER_ELEMENT = _Union(_Map(_Float()), _List(_Float()),
                      what="a table of element = number, or a list of numbers")

_DESCRIPTOR = _Section({
    "twojmax": _Key(_Int(0), required=True),
    "rcutfac": _Key(_Float(positive=True), required=True),
    "radii": _Key(_PER_ELEMENT, required=True),
    "weights": _Key(_PER_ELEMENT),
    "rfac0": _Key(_Float(positive=True, maximum=1.0)),
    "rmin0": _Key(_Float(0.0)),
    "switchflag": _Key(_Bool()),
    "bzeroflag": _Key(_Bool()),
    "chemflag": _Key(_Bool()),
    "bnormflag": _Key(_Bool()),
    "wselfallflag": _Key(_Bool()),
    "switchinnerflag": _Key(_Bool()),
    "sinner": _Key(_PER_ELEMENT),
    "dinner": _Key(_PER_ELEMENT),
}, reserved={"elements": "the elements are model.elements"})

_ZBL = _Section({
    "inner": _Key(_Float(positive=True), required=True),
    "outer": _Key(_Float(positive=True), required=True),
    "z": _Key(_Map(_Float(positive=True))),
})

_MODEL = _Section({
    "type": _Key(_Str(MODEL_TYPES), required=True),
    "elements": _Key(_List(_Str(), min_length=1), required=True),
    "descriptor": _Key(_DESCRIPTOR, required=True),
    "hidden": _Key(_List(_Int(1), min_length=1)),
    "activations": _Key(_List(_Str(ACTIVATIONS), min_length=1)),
    "committee": _Key(_Int(0), default=0),
    "committee_method": _Key(_Str(("bootstrap", "seed"))),
    "zbl": _Key(_ZBL),
})

_LABELS = _Section({
    "energy": _Key(_Str()),
    "forces": _Key(_Str()),
    "stress": _Key(_OptStr()),
    "virial": _Key(_OptStr()),
    "stress_unit": _Key(_Str()),
    "stress_sign": _Key(_Str(("ase", "compressive"))),
    "weight": _Key(_Str()),
    "group": _Key(_Str()),
    "source": _Key(_Str(("auto", "calc", "info"))),
    "check_magnitudes": _Key(_Bool()),
})

_PATHS = _List(_Str(), scalar_ok=True)

_DATA = _Section({
    "train": _Key(_List(_Str(), min_length=1, scalar_ok=True), required=True),
    "validation": _Key(_PATHS, default=[]),
    "test": _Key(_PATHS, default=[]),
    "split": _Key(_List(_Float(0.0), length=3), default=[0.8, 0.1, 0.1]),
    "split_by_group": _Key(_Bool(), default=True),
    "labels": _Key(_LABELS, default={}),
})

#: [fit.nn] keys: the NN-SNAP options of ase_mlp.training.fit (minus MANAGED_NN_OPTIONS)
NN_OPTIONS = {
    "epochs": _Int(1),
    "batch_size": _Int(1),
    "lr": _Float(positive=True),
    "weight_decay": _Float(0.0),
    "patience": _Int(1),
    "lr_patience": _Int(1),
    "lr_factor": _Float(positive=True, maximum=1.0),
    "min_lr": _Float(0.0),
    "lbfgs_steps": _Int(0),
    "dtype": _Str(("float64", "float32")),
    "checkpoint_every": _Int(1),
    "optimizer": _Str(("adam", "lbfgs")),
    "max_iter": _Int(1),
    "lbfgs_patience": _Int(1),
    "warm_start": _Str(("auto", "linear", "none")),
}

_GROUP_WEIGHT = _Union(
    _Float(0.0),
    _Section({k: _Key(_Float(0.0)) for k in ("energy", "forces", "stress")}),
    what="a number >= 0 or a table with energy/forces/stress numbers")

_FIT = _Section({
    "energy_weight": _Key(_Float(0.0), default=1.0),
    "force_weight": _Key(_Float(0.0), default=1.0),
    "stress_weight": _Key(_Float(0.0), default=0.0),
    "element_force_weights": _Key(_Union(_Str(("balanced",)), _Map(_Float(0.0)),
                                         what="'balanced' or a table of element = weight")),
    "reference_energies": _Key(_Map(_Float())),
    "regularization": _Key(_Union(_Str(("auto",)), _Float(0.0),
                                  what="'auto' or a number >= 0"), default="auto"),
    "group_weights": _Key(_Map(_GROUP_WEIGHT, what="a table of group = weight(s)")),
    "nn": _Key(_Section({k: _Key(v) for k, v in NN_OPTIONS.items()},
                        reserved=MANAGED_NN_OPTIONS)),
})

_EXPORT = _Section({"lammps": _Key(_Bool(), default=False)})

SCHEMA = _Section({
    "seed": _Key(_Int(0), default=0),
    "output": _Key(_Str(), default="out"),
    "data": _Key(_DATA, required=True),
    "model": _Key(_MODEL, required=True),
    "fit": _Key(_FIT, default={}),
    "export": _Key(_EXPORT, default={}),
})


# --------------------------------------------------------------------------- dataclasses
@dataclass
class DataConfig:
    """``[data]``: resolved data files, split and label conventions."""

    train: list[pathlib.Path]
    validation: list[pathlib.Path] = field(default_factory=list)
    test: list[pathlib.Path] = field(default_factory=list)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by_group: bool = True
    labels: Any = None  # LabelSpec

    def fractions(self) -> tuple[float, float, float]:
        """Fractions for :func:`split_frames` of the ``train`` frames.

        Sets given explicitly (``validation``/``test`` files) get fraction 0;
        the rest are renormalised.
        """
        f = [self.split[0], 0.0 if self.validation else self.split[1],
             0.0 if self.test else self.split[2]]
        s = sum(f)
        return tuple(x / s for x in f)


@dataclass
class ModelConfig:
    """``[model]``: what to build (see :meth:`build`)."""

    type: str
    elements: list[str]
    descriptor: dict
    hidden: list[int] | None = None
    activations: list[str] | None = None
    committee: int = 0
    committee_method: str | None = None
    zbl: dict | None = None

    def build(self):
        """The unfitted model: SNAP family (with a ZBL baseline in a SumModel if asked)."""
        from ase_mlp.descriptors.bispectrum import Bispectrum
        from ase_mlp.models.snap import NNSNAP, LinearSNAP, QuadraticSNAP

        desc = Bispectrum(list(self.elements), **self.descriptor)
        if self.type == "linear":
            snap = LinearSNAP(desc)
        elif self.type == "quadratic":
            snap = QuadraticSNAP(desc)
        else:
            snap = NNSNAP(desc, hidden=self.hidden or (32, 32), activations=self.activations)
        if self.zbl is None:
            return snap
        from ase_mlp.models.sum import SumModel
        from ase_mlp.models.zbl import ZBL

        return SumModel(ZBL(list(self.elements), self.zbl["inner"], self.zbl["outer"],
                            z=self.zbl.get("z")), snap)


@dataclass
class FitOptions:
    """``[fit]``: loss weights and options passed to :func:`ase_mlp.training.fit`."""

    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.0
    element_force_weights: Any = None
    reference_energies: dict | None = None
    regularization: Any = "auto"
    group_weights: dict | None = None
    nn: dict = field(default_factory=dict)

    def fit_kwargs(self) -> dict:
        """Keyword arguments of :func:`ase_mlp.training.fit` (NN dtype as a torch dtype)."""
        kw = dict(energy_weight=self.energy_weight, force_weight=self.force_weight,
                  stress_weight=self.stress_weight,
                  element_force_weights=self.element_force_weights,
                  reference_energies=self.reference_energies,
                  regularization=self.regularization, group_weights=self.group_weights)
        nn = dict(self.nn)
        if "dtype" in nn:
            import torch

            nn["dtype"] = {"float64": torch.float64, "float32": torch.float32}[nn["dtype"]]
        kw.update(nn)
        return kw


@dataclass
class ExportConfig:
    """``[export]``."""

    lammps: bool = False


@dataclass
class FitConfig:
    """A validated fit configuration (see the module docstring for the schema)."""

    data: DataConfig
    model: ModelConfig
    fit: FitOptions = field(default_factory=FitOptions)
    export: ExportConfig = field(default_factory=ExportConfig)
    seed: int = 0
    output: pathlib.Path = pathlib.Path("out")
    #: the file it was read from (None for a dict)
    source: pathlib.Path | None = None

    def to_dict(self) -> dict:
        """JSON-able copy with resolved (absolute) paths; written to ``output/config.json``."""
        labels = self.data.labels
        lab = {k: getattr(labels, k) for k in ("energy", "forces", "stress", "virial",
                                               "stress_unit", "stress_sign", "weight",
                                               "group", "source", "check_magnitudes")}
        model = {k: v for k, v in vars(self.model).items() if v is not None}
        fit = {k: v for k, v in vars(self.fit).items() if v is not None and v != {}}
        return {
            "seed": self.seed, "output": str(self.output),
            "data": {"train": [str(p) for p in self.data.train],
                     "validation": [str(p) for p in self.data.validation],
                     "test": [str(p) for p in self.data.test],
                     "split": list(self.data.split),
                     "split_by_group": self.data.split_by_group, "labels": lab},
            "model": model, "fit": fit, "export": vars(self.export).copy(),
            "source": None if self.source is None else str(self.source),
        }


# --------------------------------------------------------------------------- loading
def _read_file(path: pathlib.Path) -> dict:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"{path}: reading YAML configurations needs PyYAML, which is not installed: "
                "pip install pyyaml (or pip install 'ase-mlp[yaml]'), or write the "
                "configuration in TOML (.toml)") from None
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: invalid JSON: {err}") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ConfigError(
                    f"{path}: reading TOML on Python < 3.11 needs tomli: pip install tomli"
                ) from None
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from None
    else:
        raise ConfigError(f"{path}: unknown configuration format {path.suffix!r}; use .toml, "
                          ".yaml/.yml (needs PyYAML) or .json")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a table of keys, got "
                          f"{type(data).__name__}")
    return data


def load_config(path) -> FitConfig:
    """Read and validate a fit configuration file (``.toml``, ``.yaml``/``.yml``, ``.json``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ConfigError
        Anything wrong in the file, listing every problem found (key path first).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    raw = _read_file(path)
    try:
        return config_from_dict(raw, base_dir=path.resolve().parent, source=path.resolve())
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _resolve_paths(entries, key, base: pathlib.Path, errors) -> list[pathlib.Path]:
    out: list[pathlib.Path] = []
    for k, entry in enumerate(entries or []):
        where = f"{key}[{k}]"
        expanded = os.path.expanduser(entry)
        full = expanded if os.path.isabs(expanded) else os.path.join(str(base), expanded)
        if _has_magic(entry):
            hits = sorted(glob.glob(full, recursive=True))
            if not hits:
                errors.append(f"{where}: no file matches {entry!r} (relative to {base})")
            out.extend(pathlib.Path(h) for h in hits)
        else:
            p = pathlib.Path(full)
            if not p.exists():
                errors.append(f"{where}: file not found: {entry!r} (looked for {p})")
            else:
                out.append(p)
    return out


def _element_keys(table, where, elements, errors):
    if isinstance(table, dict):
        bad = [k for k in table if k not in elements]
        for k in bad:
            near = difflib.get_close_matches(k, elements, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            errors.append(f"{where}.{k}: {k!r} is not in model.elements {elements}{hint}")


def config_from_dict(raw: dict, base_dir=".", source=None) -> FitConfig:
    """Validate a configuration given as a dict (the parsed file) into a :class:`FitConfig`.

    Relative paths are taken relative to ``base_dir``. Raises :class:`ConfigError`.
    """
    errors: list[str] = []
    cfg = SCHEMA.check(raw, "", errors)
    if errors:
        raise ConfigError(_message(errors))
    base = pathlib.Path(base_dir).resolve()

    # ---- data
    d = cfg["data"]
    split = d["split"]
    if abs(sum(split) - 1.0) > 1e-6:
        errors.append(f"data.split: fractions must sum to 1, got {split} (sum {sum(split):g})")
    if split[0] <= 0:
        errors.append(f"data.split: the training fraction must be > 0, got {split[0]}")
    train = _resolve_paths(d["train"], "data.train", base, errors)
    validation = _resolve_paths(d["validation"], "data.validation", base, errors)
    test = _resolve_paths(d["test"], "data.test", base, errors)
    from ase_mlp.training.data import LabelSpec

    labels = None
    try:
        labels = LabelSpec(**d["labels"])
    except ValueError as err:
        errors.append(f"data.labels: {str(err).replace('LabelSpec.', '')}")

    # ---- model
    m = cfg["model"]
    elements = m["elements"]
    from ase_mlp._util import check_elements

    try:
        check_elements(elements)
    except ValueError as err:
        errors.append(f"model.elements: {err}")
    mtype = m["type"]
    if mtype != "nn":
        for key in ("hidden", "activations"):
            if m.get(key) is not None:
                errors.append(f"model.{key}: only for model.type = 'nn' (type is {mtype!r})")
    else:
        hidden = m.get("hidden") or [32, 32]
        acts = m.get("activations")
        if acts is not None:
            if len(acts) != len(hidden) + 1:
                errors.append(f"model.activations: need {len(hidden) + 1} entries (one per "
                              f"hidden layer and the output layer), got {len(acts)}")
            elif acts[-1] != "linear":
                errors.append(f"model.activations: the output layer must be 'linear' for "
                              f"training, got {acts[-1]!r}")
    if m["committee"] == 1:
        errors.append("model.committee: a committee needs >= 2 members (0: no committee)")
    if m.get("committee_method") is not None and m["committee"] < 2:
        errors.append("model.committee_method: only with model.committee >= 2")
    desc = m["descriptor"]
    for key in ("radii", "weights", "sinner", "dinner"):
        _element_keys(desc.get(key), f"model.descriptor.{key}", elements, errors)
    zbl = m.get("zbl")
    if zbl is not None:
        if zbl["inner"] > zbl["outer"]:
            errors.append(f"model.zbl: need inner <= outer, got inner={zbl['inner']}, "
                          f"outer={zbl['outer']}")
        _element_keys(zbl.get("z"), "model.zbl.z", elements, errors)
    model_cfg = ModelConfig(type=mtype, elements=list(elements), descriptor=dict(desc),
                            hidden=(m.get("hidden") or [32, 32]) if mtype == "nn" else None,
                            activations=m.get("activations"), committee=m["committee"],
                            committee_method=m.get("committee_method"), zbl=zbl)
    if not errors:
        try:  # constructs the descriptor: catches e.g. rmin0 above the cutoff
            model_cfg.build()
        except (ValueError, TypeError) as err:
            errors.append(f"model: {err}")

    # ---- fit
    f = cfg["fit"]
    _element_keys(f.get("reference_energies"), "fit.reference_energies", elements, errors)
    _element_keys(f.get("element_force_weights"), "fit.element_force_weights", elements, errors)
    if f["energy_weight"] == f["force_weight"] == f["stress_weight"] == 0:
        errors.append("fit: energy_weight, force_weight and stress_weight are all zero")
    if f.get("nn") and mtype != "nn":
        errors.append(f"fit.nn: only for model.type = 'nn' (type is {mtype!r})")
    if mtype == "nn" and f["regularization"] != "auto":
        errors.append("fit.regularization: only for linear and quadratic models (use "
                      "fit.nn.weight_decay for nn)")
    if errors:
        raise ConfigError(_message(errors))

    output = pathlib.Path(os.path.expanduser(cfg["output"]))
    if not output.is_absolute():
        output = base / output
    return FitConfig(
        data=DataConfig(train=train, validation=validation, test=test, split=tuple(split),
                        split_by_group=d["split_by_group"], labels=labels),
        model=model_cfg,
        fit=FitOptions(energy_weight=f["energy_weight"], force_weight=f["force_weight"],
                       stress_weight=f["stress_weight"],
                       element_force_weights=f.get("element_force_weights"),
                       reference_energies=f.get("reference_energies"),
                       regularization=f["regularization"],
                       group_weights=f.get("group_weights"), nn=dict(f.get("nn") or {})),
        export=ExportConfig(**cfg["export"]),
        seed=cfg["seed"], output=output,
        source=None if source is None else pathlib.Path(source))


def _message(errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    return f"{len(errors)} problems:\n  " + "\n  ".join(errors)


def run_fit(config, *, resume: bool = False, progress: bool = True, plots: bool = True,
            echo: bool = True) -> dict:
    """Run the fit a configuration describes; see :func:`ase_mlp.training.workflow.run_fit`."""
    from ase_mlp.training.workflow import run_fit as _run_fit

    return _run_fit(config, resume=resume, progress=progress, plots=plots, echo=echo)
