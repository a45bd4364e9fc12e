"""Training data: reading, labelling, validating and splitting labelled structures.

Every reader returns *standard labelled* :class:`ase.Atoms`: copies carrying their labels in one
place only, a :class:`~ase.calculators.singlepoint.SinglePointCalculator` holding ``energy``
(eV), ``forces`` (eV/Å, shape ``(N, 3)``) and ``stress`` (ASE Voigt order xx, yy, zz, yz, xz, xy,
eV/Å³, tensile positive), plus ``info["weight"]`` and the group name in ``info["group"]`` and
``info["config_type"]`` (the key the default :class:`LabelSpec` reads).

Raw data sets differ in where they put labels and in which units and sign they give the stress;
a :class:`LabelSpec` describes that once, and :func:`labels_of` / :func:`read_frames` convert to
ASE conventions. Example (FitSNAP extxyz files, stress in bar with the VASP sign)::

    spec = LabelSpec(stress_unit="bar", stress_sign="compressive")
    frames = read_frames(sorted(pathlib.Path("Ta").glob("*.xyz")), spec=spec)
    validate_frames(frames, elements=["Ta"], require=("energy", "forces", "stress"))
    train, val, test = split_frames(frames, (0.8, 0.1, 0.1), seed=0)
"""

from __future__ import annotations

import copy
import math
import os
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers
from ase.io.formats import string2index
from ase.stress import full_3x3_to_voigt_6_stress


__all__ = [
    "DataError",
    "LabelSpec",
    "Labels",
    "label",
    "labels_of",
    "read_deepmd",
    "read_frames",
    "reference_energies_from_isolated",
    "split_frames",
    "validate_frames",
    "check_label_magnitudes",
]

# stress unit -> factor to eV/Å^3; keys are normalised with _norm_unit
_STRESS_UNITS = {
    "ev/a^3": 1.0,
    "gpa": units.GPa,
    "kbar": 0.1 * units.GPa,
    "bar": 1e-4 * units.GPa,
}
_STRESS_SIGNS = ("ase", "compressive")

#: plausibility limits of labels in ASE units (:func:`check_label_magnitudes`)
MAX_ENERGY_PER_ATOM = 1e6  # eV/atom: beyond any total energy, all-electron ones included
MAX_FORCE = 500.0  # eV/Å, unless the atom has a close contact
CLOSE_CONTACT = 0.75  # close contact: distance < this x the sum of covalent radii
MIN_STRESS_BOUND = 1.0  # eV/Å^3 (160 GPa): the bound at and above the reference volume
#: compressed cells: Vinet pressure with these B0 (eV/Å^3, 480 GPa, stiffer than diamond) and
#: B0' at v / v_ref, v_ref = the volume of the atoms' covalent-radius spheres
_BOUND_B0, _BOUND_B0P = 3.0, 6.0
_SOURCES = ("auto", "calc", "info")
_LABEL_NAMES = ("energy", "forces", "stress")
_SPLIT_NAMES = ("train", "validation", "test")
_MAX_LISTED = 5


class DataError(ValueError):
    """Bad training data; message names the file/frame index and the problem."""


def _norm_unit(unit: str) -> str:
    u = unit.strip().lower().replace(" ", "").replace("å", "a").replace("**", "^")
    if u in ("ev/a3", "ev/ang^3", "ev/ang3", "ev/angstrom^3"):
        u = "ev/a^3"
    return u


