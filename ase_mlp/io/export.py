"""Export a fitted model as a ready-to-run LAMMPS potential.

:func:`export_lammps` writes the coefficient files (``write_snap`` for linear
and quadratic SNAP, ``write_mliap`` for NN-SNAP) and an include file with the
``pair_style`` / ``pair_coeff`` commands, ZBL baselines as ``hybrid/overlay``
included, so a LAMMPS input needs only::

    include model.lammps

It is the route to million-atom runs under MPI (``docs/scale.md``); the same
commands drive :class:`~ase_mlp.io.lammps_runner.LammpsEvaluator` and
:func:`~ase_mlp.io.lammps_mpi.evaluate_mpi` for parity checks.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from ase_mlp.io.lammps import write_mliap, write_snap


@dataclass
class LammpsPotential:
    """What :func:`export_lammps` wrote: the pair style, coefficient lines and files."""

    pair_style: str
    pair_coeffs: list[str]
    elements: list[str]
    include_file: pathlib.Path
    files: list[pathlib.Path] = field(default_factory=list)

    def commands(self, absolute: bool = False) -> list[str]:
        """``pair_style`` and ``pair_coeff`` lines; file names made absolute if asked."""
        lines = [f"pair_style {self.pair_style}"] + list(self.pair_coeffs)
        if not absolute:
            return lines
        names = {f.name: str(f.resolve()) for f in self.files}
        return [" ".join(names.get(w, w) for w in ln.split()) for ln in lines]


def _main_part(model, directory: pathlib.Path, name: str):
    from ase_mlp.models.snap import NNSNAP, LinearSNAP, QuadraticSNAP

    els = " ".join(model.elements)
    if isinstance(model, (LinearSNAP, QuadraticSNAP)):
        coeff, param = directory / f"{name}.snapcoeff", directory / f"{name}.snapparam"
        write_snap(model, coeff, param)
        return "snap", f"* * snap {coeff.name} {param.name} {els}", [coeff, param], \
            f"* * {coeff.name} {param.name} {els}"
    if isinstance(model, NNSNAP):
        mfile, dfile = directory / f"{name}.mliap.model", directory / f"{name}.mliap.descriptor"
        write_mliap(model, mfile, dfile)
        style = f"mliap model nn {mfile.name} descriptor sna {dfile.name}"
        return style, f"* * mliap {els}", [mfile, dfile], f"* * {els}"
    raise TypeError(f"cannot export a {type(model).__name__} to LAMMPS; supported: LinearSNAP, "
                    f"QuadraticSNAP, NNSNAP, optionally summed with one ZBL")


def export_lammps(model, directory, name: str = "model") -> LammpsPotential:
    """Write ``model`` as LAMMPS files into ``directory``.

    Supports ``LinearSNAP``, ``QuadraticSNAP``, ``NNSNAP`` and
    ``SumModel(ZBL, one of those)``. File names in the commands are relative
    to ``directory`` (run LAMMPS there, or edit the paths). Atom types are the
    model's elements in order: type ``k + 1`` is ``model.elements[k]``.
    """
    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    zbl = None
    main = model
    if isinstance(model, SumModel):
        zbls = [m for m in model.models if isinstance(m, ZBL)]
        rest = [m for m in model.models if not isinstance(m, ZBL)]
        if len(zbls) > 1 or len(rest) != 1:
            raise TypeError("can export SumModel(ZBL, model) only (one ZBL and one SNAP-family "
                            f"model), got {[type(m).__name__ for m in model.models]}")
        zbl = zbls[0] if zbls else None
        main = rest[0]
    style, hybrid_coeff, files, plain_coeff = _main_part(main, directory, name)
    if zbl is None:
        pair_style = style
        coeffs = [f"pair_coeff {plain_coeff}"]
    else:
        pair_style = f"hybrid/overlay zbl {float(zbl.inner)!r} {float(zbl.outer)!r} {style}"
        coeffs = []
        n = len(model.elements)
        for a in range(n):
            for b in range(a, n):
                coeffs.append(f"pair_coeff {a + 1} {b + 1} zbl {float(zbl.z[a])!r} "
                              f"{float(zbl.z[b])!r}")
        coeffs.append(f"pair_coeff {hybrid_coeff}")
    include = directory / f"{name}.lammps"
    lines = [f"# ase_mlp export of {type(model).__name__}; atom types: "
             + ", ".join(f"{k + 1}={e}" for k, e in enumerate(model.elements)),
             f"pair_style {pair_style}"] + coeffs
    include.write_text("\n".join(lines) + "\n")
    return LammpsPotential(pair_style=pair_style, pair_coeffs=coeffs,
                           elements=list(model.elements), include_file=include,
                           files=files + [include])
