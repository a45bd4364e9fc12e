"""Small shared helpers."""

import numpy as np
from ase.data import atomic_numbers


def check_elements(elements) -> list[str]:
    out = []
    for el in elements:
        if el not in atomic_numbers or el == "X":
            raise ValueError(f"unknown chemical element {el!r}")
        out.append(el)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate elements in {out}")
    return out


def perpendicular_widths(cell) -> np.ndarray:
    """The three perpendicular widths ``V / |a_j x a_k|`` of a cell (Å; inf if degenerate)."""
    cell = np.asarray(cell, dtype=float)
    vol = abs(np.linalg.det(cell))
    cross = np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]])
    norms = np.linalg.norm(cross, axis=1)
    with np.errstate(divide="ignore"):
        return np.where(norms > 0, vol / np.where(norms > 0, norms, 1.0), np.inf)


def save_npz_atomic(path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` (.npz) through a temporary file and an atomic rename,
    so a crash never leaves a half-written checkpoint in place of a good one."""
    import os
    import pathlib

    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)   # no 0-byte .tmp left behind (e.g. disk full)
        raise


def check_checkpoint_meta(path, saved: dict, mine: dict, what: str) -> None:
    """Raise ValueError naming every setting in which a checkpoint differs from ``mine``."""
    diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
    if diff:
        raise ValueError(f"checkpoint {path} does not match this {what}: "
                         + ", ".join(f"{k} {a} (file) vs {b}" for k, (a, b) in diff.items()))


def thermalize(atoms, temperature_K: float, rng) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` from ``rng``, centre of mass at rest.

    Uses ASE's ``thermalize_momenta`` (ASE >= 3.28) or ``MaxwellBoltzmannDistribution``.
    """
    from ase.md import velocitydistribution as vd

    draw = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    draw(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