@dataclass
class LabelSpec:
    """Where the labels of raw structures are and in which units/sign the stress is given.

    Parameters
    ----------
    energy : str
        Key of the total energy (eV): a calculator result or an ``atoms.info`` key.
    forces : str
        Key of the forces (eV/Å): a calculator result or an ``atoms.arrays`` key.
    stress : str or None
        Key of the stress: a calculator result or an ``atoms.info`` key, with 6 (Voigt, ASE
        order), 9 or 3x3 values. ``None``: no stress is read.
    virial : str or None
        Alternative ``atoms.info`` (or calculator result) key of the virial in eV
        (``virial = -stress * volume``, 6/9/3x3 values), used when no stress is found.
    stress_unit : str
        Unit of the stress values: ``"eV/A^3"`` (also ``"eV/Å^3"``), ``"GPa"``, ``"kbar"`` or
        ``"bar"``, case-insensitive. The virial is always in eV.
    stress_sign : str
        ``"ase"`` (tensile positive) or ``"compressive"`` (pressure sign of VASP and LAMMPS).
    weight : str
        ``atoms.info`` key of a per-structure weight (default 1.0 when absent).
    group : str
        ``atoms.info`` key of the group name (falls back to ``info["group"]``, then to
        ``"default"``, or to the file stem in :func:`read_frames`).
    source : str
        ``"auto"``: calculator results first, then ``info``/``arrays``; ``"calc"``: calculator
        results only; ``"info"``: ``info``/``arrays`` only.
    check_magnitudes : bool
        Refuse physically implausible label magnitudes, the signature of a unit mistake
        (:func:`check_label_magnitudes`; default True). ``False`` accepts them.
    """

    energy: str = "energy"
    forces: str = "forces"
    stress: str | None = "stress"
    virial: str | None = "virial"
    stress_unit: str = "eV/A^3"
    stress_sign: str = "ase"
    weight: str = "weight"
    group: str = "config_type"
    source: str = "auto"
    check_magnitudes: bool = True

    def __post_init__(self):
        if not isinstance(self.check_magnitudes, (bool, np.bool_)):
            raise ValueError(
                f"LabelSpec.check_magnitudes must be true or false, got {self.check_magnitudes!r}"
            )
        for field in ("energy", "forces", "weight", "group"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ValueError(f"LabelSpec.{field} must be a non-empty string, got {value!r}")
        for field in ("stress", "virial"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"LabelSpec.{field} must be a non-empty string or None, got {value!r}"
                )
        if not isinstance(self.stress_unit, str) or _norm_unit(self.stress_unit) not in (
            _STRESS_UNITS
        ):
            raise ValueError(
                f"LabelSpec.stress_unit={self.stress_unit!r} is not one of "
                "'eV/A^3', 'GPa', 'kbar', 'bar' (case-insensitive)"
            )
        sign = self.stress_sign.lower() if isinstance(self.stress_sign, str) else None
        if sign not in _STRESS_SIGNS:
            raise ValueError(
                f"LabelSpec.stress_sign={self.stress_sign!r} is not one of {list(_STRESS_SIGNS)}"
            )
        self.stress_sign = sign
        source = self.source.lower() if isinstance(self.source, str) else None
        if source not in _SOURCES:
            raise ValueError(f"LabelSpec.source={self.source!r} is not one of {list(_SOURCES)}")
        self.source = source

    @property
    def stress_factor(self) -> float:
        """Factor taking the stored stress values to eV/Å³ with the ASE sign."""
        factor = _STRESS_UNITS[_norm_unit(self.stress_unit)]
        return -factor if self.stress_sign == "compressive" else factor


@dataclass
class Labels:
    """Labels of one structure in ASE units and conventions.

    Attributes
    ----------
    energy : float or None
        Total energy (eV).
    forces : numpy.ndarray or None
        Forces (eV/Å), shape ``(N, 3)``.
    stress : numpy.ndarray or None
        Stress, shape ``(6,)``, ASE Voigt order (xx, yy, zz, yz, xz, xy), eV/Å³, tensile positive.
    weight : float
        Per-structure weight.
    group : str
        Group (configuration type) name.
    """

    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    weight: float = 1.0
    group: str = "default"


def _where(index) -> str:
    return "" if index is None else f"frame {index}: "


def _has_3d_cell(atoms: Atoms) -> bool:
    return bool(np.all(atoms.pbc)) and atoms.cell.rank == 3


def _info_get(atoms: Atoms, key: str):
    """``atoms.info[key]``, also looking into ASE-db ``key_value_pairs``; ``None`` if absent."""
    if key in atoms.info:
        return atoms.info[key]
    kvp = atoms.info.get("key_value_pairs")
    if isinstance(kvp, dict) and key in kvp:
        return kvp[key]
    return None


def _calc_results(atoms: Atoms) -> dict:
    results = getattr(atoms.calc, "results", None) if atoms.calc is not None else None
    return results if isinstance(results, dict) else {}


def _lookup(atoms: Atoms, key: str | None, spec: LabelSpec, *, per_atom: bool = False):
    """Value for ``key`` from the calculator results and/or info (arrays if ``per_atom``)."""
    if key is None:
        return None
    if spec.source in ("auto", "calc"):
        value = _calc_results(atoms).get(key)
        if value is not None:
            return value
    if spec.source in ("auto", "info"):
        value = atoms.arrays.get(key) if per_atom else _info_get(atoms, key)
        if value is None and per_atom:
            value = _info_get(atoms, key)
        return value
    return None


def _to_voigt(value, what: str, index) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{_where(index)}{what} is not numeric: {value!r}") from exc
    if arr.size == 6:
        return arr.reshape(6).copy()
    if arr.size == 9:
        return np.asarray(full_3x3_to_voigt_6_stress(arr.reshape(3, 3)), dtype=float)
    raise DataError(
        f"{_where(index)}{what} has shape {arr.shape}; expected 6 (Voigt), 9 or 3x3 values"
    )


def _find_group(atoms: Atoms, spec: LabelSpec) -> str | None:
    value = _info_get(atoms, spec.group)
    if value is None and spec.group != "group":
        value = _info_get(atoms, "group")
    return None if value is None else str(value)


def labels_of(atoms: Atoms, spec: LabelSpec | None = None, *, index=None) -> Labels:
    """Read the labels of ``atoms`` and convert them to ASE units and conventions.

    Labels come from ``atoms.calc.results`` (only the stored dict: no calculation is ever
    triggered) and/or ``atoms.info`` / ``atoms.arrays``, as ``spec.source`` says. The stress is
    converted from ``spec.stress_unit`` / ``spec.stress_sign`` wherever it was found (ASE's
    extxyz reader moves a ``stress`` key into a calculator and assumes eV/Å³; the spec describes
    what the file holds). Without a stress, a virial (eV) gives ``stress = -virial / volume``.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure.
    spec : LabelSpec, optional
        Where the labels are; default ``LabelSpec()``.
    index : optional
        Frame index (or name) used in error messages.

    Returns
    -------
    Labels
        Labels found; missing ones are ``None``.

    Raises
    ------
    DataError
        A label has a wrong shape or is not numeric, a virial is given for a cell without volume,
        or the weight is not a number.
    """
    spec = LabelSpec() if spec is None else spec
    where = _where(index)
    n = len(atoms)

    energy = _lookup(atoms, spec.energy, spec)
    if energy is not None:
        arr = np.asarray(energy)
        if arr.size != 1:
            raise DataError(f"{where}energy has shape {arr.shape}; expected a scalar")
        try:
            energy = float(arr.reshape(()))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}energy is not numeric: {energy!r}") from exc

    forces = _lookup(atoms, spec.forces, spec, per_atom=True)
    if forces is not None:
        try:
            forces = np.array(forces, dtype=float)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}forces are not numeric") from exc
        if forces.shape != (n, 3):
            raise DataError(f"{where}forces have shape {forces.shape} for {n} atoms")

    stress = _lookup(atoms, spec.stress, spec)
    if stress is not None:
        stress = _to_voigt(stress, "stress", index) * spec.stress_factor
    else:
        virial = _lookup(atoms, spec.virial, spec)
        if virial is not None:
            virial = _to_voigt(virial, "virial", index)
            if atoms.cell.rank != 3:
                raise DataError(f"{where}virial given for a cell without volume (not 3D)")
            stress = -virial / abs(atoms.cell.volume)

    weight = _info_get(atoms, spec.weight)
    if weight is None:
        weight = 1.0
    else:
        try:
            weight = float(np.asarray(weight).reshape(()))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}weight is not a number: {weight!r}") from exc

    group = _find_group(atoms, spec)
    return Labels(
        energy=energy,
        forces=forces,
        stress=stress,
        weight=weight,
        group="default" if group is None else group,
    )


