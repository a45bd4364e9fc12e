"""Cell-metadynamics workflow: ``ase-mlp metad CONFIG`` and :func:`run_metad`.

A configuration file (TOML, YAML or JSON; see :func:`load_metad_config`) describes one
:class:`~ase_mlp.dynamics.CellMetadynamics` run: start structure, model, pressure,
temperature, Gaussians, thermostat, fingerprint and stopping rule. The whole file is
validated *before* any work is done; every problem is reported at once with its key
(unknown keys get a "did you mean" suggestion), as :class:`ConfigError`.

Keys (those marked *required* must be given; relative paths of ``structure`` and ``model``
are relative to the directory of the configuration file, ``output`` to the current working
directory)::

    structure = "GaN_wz.vasp"     # required: start structure, any format ASE reads
    index = -1                    # frame of `structure` (default: the last one)
    repeat = [1, 1, 1]            # supercell of the structure
    model = ["GaN.pt"]            # model file(s) (ours, LAMMPS .snap wrapper, .snapcoeff +
                                  # .snapparam, ML-IAP pair); default: the embedded GaN model
    device = "cpu"                # cpu or cuda (default: cuda if available)
    dtype = "float64"             # or "float32"
    pressure_GPa = 50.0           # required: external hydrostatic pressure (GPa)
    temperature_K = 300.0         # MD temperature (K)
    gaussian_height = 0.05        # required: W (eV)
    gaussian_width = 0.05         # required: ds (Å; eV^1/2 with scaling = "hessian"), also
                                  # the metastep length
    metasteps = 100               # required: total number of metasteps (a restart continues
                                  # up to this number)
    md_steps = 1000               # MD steps per metastep (max FIRE steps with "relax")
    timestep_fs = 1.0             # MD time step (fs)
    discard = 0.5                 # fraction of each MD segment discarded before averaging
    thermostat = "langevin"       # "langevin", "bussi", "relax" (T = 0, relaxed atoms) or
                                  # "none" (T = 0, static stress)
    friction_per_fs = 0.01        # Langevin friction / inverse Bussi time constant (1/fs)
    cv = "triangular"             # or "symmetric": the six cell collective variables
    scaling = "none"              # or "hessian": scaled CVs (Martoňák et al. 2005)
    hessian_delta = 0.01          # finite-difference step of the Hessian (Å)
    relax_first = true            # relax positions + cell at pressure_GPa before starting
    relax_fmax = 0.001            # its force criterion (eV/Å)
    relax_steps = 1000            # its maximum number of optimiser steps
    phases = "none"               # "AB" (binary compounds) or "group14": log the mean
                                  # coordination and phase fractions every metastep
    coordination_cutoff = 2.6     # bond cutoff of the phase fingerprint (Å), or a table
                                  # {"Ga-N" = 2.6}; default: 1.25 x covalent radii
    seed = 0                      # initial velocities and thermostat noise
    output = "metad"              # output directory
    checkpoint_interval = 10      # metasteps between checkpoints (and one at the end)
    xrd = true                    # powder patterns of the start and final structures

    [stop_when]                   # optional: stop after the first metastep at which every
    "f_rocksalt" = 0.9            # condition holds; a number means ">=", a string may give
    cn_mean = ">= 5.5"            # the comparison: "<= 4.5", "< 4.5", ">= 5.5", "> 5.5"

Outputs in ``output``: ``metad.log`` (one line per metastep,
:class:`~ase_mlp.dynamics.metad.MetadynamicsLogger`), ``metad.traj`` (the start and one frame
after each metastep; ``atoms.info["metastep"]`` is the number of metasteps done),
``checkpoint.npz`` (:meth:`~ase_mlp.dynamics.CellMetadynamics.save_state`),
``history.json`` (``CellMetadynamics.history``), ``run.json`` (the configuration used),
``metad.png`` (:func:`~ase_mlp.analysis.plot_metad`), ``xrd.csv`` and ``xrd.png`` (powder
patterns of the start and final structures).

Restarts (``restart=True``, ``ase-mlp metad CONFIG --restart``) continue from
``checkpoint.npz`` up to ``metasteps`` in total and append to the log and trajectory (lines
and frames written after the checkpoint by a run that died are dropped first). They are
bit-for-bit continuations: the history of a run of 3 metasteps restarted to 5 equals that
of an unsplit run of 5. Settings that change the physics (structure, model, pressure,
Gaussians, thermostat, ...) must not change between the two; ``metasteps``, ``output``,
``checkpoint_interval``, ``stop_when``, ``xrd`` and ``device`` may. A partial or garbled
last log line of a run that died is dropped, a truncated checkpoint or trajectory is
reported with the file and what to do, and temporary ``*.tmp`` files of a failed write are
removed (on failure and on restart). Coordination cutoffs may only name elements of the
structure.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
import pathlib
import re
import time
from dataclasses import dataclass, field

import numpy as np
from ase import units

from ase_mlp._util import thermalize
from ase_mlp.training.config import (
    ConfigError,
    _Bool,
    _Float,
    _Int,
    _Key,
    _List,
    _Map,
    _message,
    _OptStr,
    _read_file,
    _Section,
    _Str,
    _Union,
)


__all__ = ["ConfigError", "MetadConfig", "load_metad_config", "metad_config_from_dict",
           "run_metad"]

THERMOSTATS = ("langevin", "bussi", "relax", "none")
PHASE_KINDS = ("AB", "group14", "none")

SCHEMA = _Section({
    "structure": _Key(_Str(), required=True),
    "index": _Key(_Int(), default=-1),
    "repeat": _Key(_List(_Int(1), length=3), default=[1, 1, 1]),
    "model": _Key(_List(_Str(), min_length=1, scalar_ok=True), default=None),
    "device": _Key(_OptStr(), default=None),
    "dtype": _Key(_Str(("float64", "float32")), default="float64"),
    "pressure_GPa": _Key(_Float(), required=True),
    "temperature_K": _Key(_Float(minimum=0.0), default=300.0),
    "gaussian_height": _Key(_Float(positive=True), required=True),
    "gaussian_width": _Key(_Float(positive=True), required=True),
    "metasteps": _Key(_Int(1), required=True),
    "md_steps": _Key(_Int(1), default=1000),
    "timestep_fs": _Key(_Float(positive=True), default=1.0),
    "discard": _Key(_Float(minimum=0.0), default=0.5),
    "thermostat": _Key(_Str(THERMOSTATS), default="langevin"),
    "friction_per_fs": _Key(_Float(positive=True), default=0.01),
    "cv": _Key(_Str(("triangular", "symmetric")), default="triangular"),
    "scaling": _Key(_Str(("none", "hessian")), default="none"),
    "hessian_delta": _Key(_Float(positive=True), default=0.01),
    "relax_first": _Key(_Bool(), default=True),
    "relax_fmax": _Key(_Float(positive=True), default=1e-3),
    "relax_steps": _Key(_Int(1), default=1000),
    "phases": _Key(_Str(PHASE_KINDS), default="none"),
    "coordination_cutoff": _Key(_Union(_Float(positive=True), _Map(_Float(positive=True)),
                                       what="a number > 0 (Å) or a table of "
                                            "\"A-B\" = cutoff"), default=None),
    "stop_when": _Key(_Map(_Union(_Float(), _Str()),
                           what="a table of fingerprint key = threshold"), default=None),
    "seed": _Key(_Int(0), default=0),
    "output": _Key(_Str(), default="metad"),
    "checkpoint_interval": _Key(_Int(1), default=10),
    "xrd": _Key(_Bool(), default=True),
})

#: temporary files of the atomic writes, removed on restart
_TMP_NAMES = ("checkpoint.npz.tmp", "metad.log.tmp", "metad.traj.tmp", "history.json.tmp",
              "run.json.tmp")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_COND = re.compile(r"^\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
#: settings that must not change between a run and its restart
_FIXED_ON_RESTART = ("structure", "index", "repeat", "model", "calculator", "dtype",
                     "pressure_GPa", "temperature_K", "gaussian_height", "gaussian_width",
                     "md_steps", "timestep_fs", "discard", "thermostat", "friction_per_fs",
                     "cv", "scaling", "hessian_delta", "phases", "coordination_cutoff")


@dataclass
class MetadConfig:
    """A validated metadynamics configuration (see the module docstring for the keys).

    Paths are resolved: ``structure`` and ``model`` against the configuration file's
    directory, ``output`` as given (relative to the working directory). ``stop_when`` maps
    fingerprint keys to ``(operator, threshold)``, operator one of ``>=``, ``>``, ``<=``,
    ``<``; ``coordination_cutoff`` is a float, a ``{(A, B): cutoff}`` dict or None.
    """

    structure: pathlib.Path
    pressure_GPa: float
    gaussian_height: float
    gaussian_width: float
    metasteps: int
    index: int = -1
    repeat: tuple = (1, 1, 1)
    model: list | None = None
    device: str | None = None
    dtype: str = "float64"
    temperature_K: float = 300.0
    md_steps: int = 1000
    timestep_fs: float = 1.0
    discard: float = 0.5
    thermostat: str = "langevin"
    friction_per_fs: float = 0.01
    cv: str = "triangular"
    scaling: str = "none"
    hessian_delta: float = 0.01
    relax_first: bool = True
    relax_fmax: float = 1e-3
    relax_steps: int = 1000
    phases: str = "none"
    coordination_cutoff: float | dict | None = None
    stop_when: dict | None = None
    seed: int = 0
    output: pathlib.Path = field(default_factory=lambda: pathlib.Path("metad"))
    checkpoint_interval: int = 10
    xrd: bool = True
    source: pathlib.Path | None = None

    def to_dict(self) -> dict:
        """Plain (JSON-able) form, as written to ``run.json``."""
        cut = self.coordination_cutoff
        if isinstance(cut, dict):
            cut = {f"{a}-{b}": v for (a, b), v in sorted(cut.items()) if a <= b}
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(structure=str(self.structure), repeat=list(self.repeat),
                 model=None if self.model is None else [str(m) for m in self.model],
                 coordination_cutoff=cut, output=str(self.output),
                 stop_when=None if self.stop_when is None else
                 {k: f"{op} {v!r}" for k, (op, v) in self.stop_when.items()},
                 source=None if self.source is None else str(self.source))
        return d


# --------------------------------------------------------------------------- loading
def load_metad_config(path) -> MetadConfig:
    """Read and validate a metadynamics configuration (``.toml``, ``.yaml``/``.yml``,
    ``.json``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ConfigError
        Anything wrong in the file, listing every problem found (key first).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    raw = _read_file(path)
    try:
        return metad_config_from_dict(raw, base_dir=path.resolve().parent,
                                      source=path.resolve())
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _fingerprint_keys(kind: str) -> list[str]:
    from ase_mlp.analysis.phases import AB_PHASES, GROUP14_PHASES

    names = AB_PHASES if kind == "AB" else GROUP14_PHASES
    return ["cn_mean"] + ["f_" + n.replace(" ", "_") for n in names]


def _parse_stop(raw: dict, phases: str, errors: list) -> dict | None:
    if raw is None:
        return None
    if phases == "none":
        errors.append("stop_when: needs a fingerprint: set phases = \"AB\" or \"group14\"")
        return None
    if not raw:
        errors.append("stop_when: empty table (leave the key out for no stopping rule)")
        return None
    known = _fingerprint_keys(phases)
    out = {}
    for key, value in raw.items():
        where = f"stop_when.{key}"
        if key not in known:
            import difflib

            near = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            errors.append(f"{where}: unknown fingerprint key for phases = {phases!r}; {hint}"
                          f"known keys: {', '.join(known)}")
            continue
        if isinstance(value, str):
            m = _COND.match(value)
            try:
                out[key] = (m.group(1), float(m.group(2))) if m else None
            except ValueError:
                out[key] = None
            if out[key] is None or not np.isfinite(out[key][1]):
                errors.append(f"{where}: expected a number (meaning >=) or a comparison such "
                              f"as \">= 0.9\" or \"< 4.5\", got {value!r}")
        else:
            out[key] = (">=", float(value))
    return out


def _parse_cutoff(raw, errors: list):
    if not isinstance(raw, dict):
        return raw
    out = {}
    for key, value in raw.items():
        pair = str(key).split("-")
        if len(pair) != 2 or not all(pair):
            errors.append(f"coordination_cutoff.{key}: expected a pair of elements such as "
                          f"\"Ga-N\"")
            continue
        a, b = pair
        out[(a, b)] = out[(b, a)] = float(value)
    return out


def _resolve(entry: str, base: pathlib.Path, where: str, errors: list) -> pathlib.Path:
    expanded = os.path.expanduser(entry)
    p = pathlib.Path(expanded if os.path.isabs(expanded) else base / expanded).resolve()
    if not p.exists():
        errors.append(f"{where}: file not found: {entry!r} (looked for {p})")
    return p


def metad_config_from_dict(raw: dict, base_dir=".", source=None) -> MetadConfig:
    """Validate a configuration given as a dict (the parsed file) into a :class:`MetadConfig`.

    Relative ``structure`` and ``model`` paths are taken relative to ``base_dir``. Raises
    :class:`ConfigError` listing every problem.
    """
    errors: list[str] = []
    cfg = SCHEMA.check(raw, "", errors)
    if errors:
        raise ConfigError(_message(errors))
    if not cfg["discard"] < 1.0:
        errors.append(f"discard: expected a number >= 0 and < 1, got {cfg['discard']}")
    if abs(cfg["pressure_GPa"]) * units.GPa > 1.0:
        errors.append(f"pressure_GPa: {cfg['pressure_GPa']:g} GPa is implausible (more than "
                      f"160 GPa)")
    base = pathlib.Path(base_dir).resolve()
    structure = _resolve(cfg["structure"], base, "structure", errors)
    model = None
    if cfg["model"] is not None:
        model = [_resolve(m, base, f"model[{k}]", errors) for k, m in enumerate(cfg["model"])]
    stop = _parse_stop(cfg["stop_when"], cfg["phases"], errors)
    cutoff = _parse_cutoff(cfg["coordination_cutoff"], errors)
    if errors:
        raise ConfigError(_message(errors))
    cfg.update(structure=structure, model=model, stop_when=stop, coordination_cutoff=cutoff,
               repeat=tuple(cfg["repeat"]), output=pathlib.Path(cfg["output"]),
               source=None if source is None else pathlib.Path(source))
    return MetadConfig(**cfg)


# --------------------------------------------------------------------------- set-up
def _read_start(cfg: MetadConfig):
    from ase.io import read

    atoms = read(cfg.structure, index=cfg.index)
    if len(atoms) == 0:
        raise ValueError(f"{cfg.structure}: no atoms")
    if not atoms.pbc.all() or atoms.cell.rank != 3:
        raise ValueError(f"{cfg.structure}: cell metadynamics needs a 3D periodic structure "
                         f"(pbc {atoms.pbc.tolist()}, cell rank {atoms.cell.rank}); write it "
                         f"with its lattice (e.g. extxyz with Lattice=..., POSCAR, CIF)")
    if tuple(cfg.repeat) != (1, 1, 1):
        atoms = atoms.repeat(tuple(cfg.repeat))
    atoms.calc = None
    atoms.constraints = []
    return atoms


def _model_calculator(cfg: MetadConfig):
    from ase_mlp.cli import _calculator

    return _calculator(cfg.model, cfg.device, cfg.dtype)


def _fingerprint(cfg: MetadConfig):
    if cfg.phases == "none":
        return None
    from ase_mlp.analysis import PhaseFingerprint

    return PhaseFingerprint(cfg.phases, cutoffs=cfg.coordination_cutoff)


def _stop_held(stop: dict | None, fp: dict) -> bool:
    return bool(stop) and all(_OPS[op](fp[k], v) for k, (op, v) in stop.items())


def _describe_stop(stop: dict) -> str:
    return ", ".join(f"{k} {op} {v:g}" for k, (op, v) in stop.items())


def _settings(cfg: MetadConfig, calc_name: str | None) -> dict:
    d = cfg.to_dict()
    d["calculator"] = calc_name
    return d


def _check_restart_settings(path: pathlib.Path, mine: dict, log) -> None:
    if not path.exists():
        log(f"note: {path} not found; cannot check that the settings match the first run")
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        from ase_mlp.workflows.md import TruncatedFileError

        raise TruncatedFileError(f"{path} is truncated or corrupt ({err}); remove it to "
                                 f"restart without checking the settings") from None
    diff = [f"{k} {saved.get(k)!r} (first run) vs {mine.get(k)!r}"
            for k in _FIXED_ON_RESTART if saved.get(k) != mine.get(k)]
    if diff:
        raise ValueError("restart: these settings differ from the run being continued ("
                         + str(path) + "): " + "; ".join(diff))


def _trim_outputs(log_path: pathlib.Path, traj_path: pathlib.Path, nsteps: int) -> int:
    """Drop log lines and frames written after the checkpoint (metastep ``nsteps``)."""
    from ase_mlp.workflows.md import _trim_trajectory

    dropped = 0
    if log_path.exists():
        lines = log_path.read_text(encoding="utf-8").splitlines(keepends=True)

        def kept(ln: str) -> bool:
            if not ln.endswith("\n"):
                return False          # a partial last line (the run died while writing it)
            if ln.startswith("#") or not ln.strip():
                return True
            try:
                return int(ln.split()[0]) < nsteps
            except ValueError:
                return False          # a garbled line

        keep = [ln for ln in lines if kept(ln)]
        if len(keep) < len(lines):
            dropped += len(lines) - len(keep)
            _write_text(log_path, "".join(keep))
    return dropped + _trim_trajectory(traj_path, nsteps, key="metastep")


def _write_text(path: pathlib.Path, text: str) -> None:
    """Atomic write of ``path`` (the temporary file is removed if the write fails)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(path: pathlib.Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=1) + "\n")


def _check_cutoff_elements(cfg: MetadConfig, atoms) -> None:
    """Refuse coordination cutoffs for elements the structure lacks (typos, wrong file)."""
    cut = cfg.coordination_cutoff
    if not isinstance(cut, dict):
        return
    present = set(atoms.get_chemical_symbols())
    for a, b in sorted(cut):
        for el in (a, b):
            if el not in present:
                raise ValueError(
                    f"coordination_cutoff.{a}-{b}: element {el!r} is not in the structure "
                    f"{cfg.structure} (elements {sorted(present)}); give cutoffs only for "
                    f"pairs of its elements")


def _xrd(start, final, csv_path, png_path, log) -> list:
    from ase_mlp.analysis import powder_pattern

    pats = {name: powder_pattern(a) for name, a in (("start", start), ("final", final))
            if a is not None}
    if not pats:
        return []
    tt = next(iter(pats.values())).two_theta
    names = list(pats)
    np.savetxt(csv_path, np.column_stack([tt] + [pats[k].intensity for k in names]),
               delimiter=",", header=",".join(["two_theta_deg"] + [f"I_{k}" for k in names]),
               comments="", fmt="%.8g")
    wrote = [csv_path]
    if png_path is None:
        return wrote
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log("plot skipped: matplotlib is not installed (pip install 'ase-mlp[plot]')")
        return wrote
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot(111)
    for k, name in enumerate(names):
        ax.plot(tt, pats[name].intensity + 110 * k, label=name)
    ax.set_xlabel("2θ (degrees, Cu Kα1)")
    ax.set_ylabel("intensity (offset)")
    ax.legend()
    fig.savefig(png_path, dpi=120)
    return wrote + [png_path]


# --------------------------------------------------------------------------- run
def run_metad(config, *, calc=None, restart: bool = False, progress: bool = True,
              plots: bool = True, log=print) -> dict:
    """Run the cell metadynamics a configuration describes; returns a summary dict.

    Parameters
    ----------
    config : MetadConfig or path
        A validated configuration, or a file for :func:`load_metad_config`.
    calc : ASE calculator, optional
        Use this calculator (with stress) instead of the configuration's ``model``.
    restart : bool
        Continue from ``<output>/checkpoint.npz`` (bit-for-bit) up to ``metasteps``.
    progress : bool
        tqdm progress bar over the metasteps.
    plots : bool
        Write ``metad.png`` and ``xrd.png`` (needs matplotlib; skipped with a message
        without it).
    log : callable
        For messages.

    Returns
    -------
    dict
        ``metasteps_run`` (this call), ``metasteps`` (in total), ``stopped_early``,
        ``stop_metastep`` (the first metastep of this call at which ``stop_when`` held, or
        None), ``natoms``, ``H_initial_per_atom``, ``H_final_per_atom`` (eV),
        ``V_initial_per_atom``, ``V_final_per_atom`` (Å³; the first and last metastep of the
        history), ``final_fingerprint``, ``wall_s`` and ``outputs`` (name -> path).
    """
    from tqdm.auto import tqdm

    from ase_mlp.dynamics import CellMetadynamics
    from ase_mlp.workflows.phases import enthalpy_per_atom

    cfg = config if isinstance(config, MetadConfig) else load_metad_config(config)
    out = pathlib.Path(cfg.output)
    paths = {"log": out / "metad.log", "trajectory": out / "metad.traj",
             "checkpoint": out / "checkpoint.npz", "history": out / "history.json",
             "settings": out / "run.json"}
    ckpt = paths["checkpoint"]
    if restart and not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint to restart from: {ckpt}")
    atoms = _read_start(cfg)
    _check_cutoff_elements(cfg, atoms)
    if calc is None:
        calc = _model_calculator(cfg)
        calc_name = None
    else:
        calc_name = type(calc).__name__
    elements = getattr(calc, "elements", None)
    if elements is not None:
        missing = sorted(set(atoms.get_chemical_symbols()) - set(elements))
        if missing:
            raise ValueError(f"{cfg.structure}: the model covers {list(elements)}, not "
                             f"{missing}")
    fingerprint = _fingerprint(cfg)
    if fingerprint is not None:
        fingerprint(atoms)      # fails now, not after the first metastep (e.g. AB, 1 species)
    settings = _settings(cfg, calc_name)
    n = len(atoms)
    rng = np.random.default_rng(cfg.seed)
    hessian = None
    if restart:
        from ase_mlp.workflows.md import _check_npz, _remove_stale_tmp

        _remove_stale_tmp(out, _TMP_NAMES, log)
        _check_restart_settings(paths["settings"], settings, log)
        _check_npz(ckpt)
        with np.load(ckpt, allow_pickle=False) as z:
            start = int(z["nsteps"])
            if cfg.scaling == "hessian" and z["hessian"].shape == (6, 6):
                hessian = z["hessian"].copy()   # not recomputed at the unrelaxed start
        dropped = _trim_outputs(paths["log"], paths["trajectory"], start)
        if dropped:
            log(f"dropped {dropped} log lines/frames written after the checkpoint "
                f"(metastep {start})")
    else:
        start = 0
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metad.log", "metad.traj", "checkpoint.npz", "history.json", "run.json",
                     "metad.png", "xrd.png", "xrd.csv"):
            (out / name).unlink(missing_ok=True)
        _write_json(paths["settings"], settings)
        if cfg.relax_first:
            v0 = atoms.get_volume() / n
            try:
                atoms = relaxed = _relax(atoms, calc, cfg)
            except RuntimeError as err:
                raise ValueError(f"{err}; raise relax_steps or relax_fmax, or set "
                                 f"relax_first = false") from None
            log(f"relaxed at {cfg.pressure_GPa:g} GPa: V {v0:.4f} -> "
                f"{relaxed.get_volume() / n:.4f} Å^3/atom, H "
                f"{enthalpy_per_atom(relaxed, cfg.pressure_GPa):.5f} eV/atom")
        if cfg.thermostat in ("langevin", "bussi"):
            thermalize(atoms, cfg.temperature_K, rng)  # no ZeroRotation in a periodic cell
        else:
            atoms.set_momenta(np.zeros((n, 3)))
    atoms.calc = calc
    thermostat = None if cfg.thermostat == "none" else cfg.thermostat
    scaling = None if cfg.scaling == "none" else (hessian if hessian is not None else "hessian")
    dyn = CellMetadynamics(
        atoms, pressure_GPa=cfg.pressure_GPa, temperature_K=cfg.temperature_K,
        gaussian_height=cfg.gaussian_height, gaussian_width=cfg.gaussian_width,
        md_steps=cfg.md_steps, discard=cfg.discard, timestep=cfg.timestep_fs * units.fs,
        thermostat=thermostat, friction=cfg.friction_per_fs / units.fs, cv=cfg.cv,
        scaling=scaling, hessian_delta=cfg.hessian_delta, fingerprint=fingerprint, rng=rng,
        logfile=str(paths["log"]), trajectory=str(paths["trajectory"]),
        append_trajectory=restart)
    try:
        if restart:
            dyn.load_state(ckpt)
            done = [r["metastep"] for r in dyn.history
                    if _stop_held(cfg.stop_when, r.get("fingerprint") or {})]
            if done:
                log(f"note: stop_when ({_describe_stop(cfg.stop_when)}) held at metastep "
                    f"{done[0]} before the checkpoint; continuing")

        def tag():  # runs before the trajectory writer: frame k has info["metastep"] = k
            atoms.info["metastep"] = int(dyn.nsteps)

        dyn.insert_observer(tag, position=0)
        todo = max(cfg.metasteps - dyn.nsteps, 0)
        therm = "T = 0, static stress" if thermostat is None else (
            "T = 0, relaxed atoms" if thermostat == "relax" else
            f"{thermostat} {cfg.temperature_K:g} K, {cfg.md_steps} x {cfg.timestep_fs:g} fs")
        log(f"{atoms.get_chemical_formula()}, {n} atoms; cell metadynamics at "
            f"{cfg.pressure_GPa:g} GPa ({therm}), W = {cfg.gaussian_height:g} eV, "
            f"ds = {cfg.gaussian_width:g}; {todo} metasteps"
            + (f" from metastep {dyn.nsteps}" if restart else ""))
        if todo == 0:
            log(f"nothing to run: the checkpoint is at metastep {dyn.nsteps} of "
                f"{cfg.metasteps} (raise metasteps or use --metasteps to continue)")
        stop_at = None
        t0 = time.perf_counter()
        with tqdm(total=todo, desc="metad", unit="metastep", disable=not progress) as bar:
            last = dyn.nsteps
            saved = start
            try:
                for _ in dyn.irun(todo):
                    if dyn.nsteps == last:        # the initial yield, before any metastep
                        continue
                    last = dyn.nsteps
                    rec = dyn.history[-1]
                    fp = rec.get("fingerprint") or {}
                    post = f"H={rec['H'] / n:.4f} eV/atom V={rec['volume'] / n:.3f} Å³/atom"
                    for k in cfg.stop_when or {}:
                        post += f" {k}={fp[k]:.3g}"
                    bar.set_postfix_str(post, refresh=False)
                    bar.update(1)
                    if dyn.nsteps % cfg.checkpoint_interval == 0:
                        _save_state(dyn, ckpt)
                        _write_json(paths["history"], dyn.history)
                        saved = dyn.nsteps
                    if _stop_held(cfg.stop_when, fp):
                        stop_at = int(rec["metastep"])
                        break
            except FloatingPointError as err:   # e.g. a collapsed cell: no traceback
                where = (f"the last checkpoint ({ckpt}) is at metastep {saved}"
                         if ckpt.exists() else "no checkpoint was written")
                raise ValueError(f"{err}; {where}") from None
        wall = time.perf_counter() - t0
        _save_state(dyn, ckpt)
        _write_json(paths["history"], dyn.history)
    finally:
        dyn.close()
    ran = dyn.nsteps - start
    hist = dyn.history
    summary = {
        "metasteps_run": int(ran), "metasteps": int(dyn.nsteps),
        "stopped_early": stop_at is not None, "stop_metastep": stop_at, "natoms": n,
        "H_initial_per_atom": hist[0]["H"] / n if hist else None,
        "H_final_per_atom": hist[-1]["H"] / n if hist else None,
        "V_initial_per_atom": hist[0]["volume"] / n if hist else None,
        "V_final_per_atom": hist[-1]["volume"] / n if hist else None,
        "final_fingerprint": dict(hist[-1].get("fingerprint") or {}) if hist else {},
        "wall_s": wall, "outputs": {k: str(v) for k, v in paths.items()},
    }
    if ran:
        log(f"{ran} metasteps in {wall:.1f} s ({wall / ran:.2f} s/metastep): H "
            f"{summary['H_initial_per_atom']:.5f} -> {summary['H_final_per_atom']:.5f} eV/atom, "
            f"V {summary['V_initial_per_atom']:.4f} -> {summary['V_final_per_atom']:.4f} "
            f"Å^3/atom")
    if stop_at is not None:
        fp = summary["final_fingerprint"]
        log(f"stopped after metastep {stop_at}: " + ", ".join(
            f"{k} = {fp[k]:.4g} ({op} {v:g})" for k, (op, v) in cfg.stop_when.items()))
    wrote = [paths["log"], paths["trajectory"], ckpt, paths["history"]]
    if plots and hist:
        try:
            from ase_mlp.analysis import plot_metad

            plot_metad(hist, out / "metad.png")
            summary["outputs"]["plot"] = str(out / "metad.png")
            wrote.append(out / "metad.png")
        except ImportError as err:
            log(f"plot skipped: {err}")
    if cfg.xrd:
        start_atoms = _first_frame(paths["trajectory"])
        if start_atoms is None:
            log(f"note: no start structure in {paths['trajectory']}; XRD of the final one only")
        files = _xrd(start_atoms, atoms.copy(), out / "xrd.csv",
                     out / "xrd.png" if plots else None, log)
        for p in files:
            summary["outputs"][p.stem + "_" + p.suffix[1:]] = str(p)
        wrote.extend(files)
    log("wrote " + ", ".join(str(p) for p in wrote))
    return summary


def _save_state(dyn, ckpt: pathlib.Path) -> None:
    from ase_mlp.workflows.md import _cleanup_tmp

    with _cleanup_tmp(ckpt):      # no 0-byte checkpoint.npz.tmp after a failed write
        dyn.save_state(ckpt)


def _relax(atoms, calc, cfg: MetadConfig):
    from ase_mlp.workflows.phases import relax_at_pressure

    return relax_at_pressure(atoms, calc, cfg.pressure_GPa, fmax=cfg.relax_fmax,
                             steps=cfg.relax_steps)


def _first_frame(path: pathlib.Path):
    from ase.io.trajectory import Trajectory

    try:
        with Trajectory(path) as tr:
            return tr[0] if len(tr) else None
    except (OSError, ValueError, IndexError):
        return None
