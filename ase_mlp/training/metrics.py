"""Error metrics of a model on labelled frames, and the table ``ase-mlp`` prints.

Energies are compared per atom (eV/atom), forces per Cartesian component
(eV/Å, overall and per element of the atom), stresses per Voigt component
(GPa). RMSE and MAE, overall and per group (``info["group"]``).
"""

from __future__ import annotations

import numpy as np
from ase import units


def _stats(d):
    d = np.asarray(d, dtype=float).ravel()
    if d.size == 0:
        return None
    return {"rmse": float(np.sqrt(np.mean(d * d))), "mae": float(np.mean(np.abs(d))),
            "n": int(d.size)}


def predictions(model_or_calc, frames, *, batch_size: int = 32, progress: bool = False):
    """Per-frame result dicts of a model (or MLPCalculator), batched."""
    from ase_mlp.calculators.mlp import MLPCalculator

    calc = model_or_calc if isinstance(model_or_calc, MLPCalculator) else \
        MLPCalculator(model_or_calc, device="cpu")
    out = []
    it = range(0, len(frames), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="evaluating", unit="batch")
    for k in it:
        out.extend(calc.calculate_batch(frames[k:k + batch_size], ("energy", "forces", "stress")))
    return out


def compute_metrics(model_or_calc, frames, *, labels=None, results=None, progress=False) -> dict:
    """RMSE/MAE of energy per atom, forces (all and per element) and stress.

    Returns ``{"n_frames", "energy", "forces", "forces_by_element", "stress",
    "groups": {group: {...}}}`` with ``{"rmse", "mae", "n"}`` entries (None
    where the frames carry no such label). ``results`` (from :func:`predictions`)
    avoids re-evaluating.
    """
    from ase_mlp.training.data import labels_of

    frames = list(frames)
    if results is None:
        results = predictions(model_or_calc, frames, progress=progress)
    acc = {}

    def bucket(key):
        return acc.setdefault(key, {"energy": [], "forces": [], "stress": [], "elements": {},
                                    "n": 0})

    for k, (atoms, res) in enumerate(zip(frames, results, strict=True)):
        lab = labels_of(atoms, labels, index=k)
        for b in (bucket("__all__"), bucket(lab.group)):
            b["n"] += 1
            if lab.energy is not None:
                b["energy"].append((res["energy"] - lab.energy) / len(atoms))
            if lab.forces is not None:
                d = res["forces"] - lab.forces
                b["forces"].append(d.ravel())
                for el in sorted(set(atoms.get_chemical_symbols())):
                    m = np.array(atoms.get_chemical_symbols()) == el
                    b["elements"].setdefault(el, []).append(d[m].ravel())
            if lab.stress is not None and "stress" in res:
                b["stress"].append((res["stress"] - lab.stress) / units.GPa)

    def summarise(b):
        return {
            "n_frames": b["n"],
            "energy": _stats(b["energy"]),
            "forces": _stats(np.concatenate(b["forces"])) if b["forces"] else None,
            "forces_by_element": {el: _stats(np.concatenate(v))
                                  for el, v in sorted(b["elements"].items())},
            "stress": _stats(np.concatenate(b["stress"])) if b["stress"] else None,
        }

    out = summarise(acc.pop("__all__", bucket("__none__")))
    out["groups"] = {g: summarise(b) for g, b in sorted(acc.items()) if g != "__none__"}
    return out


def format_table(metrics_by_split: dict, *, groups: bool = False) -> str:
    """A plain-text table: one row per split (and group), RMSE / MAE columns.

    Units: energy meV/atom, forces eV/Å, stress GPa.
    """
    elements = sorted({el for m in metrics_by_split.values()
                       for el in (m.get("forces_by_element") or {})})
    head = ["set", "frames", "E rmse", "E mae", "F rmse", "F mae"] + \
        [f"F[{el}] rmse" for el in elements] + ["S rmse", "S mae"]
    rows = []

    def fmt(s, key, scale=1.0, digits=4):
        if not s:
            return "-"
        return f"{s[key] * scale:.{digits}g}"

    def row(name, m):
        fe = m.get("forces_by_element") or {}
        return [name, str(m.get("n_frames") or "")] + [
            fmt(m["energy"], "rmse", 1e3), fmt(m["energy"], "mae", 1e3),
            fmt(m["forces"], "rmse"), fmt(m["forces"], "mae")] + [
            fmt(fe.get(el), "rmse") for el in elements] + [
            fmt(m["stress"], "rmse"), fmt(m["stress"], "mae")]

    for name, m in metrics_by_split.items():
        rows.append(row(name, m))
        if groups:
            for g, mg in (m.get("groups") or {}).items():
                rows.append(row(f"  {name}:{g}", mg))
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) if c else h.ljust(w)
                       for c, (h, w) in enumerate(zip(head, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(v.rjust(w) if c else v.ljust(w)
                               for c, (v, w) in enumerate(zip(r, widths, strict=True))))
    lines.append("units: E meV/atom, F eV/Å, S GPa")
    return "\n".join(lines)