def label(atoms: Atoms, labels: Labels) -> Atoms:
    """Return a copy of ``atoms`` carrying ``labels`` in the standard place.

    The copy has a :class:`~ase.calculators.singlepoint.SinglePointCalculator` with the labels
    that are not ``None`` (no calculator if all are ``None``), ``info["weight"]`` and the group in
    ``info["group"]`` and ``info["config_type"]``. Stale ``info`` keys ``energy``, ``stress``,
    ``virial`` and ``arrays["forces"]`` are removed so there is one source of truth.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure (not modified).
    labels : Labels
        Labels in ASE units and conventions.

    Returns
    -------
    ase.Atoms
        The labelled copy.
    """
    out = atoms.copy()
    out.info = copy.deepcopy(atoms.info)
    for key in ("energy", "stress", "virial"):
        out.info.pop(key, None)
    if "forces" in out.arrays:
        del out.arrays["forces"]
    results = {}
    if labels.energy is not None:
        results["energy"] = float(labels.energy)
    if labels.forces is not None:
        results["forces"] = np.array(labels.forces, dtype=float).reshape(len(out), 3)
    if labels.stress is not None:
        results["stress"] = np.array(labels.stress, dtype=float).reshape(6)
    out.calc = SinglePointCalculator(out, **results) if results else None
    out.info["weight"] = float(labels.weight)
    out.info["group"] = str(labels.group)
    out.info["config_type"] = str(labels.group)
    return out


