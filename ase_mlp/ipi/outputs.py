"""Readers for i-PI outputs: property tables, extxyz (``format='ase'``) and binary trajectories."""

from __future__ import annotations

import pathlib
import re

import numpy as np
from ase import Atoms, units


_COLUMN = re.compile(r"#\s*(?:column|cols\.)\s+(\d+)(?:\s*-\s*(\d+))?\s*-->\s*(\S+)")


def read_properties(path) -> dict:
    """Read an i-PI property file (``<properties>`` output) into ``{name: array}``.

    Each column is available under its full name (``"potential{electronvolt}"``) and
    under the bare name (``"potential"``) when that is unambiguous. Multi-column
    properties (``bead_potentials``) are 2D arrays ``(n_rows, n_columns)``.
    """
    path = pathlib.Path(path)
    columns = []
    with open(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            m = _COLUMN.match(line)
            if m:
                first = int(m.group(1))
                last = int(m.group(2)) if m.group(2) else first
                columns.append((m.group(3), first - 1, last))
    if not columns:
        raise ValueError(f"{path}: no i-PI column header found")
    data = np.loadtxt(path, ndmin=2, comments="#")
    out: dict = {}
    bare: dict = {}
    for name, lo, hi in columns:
        col = data[:, lo] if hi - lo == 1 else data[:, lo:hi]
        out[name] = col
        bare.setdefault(name.split("{")[0].split("(")[0], []).append(col)
    for k, cols in bare.items():
        if len(cols) == 1 and k not in out:
            out[k] = cols[0]
    return out


def read_extxyz_trajectory(path) -> list[Atoms]:
    """Frames of an i-PI ``format='ase'`` trajectory, the quantity moved into ``positions``.

    i-PI writes the printed quantity (``x_centroid``, ``positions``, ``forces`` ...) as an
    extra per-atom array and zeros as positions; for position-like quantities the array
    becomes the positions, otherwise it is kept in ``atoms.arrays`` under its name.
    """
    from ase.io import read

    frames = read(str(path), ":", format="extxyz")
    for a in frames:
        extra = [k for k in a.arrays if k not in ("numbers", "positions")]
        for k in extra:
            if k.startswith(("x_centroid", "positions")):
                a.positions = a.arrays.pop(k)
        m = re.search(r"Step:\s+(\d+)", a.info.get("ipi_comment", ""))
        if m:
            a.info["step"] = int(m.group(1))
    return frames


def bead_file(directory, name: str, bead: int, nbeads: int, ext: str,
              prefix: str = "simulation") -> pathlib.Path:
    """Path of i-PI's per-bead output ``prefix.name_<bead>.ext`` (zero-padded as i-PI does)."""
    width = len(str(int(nbeads)))
    return pathlib.Path(directory) / f"{prefix}.{name}_{bead:0{width}d}.{ext}"


def read_binary_trajectory(path) -> list[dict]:
    """Frames of an i-PI ``format='bin'`` trajectory (full precision, i-PI units).

    Returns one dict per frame: ``cell`` (``h``, cell vectors as columns), ``data``
    (``(nat, 3)``, e.g. positions in bohr or forces in hartree/bohr unless units were
    given), ``names`` and ``title``.
    """
    raw = pathlib.Path(path).read_bytes()
    frames = []
    pos = 0
    marker = "Step:".encode("utf-32-le")
    while pos < len(raw):
        cell = np.frombuffer(raw, "<f8", 9, pos).reshape(3, 3)
        nat = int(np.frombuffer(raw, "<i8", 1, pos + 72)[0])
        pos += 80
        data = np.frombuffer(raw, "<f8", 3 * nat, pos).reshape(nat, 3).copy()
        pos += 24 * nat
        nlen = int(np.frombuffer(raw, "<i8", 1, pos)[0])
        pos += 8
        names = raw[pos:pos + 4 * nlen].decode("utf-32-le").split("|")
        pos += 4 * nlen
        # the title runs to the next frame, which starts with a cell: find the next
        # title and step back over that frame's fixed-size head
        nxt = raw.find(marker, pos + len(marker))
        if nxt < 0:
            end = len(raw)
        else:
            end = nxt - (80 + 24 * nat + 8 + 4 * nlen)
        title = raw[pos:end].decode("utf-32-le", errors="replace")
        frames.append({"cell": cell.copy(), "data": data, "names": names, "title": title})
        pos = end
    return frames


def binary_to_atoms(frame: dict, length_unit: float = units.Bohr) -> Atoms:
    """An ASE ``Atoms`` from a binary position frame (bohr by default, converted to Å)."""
    return Atoms(frame["names"], positions=frame["data"] * length_unit,
                 cell=frame["cell"].T * length_unit, pbc=True)