# --------------------------------------------------------------------------------------------
# readers


def _is_deepmd_system(path: pathlib.Path) -> bool:
    return (path / "type.raw").is_file()


def _deepmd_systems(path: pathlib.Path) -> list[pathlib.Path]:
    if _is_deepmd_system(path):
        return [path]
    return sorted(p.parent for p in path.rglob("type.raw") if p.is_file())


def _load_npy(path: pathlib.Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _read_deepmd_system(path: pathlib.Path, type_map, group) -> list[Atoms]:
    try:
        types = np.loadtxt(path / "type.raw", dtype=int, ndmin=1)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path / 'type.raw'}: cannot read atom types: {exc}") from exc
    if type_map is None:
        tm_file = path / "type_map.raw"
        if not tm_file.is_file():
            raise DataError(f"{path}: no type_map.raw and no type_map given: element names unknown")
        type_map = tm_file.read_text().split()
    type_map = [str(t) for t in type_map]
    for name in type_map:
        if name not in atomic_numbers or name == "X":
            raise DataError(f"{path}: type map entry {name!r} is not a chemical element")
    n = len(types)
    if n == 0:
        raise DataError(f"{path / 'type.raw'}: no atoms")
    if types.min() < 0 or types.max() >= len(type_map):
        raise DataError(
            f"{path / 'type.raw'}: atom types range {types.min()}..{types.max()} but the type "
            f"map has {len(type_map)} entries {type_map}"
        )
    symbols = [type_map[t] for t in types]
    nopbc = (path / "nopbc").exists()
    group = path.name if group is None else str(group)

    sets = sorted(p for p in path.glob("set.*") if p.is_dir())
    if not sets:
        raise DataError(f"{path}: DeePMD system has no set.* directories")
    frames = []
    for sdir in sets:
        if not (sdir / "coord.npy").is_file():
            raise DataError(f"{sdir}: coord.npy is missing")
        coord = _load_npy(sdir / "coord.npy")
        nf = coord.shape[0] if coord.ndim else 0
        if coord.size != nf * n * 3 or nf == 0:
            raise DataError(f"{sdir / 'coord.npy'}: shape {coord.shape} does not fit {n} atoms")
        coord = coord.reshape(nf, n, 3)

        def optional(name, per_frame, sdir=sdir, nf=nf):
            f = sdir / f"{name}.npy"
            if not f.is_file():
                return None
            arr = _load_npy(f)
            if arr.size != nf * per_frame:
                raise DataError(
                    f"{f}: shape {arr.shape}; expected {nf} frames of {per_frame} values"
                )
            return arr.reshape(nf, per_frame)

        box = None if nopbc else optional("box", 9)
        energy = optional("energy", 1)
        force = optional("force", 3 * n)
        virial = optional("virial", 9)
        if virial is not None and box is None:
            raise DataError(f"{sdir}: virial.npy given without a periodic box")
        for i in range(nf):
            if box is not None:
                atoms = Atoms(symbols, positions=coord[i], cell=box[i].reshape(3, 3), pbc=True)
            else:
                atoms = Atoms(symbols, positions=coord[i], pbc=False)
            stress = None
            if virial is not None:
                if atoms.cell.rank != 3:
                    raise DataError(f"{sdir}: frame {i}: box has no volume")
                vir6 = full_3x3_to_voigt_6_stress(virial[i].astype(float).reshape(3, 3))
                stress = -vir6 / abs(atoms.cell.volume)
            labels = Labels(
                energy=None if energy is None else float(energy[i, 0]),
                forces=None if force is None else force[i].astype(float).reshape(n, 3),
                stress=stress,
                weight=1.0,
                group=group,
            )
            frames.append(label(atoms, labels))
    return frames


def read_deepmd(path, *, type_map: Sequence[str] | None = None, group: str | None = None):
    """Read a DeePMD npy "system" directory, or every system below a directory.

    A system holds ``type.raw`` (one integer type per atom), optionally ``type_map.raw``
    (element names), and ``set.*/`` folders with ``coord.npy`` (frames x 3N, Å), ``box.npy``
    (frames x 9, cell vectors as rows, Å), ``energy.npy`` (eV), ``force.npy`` (frames x 3N, eV/Å)
    and optionally ``virial.npy`` (frames x 9, eV; ``stress = -virial / volume``). Without
    ``box.npy``, or with a ``nopbc`` file, frames are non-periodic with no cell.

    Parameters
    ----------
    path : str or os.PathLike
        A system directory, or a directory whose subdirectories (at any depth) are systems.
    type_map : sequence of str, optional
        Element name of each type; overrides ``type_map.raw``.
    group : str, optional
        Group name of all frames; default the system directory name.

    Returns
    -------
    list of ase.Atoms
        Standard labelled frames, systems in sorted path order.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    DataError
        No system found, element names unknown, or inconsistent arrays.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"DeePMD data not found: {path}")
    if not path.is_dir():
        raise DataError(f"{path}: a DeePMD system must be a directory")
    systems = _deepmd_systems(path)
    if not systems:
        raise DataError(f"{path}: no DeePMD system (no type.raw) found")
    frames = []
    for system in systems:
        frames.extend(_read_deepmd_system(system, type_map, group))
    return frames


def _select(frames: list, index) -> list:
    if isinstance(index, str):
        index = string2index(index)
    if isinstance(index, slice):
        return frames[index]
    try:
        return [frames[index]]
    except IndexError as exc:
        raise DataError(f"frame index {index} out of range for {len(frames)} frames") from exc


def _read_db(path: pathlib.Path) -> list[Atoms]:
    import ase.db

    frames = []
    with ase.db.connect(str(path)) as db:
        for row in db.select():
            atoms = row.toatoms(add_additional_information=True)
            kvp = atoms.info.pop("key_value_pairs", {}) or {}
            atoms.info.pop("unique_id", None)
            atoms.info.update(kvp)
            frames.append(atoms)
    return frames


def _read_one(path, index, format, spec: LabelSpec, group: str | None) -> list[Atoms]:
    import ase.io
    from ase.io.formats import filetype

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data file not found: {path}")
    if path.is_dir():
        if not _deepmd_systems(path):
            raise DataError(f"{path}: directory is not (and holds no) DeePMD system")
        try:
            frames = _select(read_deepmd(path, group=group), index)
        except DataError as exc:
            if str(path) in str(exc):
                raise
            raise DataError(f"{path}: {exc}") from exc
        if spec.check_magnitudes:
            for i, atoms in enumerate(frames):
                check_label_magnitudes(atoms, labels_of(atoms), where=f"{path}: frame {i}: ")
        return frames

    try:
        fmt = format if format is not None else filetype(str(path))
    except Exception as exc:  # ASE raises several kinds for unknown formats
        raise DataError(f"{path}: cannot determine the file format: {exc}") from exc
    try:
        if fmt in ("db", "json"):
            raw = _select(_read_db(path), index)
        else:
            raw = ase.io.read(str(path), index, format=fmt)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except Exception as exc:  # ASE readers raise many kinds for malformed files
        raise DataError(f"{path}: cannot read as {fmt!r}: {type(exc).__name__}: {exc}") from exc
    if isinstance(raw, Atoms):
        raw = [raw]
    if not raw:
        raise DataError(f"{path}: no frames read (format {fmt!r}, index {index!r})")

    stale_info = {k for k in (spec.energy, spec.stress, spec.virial) if k is not None}
    frames = []
    for i, atoms in enumerate(raw):
        try:
            labels = labels_of(atoms, spec, index=i)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from exc
        if spec.check_magnitudes:
            check_label_magnitudes(atoms, labels, spec, where=f"{path}: frame {i}: ")
        if group is not None:
            labels.group = str(group)
        elif _find_group(atoms, spec) is None:
            labels.group = path.stem
        out = label(atoms, labels)
        for key in stale_info:
            out.info.pop(key, None)
        if spec.forces not in ("positions", "numbers"):
            out.arrays.pop(spec.forces, None)
        frames.append(out)
    return frames


def _stress_bound(atoms: Atoms) -> tuple[float, float]:
    """(bound on |stress| in eV/Å^3, volume per atom in Å^3) of a 3D cell."""
    from ase.data import covalent_radii

    n = len(atoms)
    v = abs(atoms.cell.volume) / n
    v_ref = float(np.sum(4.0 / 3.0 * np.pi * covalent_radii[atoms.numbers] ** 3)) / n
    x = v / v_ref if v_ref > 0 else 1.0
    if x >= 1.0:
        return MIN_STRESS_BOUND, v
    eta = x ** (1.0 / 3.0)
    p = 3.0 * _BOUND_B0 * (1.0 - eta) / eta**2 * math.exp(1.5 * (_BOUND_B0P - 1) * (1.0 - eta))
    return max(MIN_STRESS_BOUND, p), v


def _has_close_contact(atoms: Atoms, i: int) -> bool:
    from ase.data import covalent_radii

    if len(atoms) < 2:
        return False
    others = [j for j in range(len(atoms)) if j != i]
    d = atoms.get_distances(i, others, mic=bool(atoms.pbc.any()))
    r = covalent_radii[atoms.numbers]
    return bool(np.any(d < CLOSE_CONTACT * (r[i] + r[others])))


def check_label_magnitudes(
    atoms: Atoms, labels: Labels, spec: LabelSpec | None = None, *, where: str = ""
) -> None:
    """Refuse labels whose magnitude no real structure has: the signature of a unit mistake.

    Limits (module constants): ``|E| / N > MAX_ENERGY_PER_ATOM`` (1e6 eV/atom, beyond any
    total energy, even all-electron); a force above ``MAX_FORCE`` (500 eV/Å) on an atom
    without a close contact (a neighbour nearer than 0.75 x the sum of covalent radii); a
    stress component above ``max(1 eV/Å^3, P_Vinet(v / v_ref))``: 1 eV/Å^3 = 160 GPa at
    ordinary volumes, more for a cell compressed below ``v_ref``, the volume of its atoms'
    covalent-radius spheres (Vinet with B0 = 480 GPa, B0' = 6: above any real equation of
    state). So GPa given as eV/Å^3 is caught whenever a frame has more than about 1 GPa at an
    ordinary volume, while the strongly compressed frames of real data sets (FitSNAP's Ta,
    3000 GPa at a third of the volume) pass. ``LabelSpec(check_magnitudes=False)`` (``[data.
    labels] check_magnitudes = false``) turns the check off.

    Raises
    ------
    DataError
        Naming ``where`` (file and frame), the value and the likely unit mistake.
    """
    spec = LabelSpec() if spec is None else spec
    off = "or set [data.labels] check_magnitudes = false (LabelSpec(check_magnitudes=False)) " \
        "if the values are right"
    n = max(len(atoms), 1)
    if labels.energy is not None and abs(labels.energy) / n > MAX_ENERGY_PER_ATOM:
        raise DataError(
            f"{where}energy {labels.energy:.6g} eV ({labels.energy / n:.3g} eV/atom) is "
            f"implausible (|E| > {MAX_ENERGY_PER_ATOM:.0e} eV/atom): is it in meV, J/mol or "
            f"kJ/mol rather than eV? Convert it to eV, {off}"
        )
    if labels.forces is not None and labels.forces.size:
        norms = np.linalg.norm(labels.forces, axis=1)
        for i in np.flatnonzero(norms > MAX_FORCE)[:20]:
            if _has_close_contact(atoms, int(i)):
                continue
            raise DataError(
                f"{where}force {norms[i]:.4g} eV/Å on atom {i} ({atoms[i].symbol}) is "
                f"implausible (> {MAX_FORCE:g} eV/Å with no close neighbour): is it in meV/Å or "
                f"Hartree/Bohr (1 Ha/Bohr = {units.Hartree / units.Bohr:.2f} eV/Å) rather than "
                f"eV/Å? Convert it to eV/Å, {off}"
            )
    if labels.stress is not None and _has_3d_cell(atoms):
        big = float(np.max(np.abs(labels.stress)))
        bound, v = _stress_bound(atoms)
        if big > bound:
            declared = _norm_unit(spec.stress_unit)
            raw = big / _STRESS_UNITS[declared]
            names = {"ev/a^3": "eV/A^3", "gpa": "GPa", "kbar": "kbar", "bar": "bar"}
            smaller = [u for u, f in sorted(_STRESS_UNITS.items(), key=lambda t: -t[1])
                       if f < _STRESS_UNITS[declared] and raw * f <= bound]
            if smaller:
                likely = names[smaller[0]]
                as_gpa = raw * _STRESS_UNITS[smaller[0]] / units.GPa
                hint = (f"the file's stress is probably in {likely}, not {spec.stress_unit} (set "
                        f'[data.labels] stress_unit = "{likely}"; that gives {as_gpa:.3g} GPa)')
            else:
                hint = f"check the stress unit ({spec.stress_unit})"
            raise DataError(
                f"{where}stress component {big:.4g} eV/Å^3 ({big / units.GPa:.4g} GPa, read as "
                f"{spec.stress_unit}) is implausible at {v:.3g} Å^3/atom (bound {bound:.3g} "
                f"eV/Å^3 = {bound / units.GPa:.3g} GPa): {hint}, {off}"
            )


def read_frames(
    path,
    index=":",
    *,
    format: str | None = None,
    spec: LabelSpec | None = None,
    group: str | None = None,
) -> list[Atoms]:
    """Read labelled structures and return standard labelled copies.

    Parameters
    ----------
    path : str, os.PathLike, or list/tuple of them
        Any file :func:`ase.io.read` reads (extxyz, ASE db, VASP OUTCAR, ...), a DeePMD system
        directory (holding ``type.raw``) or a directory of DeePMD systems. A list or tuple of
        paths gives the concatenated frames.
    index : int, slice or str
        Frames to read from each path, as for :func:`ase.io.read` (default all).
    format : str, optional
        ASE format name (default guessed from the file); ignored for DeePMD directories.
    spec : LabelSpec, optional
        Where the labels are and which stress unit/sign the file uses (ignored for DeePMD,
        whose format is fixed).
    group : str, optional
        Group name of every frame read. Default: the frame's own group info key if present,
        else the file stem (``"Displaced_BCC"`` for ``Displaced_BCC.xyz``), or the DeePMD
        system directory name.

    Returns
    -------
    list of ase.Atoms
        Standard labelled frames (see :func:`label`).

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    DataError
        A file cannot be read, gives no frames for ``index``, or holds badly shaped labels; the
        message names the file.
    """
    spec = LabelSpec() if spec is None else spec
    if isinstance(path, (list, tuple)):
        frames = []
        for p in path:
            frames.extend(_read_one(p, index, format, spec, group))
        return frames
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path or a list/tuple of paths, got {type(path).__name__}")
    return _read_one(path, index, format, spec, group)


# --------------------------------------------------------------------------------------------
# checks, splits


def _listed(indices: list) -> str:
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    more = f", ... ({len(indices)} in all)" if len(indices) > _MAX_LISTED else ""
    return shown + more


def validate_frames(
    frames: Iterable[Atoms],
    *,
    elements: Sequence[str] | None = None,
    require: Sequence[str] = ("energy", "forces"),
    name: str = "data",
    spec: LabelSpec | None = None,
) -> None:
    """Check training frames before any work is done on them.

    Checks that there are frames; that every frame has the required labels; that all labels
    present, the weights, positions and cells are finite (weights also non-negative); that every
    chemical symbol is in ``elements`` (if given); and, when ``"stress"`` is required, that each
    cell is 3D periodic. Labels are read with :func:`labels_of` and ``spec``.

    Parameters
    ----------
    frames : iterable of ase.Atoms
        The frames.
    elements : sequence of str, optional
        Allowed chemical symbols.
    require : sequence of str
        Labels every frame must have, from ``"energy"``, ``"forces"``, ``"stress"``.
    name : str
        Name of the data set used in messages (e.g. ``"training set"``).
    spec : LabelSpec, optional
        Where the labels are (default ``LabelSpec()``).

    Raises
    ------
    ValueError
        ``require`` names an unknown label.
    DataError
        Any check fails; the message lists the problems with frame indices.
    """
    frames = list(frames)
    require = (require,) if isinstance(require, str) else tuple(require)
    unknown = [r for r in require if r not in _LABEL_NAMES]
    if unknown:
        raise ValueError(f"require: unknown label(s) {unknown}; allowed {list(_LABEL_NAMES)}")
    if not frames:
        raise DataError(f"{name}: no frames")
    allowed = None if elements is None else set(elements)

    missing: dict[str, list[int]] = {r: [] for r in require}
    not_3d: list[int] = []
    problems: list[str] = []
    for i, atoms in enumerate(frames):
        if not isinstance(atoms, Atoms):
            problems.append(f"frame {i}: not an ase.Atoms ({type(atoms).__name__})")
            continue
        try:
            labels = labels_of(atoms, spec, index=i)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if not np.all(np.isfinite(atoms.positions)):
            problems.append(f"frame {i}: non-finite positions")
        if not np.all(np.isfinite(atoms.cell.array)):
            problems.append(f"frame {i}: non-finite cell")
        for key in _LABEL_NAMES:
            value = getattr(labels, key)
            if value is None:
                if key in missing:
                    missing[key].append(i)
            elif not np.all(np.isfinite(value)):
                problems.append(f"frame {i}: non-finite {key}")
        if not math.isfinite(labels.weight) or labels.weight < 0:
            problems.append(f"frame {i}: weight {labels.weight} is not finite and >= 0")
        if "stress" in require and labels.stress is not None and not _has_3d_cell(atoms):
            not_3d.append(i)
        if allowed is not None:
            bad = sorted(set(atoms.get_chemical_symbols()) - allowed)
            if bad:
                problems.append(f"frame {i}: element(s) {bad} not in elements {sorted(allowed)}")

    for key, idx in missing.items():
        if idx:
            problems.insert(0, f"{len(idx)} frame(s) have no {key} label (frames {_listed(idx)})")
    if not_3d:
        problems.append(
            f"stress required but {len(not_3d)} frame(s) have no 3D periodic cell "
            f"(frames {_listed(not_3d)})"
        )
    if problems:
        shown = problems[:10]
        more = f"; ... ({len(problems) - 10} more problems)" if len(problems) > 10 else ""
        raise DataError(f"{name}: " + "; ".join(shown) + more)


def _split_counts(n: int, fractions: np.ndarray) -> list[int]:
    raw = n * fractions
    counts = np.floor(raw + 1e-9).astype(int)
    rest = n - int(counts.sum())
    if rest > 0:
        remainder = raw - counts
        order = sorted(range(len(fractions)), key=lambda k: (-remainder[k], k))
        for k in order[:rest]:
            counts[k] += 1
    nonzero = [k for k in range(len(fractions)) if fractions[k] > 0]
    if n >= len(nonzero):
        for k in nonzero:
            if counts[k] == 0:
                donor = max(range(len(fractions)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[k] += 1
    return [int(c) for c in counts]


def split_frames(
    frames: Sequence[Atoms],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int | np.random.Generator = 0,
    by_group: bool = True,
) -> tuple[list[Atoms], list[Atoms], list[Atoms]]:
    """Split frames reproducibly into training, validation and test sets.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        The frames.
    fractions : sequence of 3 float
        Fractions of the train, validation and test splits: non-negative, summing to 1.
    seed : int or numpy.random.Generator
        Seed of :func:`numpy.random.default_rng` (global numpy state is never used).
    by_group : bool
        Split inside each group (``labels_of(atoms).group``) so every group is represented;
        every non-zero fraction gets at least one frame of a group with at least as many frames
        as there are non-zero fractions.

    Returns
    -------
    tuple of 3 lists of ase.Atoms
        Train, validation and test frames, each in the original order.

    Raises
    ------
    ValueError
        Bad fractions.
    DataError
        A split with a non-zero fraction is empty.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,):
        raise ValueError(
            f"fractions must have 3 entries (train, validation, test), got {fractions}"
        )
    if not np.all(np.isfinite(fr)) or np.any(fr < 0):
        raise ValueError(f"fractions must be non-negative, got {list(fractions)}")
    if abs(fr.sum() - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {list(fractions)} (sum {fr.sum()!r})")
    frames = list(frames)
    rng = np.random.default_rng(seed)

    groups: dict[str, list[int]] = {}
    spec = LabelSpec()
    for i, atoms in enumerate(frames):
        key = (_find_group(atoms, spec) or "default") if by_group else "all"
        groups.setdefault(key, []).append(i)

    chosen: list[list[int]] = [[], [], []]
    for members in groups.values():
        counts = _split_counts(len(members), fr)
        perm = rng.permutation(len(members))
        start = 0
        for k, c in enumerate(counts):
            chosen[k].extend(members[j] for j in perm[start : start + c])
            start += c

    for k, name in enumerate(_SPLIT_NAMES):
        if fr[k] > 0 and not chosen[k]:
            raise DataError(
                f"split_frames: split {name!r} is empty (fraction {fr[k]:g} of "
                f"{len(frames)} frames in {len(groups)} group(s)); use more frames or a larger "
                "fraction"
            )
    train, val, test = ([frames[i] for i in sorted(idx)] for idx in chosen)
    return train, val, test


def reference_energies_from_isolated(frames: Iterable[Atoms], *, tol: float = 1e-3) -> dict:
    """Element -> energy (eV) from the frames that are single atoms with an energy.

    Parameters
    ----------
    frames : iterable of ase.Atoms
        Frames; only single-atom frames with an energy label are used.
    tol : float
        Largest allowed spread (eV) between several isolated-atom energies of one element.

    Returns
    -------
    dict of str to float
        Isolated-atom energy of each element found (the mean when there are several).

    Raises
    ------
    DataError
        Isolated-atom energies of one element differ by more than ``tol``.
    """
    found: dict[str, list[float]] = {}
    for i, atoms in enumerate(frames):
        if len(atoms) != 1:
            continue
        energy = labels_of(atoms, index=i).energy
        if energy is None:
            continue
        found.setdefault(atoms.get_chemical_symbols()[0], []).append(energy)
    out = {}
    for element, values in found.items():
        if max(values) - min(values) > tol:
            raise DataError(
                f"isolated {element} atoms have energies {min(values)} .. {max(values)} eV, "
                f"spread above {tol} eV"
            )
        out[element] = float(np.mean(values))
    return out
