"""``run_fit``: the whole training workflow of one configuration (``ase-mlp fit``).

Steps: read the data files (:func:`~ase_mlp.training.data.read_frames`), split
them (:func:`~ase_mlp.training.data.split_frames`), check them, build the
model, fit it (:func:`ase_mlp.training.fit`, descriptors cached under
``output/cache``, NN checkpoints in ``output/checkpoint.pt``), save
``output/model.pt``, evaluate RMSE/MAE on every split
(:func:`~ase_mlp.training.metrics.compute_metrics`), print the table and write
``metrics.json``/``metrics.txt``, parity plots and (NN) the learning curve,
and optionally LAMMPS files. Everything that can fail on the configuration or
the data fails before ``output`` is created.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

import numpy as np

from ase_mlp.training.config import FitConfig, load_config


SPLITS = ("train", "validation", "test")


def _quiet(*args, **kwargs):
    pass


def _jsonable(x):
    """Plain-JSON copy: numpy/torch scalars to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (str, type(None))):
        return x
    if isinstance(x, pathlib.Path):
        return str(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return _jsonable(x.detach().cpu().tolist())
    except ImportError:  # pragma: no cover
        pass
    return str(x)


def _is_nn(model) -> bool:
    from ase_mlp.models.snap import NNSNAP

    return any(isinstance(m, NNSNAP) for m in model.modules())


def read_splits(config: FitConfig) -> dict:
    """``{"train": frames, "validation": frames or [], "test": frames or []}``."""
    from ase_mlp.training.data import read_frames, split_frames

    d = config.data
    frames = read_frames(d.train, spec=d.labels)
    fr = d.fractions()
    if fr[1] == 0 and fr[2] == 0:
        train, val, test = frames, [], []
    else:
        train, val, test = split_frames(frames, fr, seed=config.seed, by_group=d.split_by_group)
    if d.validation:
        val = read_frames(d.validation, spec=d.labels)
    if d.test:
        test = read_frames(d.test, spec=d.labels)
    return {"train": train, "validation": val, "test": test}


def _check_data(config: FitConfig, model, splits: dict) -> None:
    """Everything :func:`fit` would refuse, checked before the output directory exists."""
    from ase_mlp.training.data import labels_of, validate_frames

    f = config.fit
    require = tuple(k for k, w in (("energy", f.energy_weight), ("forces", f.force_weight),
                                   ("stress", f.stress_weight)) if w > 0)
    for name in SPLITS:
        if splits[name]:
            validate_frames(splits[name], elements=model.elements,
                            require=require if name != "test" else (), name=name)
    if f.group_weights:
        known = {labels_of(a).group for a in splits["train"] + splits["validation"]}
        unknown = sorted(set(f.group_weights) - known)
        if unknown:
            from ase_mlp.training.config import ConfigError

            raise ConfigError(f"fit.group_weights: no training or validation frame is in "
                              f"group(s) {unknown} (groups: {sorted(known)})")


def run_fit(config, *, resume: bool = False, progress: bool = True, plots: bool = True,
            echo: bool = True) -> dict:
    """Fit the model a configuration describes and write everything to its ``output``.

    Parameters
    ----------
    config : FitConfig, str or path
        A configuration (:func:`~ase_mlp.training.config.load_config`) or its file.
    resume : bool
        NN-SNAP: continue from ``output/checkpoint.pt`` (one file per committee
        member) when it exists. Descriptors are always reused from ``output/cache``.
    progress : bool
        Progress bars and step-by-step messages.
    plots : bool
        Write ``parity_energy.png``, ``parity_forces.png`` and (NN)
        ``learning_curve.png`` (needs matplotlib; skipped with a message otherwise).
    echo : bool
        Print the metrics table (and, with ``progress``, the messages).

    Returns
    -------
    dict
        ``model`` (fitted), ``metrics`` (``{split: compute_metrics(...)}``),
        ``report`` (of :func:`ase_mlp.training.fit`), ``splits`` (the frames),
        ``output`` (directory) and ``files`` (``{name: path}`` written).
    """
    from ase_mlp.training.fit import fit
    from ase_mlp.training.metrics import compute_metrics, format_table, predictions

    if not isinstance(config, FitConfig):
        config = load_config(config)
    say = print if (progress and echo) else _quiet
    t0 = time.perf_counter()

    # ---- everything that may fail on the inputs, before writing anything
    splits = read_splits(config)
    model = config.model.build()
    _check_data(config, model, splits)
    counts = {k: len(v) for k, v in splits.items()}
    say(f"data: {counts['train']} train, {counts['validation']} validation, {counts['test']} "
        f"test frames from "
        f"{len(config.data.train) + len(config.data.validation) + len(config.data.test)} "
        "file(s)")

    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    files["config"] = out / "config.json"
    files["config"].write_text(json.dumps(_jsonable(config.to_dict()), indent=2) + "\n",
                               encoding="utf-8")

    # ---- fit
    kwargs = config.fit.fit_kwargs()
    is_nn = config.model.type == "nn"
    if is_nn:
        ckpt = out / "checkpoint.pt"
        kwargs.update(checkpoint=ckpt, resume=resume)
        if resume:
            have = ckpt.exists() or any(out.glob("checkpoint.member*.pt"))
            say(f"resume: {'continuing from' if have else 'no checkpoint yet at'} {ckpt}")
    elif resume:
        say("resume: linear/quadratic fits have no checkpoint; cached descriptors are reused")
    if config.model.committee >= 2:
        kwargs.update(committee=config.model.committee,
                      committee_method=config.model.committee_method)
    desc = config.model.descriptor
    say(f"fitting {config.model.type} SNAP for {config.model.elements} (twojmax "
        f"{desc['twojmax']}"
        + (f", committee of {config.model.committee}" if config.model.committee >= 2 else "")
        + (f", on ZBL {config.model.zbl['inner']}-{config.model.zbl['outer']} Å"
           if config.model.zbl else "") + ")")
    fitted, report = fit(model, splits["train"], splits["validation"] or None,
                         cache_dir=out / "cache", seed=config.seed, progress=progress,
                         return_report=True, **kwargs)
    files["model"] = out / "model.pt"
    fitted.save(files["model"])
    say(f"fitted in {report['seconds']:.1f} s (descriptors {report['descriptor_seconds']:.1f} s)"
        f"; wrote {files['model']}")

    # ---- metrics
    metrics, results = {}, {}
    for name in SPLITS:
        frames = splits[name]
        if not frames:
            continue
        results[name] = predictions(fitted, frames, progress=progress and len(frames) > 256)
        metrics[name] = compute_metrics(fitted, frames, results=results[name])
    table = format_table(metrics, groups=True)
    if echo:
        print(table)
    files["metrics_json"] = out / "metrics.json"
    summary = {
        "metrics": metrics,
        "n_frames": counts,
        "model": {"type": config.model.type, "elements": list(fitted.elements),
                  "class": type(fitted).__name__, "cutoff": fitted.cutoff,
                  "n_parameters": int(sum(p.numel() for p in fitted.parameters())),
                  "committee": config.model.committee},
        "fit": _report_summary(report),
        "seed": config.seed,
        "config": None if config.source is None else str(config.source),
        "seconds": time.perf_counter() - t0,
    }
    files["metrics_json"].write_text(json.dumps(_jsonable(summary), indent=2, allow_nan=False)
                                     + "\n", encoding="utf-8")
    files["metrics_txt"] = out / "metrics.txt"
    head = [f"# ase-mlp fit: {config.model.type} SNAP, elements {list(fitted.elements)}, "
            f"seed {config.seed}",
            f"# config: {config.source}" if config.source else "# config: (dict)",
            "# frames: " + ", ".join(f"{k} {v}" for k, v in counts.items()), "", ""]
    files["metrics_txt"].write_text("\n".join(head) + table + "\n", encoding="utf-8")

    # ---- plots
    if plots:
        xlabel = "L-BFGS iteration" if config.fit.nn.get("optimizer") == "lbfgs" else "epoch"
        files.update(write_plots(out, splits, results, report, is_nn=is_nn, say=say,
                                 echo=echo, xlabel=xlabel))

    # ---- LAMMPS
    if config.export.lammps:
        written = export_lammps(fitted, out, stem="model")
        files.update(written)
        say("LAMMPS files: " + ", ".join(p.name for p in written.values()))
    say(f"wrote {out} ({time.perf_counter() - t0:.1f} s in all)")
    return {"model": fitted, "metrics": metrics, "report": report, "splits": splits,
            "output": out, "files": files}


def _report_summary(report: dict) -> dict:
    """The fit report without bulky entries (the ridge scan is kept, it is short)."""
    out = {}
    for k, v in report.items():
        if k == "members":
            out[k] = [_report_summary(m) for m in v]
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- plots
def _histories(report: dict) -> list[tuple[str, list]]:
    if "members" in report:
        return [(f"member {k}", m.get("history") or [])
                for k, m in enumerate(report["members"])]
    return [("", report.get("history") or [])]


def _reference(frames):
    from ase_mlp.training.data import labels_of

    return [labels_of(a) for a in frames]


def write_plots(out: pathlib.Path, splits: dict, results: dict, report: dict, *,
                is_nn: bool, say=print, echo: bool = True, xlabel: str = "epoch") -> dict:
    """Parity plots (energy per atom; forces per element and split) and the NN learning curve.

    Uses matplotlib's object API (no pyplot, no global backend change). Without
    matplotlib prints one line and writes nothing.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        if echo:
            print("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return {}
    files = {}
    names = [n for n in SPLITS if n in results]
    colours = {"train": "tab:blue", "validation": "tab:orange", "test": "tab:green"}

    # energy parity
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = math.inf, -math.inf
    for name in names:
        ref, pred = [], []
        for atoms, lab, res in zip(splits[name], _reference(splits[name]), results[name],
                                   strict=True):
            if lab.energy is not None:
                ref.append(lab.energy / len(atoms))
                pred.append(res["energy"] / len(atoms))
        if not ref:
            continue
        ref, pred = np.array(ref), np.array(pred)
        rmse = 1e3 * float(np.sqrt(np.mean((pred - ref) ** 2)))
        ax.scatter(ref, pred, s=12, alpha=0.7, color=colours[name],
                   label=f"{name} ({len(ref)}): RMSE {rmse:.3g} meV/atom")
        lo, hi = min(lo, ref.min(), pred.min()), max(hi, ref.max(), pred.max())
    if math.isfinite(lo):
        pad = 0.02 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.8)
    ax.set_xlabel("reference energy (eV/atom)")
    ax.set_ylabel("predicted energy (eV/atom)")
    ax.set_title("energy parity")
    ax.legend(fontsize=8)
    files["parity_energy"] = out / "parity_energy.png"
    fig.savefig(files["parity_energy"], dpi=120)

    # force parity: one panel per split, one colour per element
    fig = Figure(figsize=(4.5 * max(len(names), 1), 4.5), layout="constrained")
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    rng = np.random.default_rng(0)
    elements = sorted({s for n in names for a in splits[n] for s in a.get_chemical_symbols()})
    palette = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown",
               "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]
    for ax, name in zip(axes, names, strict=False):
        ref = {el: [] for el in elements}
        pred = {el: [] for el in elements}
        for atoms, lab, res in zip(splits[name], _reference(splits[name]), results[name],
                                   strict=True):
            if lab.forces is None:
                continue
            sym = np.array(atoms.get_chemical_symbols())
            for el in set(sym):
                m = sym == el
                ref[el].append(lab.forces[m].ravel())
                pred[el].append(np.asarray(res["forces"])[m].ravel())
        lo, hi = math.inf, -math.inf
        for k, el in enumerate(elements):
            if not ref[el]:
                continue
            r, p = np.concatenate(ref[el]), np.concatenate(pred[el])
            rmse = float(np.sqrt(np.mean((p - r) ** 2)))
            if r.size > 20000:  # keep the file small; the RMSE uses all points
                pick = rng.choice(r.size, 20000, replace=False)
                r, p = r[pick], p[pick]
            ax.scatter(r, p, s=4, alpha=0.5, color=palette[k % len(palette)],
                       label=f"{el}: RMSE {rmse:.3g} eV/Å", rasterized=True)
            lo, hi = min(lo, r.min(), p.min()), max(hi, r.max(), p.max())
        if math.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.legend(fontsize=8)
        ax.set_title(f"forces, {name}")
        ax.set_xlabel("reference force component (eV/Å)")
        ax.set_ylabel("predicted force component (eV/Å)")
    files["parity_forces"] = out / "parity_forces.png"
    fig.savefig(files["parity_forces"], dpi=120)

    # learning curve
    if is_nn:
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        for k, (label, hist) in enumerate(_histories(report)):
            if not hist:
                continue
            ep = [h["epoch"] for h in hist]
            c = palette[k % len(palette)]
            pre = f"{label} " if label else ""
            ax.plot(ep, [h["train"] for h in hist], "-", color=c, label=f"{pre}train")
            val = [h.get("validation") for h in hist]
            if any(v is not None for v in val):
                ax.plot(ep, [np.nan if v is None else v for v in val], "--", color=c,
                        label=f"{pre}validation")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        ax.set_title("NN-SNAP learning curve")
        ax.legend(fontsize=8)
        files["learning_curve"] = out / "learning_curve.png"
        fig.savefig(files["learning_curve"], dpi=120)
    say("plots: " + ", ".join(p.name for p in files.values()))
    return files


# --------------------------------------------------------------------------- LAMMPS export
def _parts(model):
    """``(zbl or None, [snap members])`` of a fitted model."""
    from ase_mlp.models.committee import Committee
    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    members = list(model.models) if isinstance(model, Committee) else [model]
    zbl, snaps = None, []
    for m in members:
        parts = list(m.models) if isinstance(m, SumModel) else [m]
        z = [p for p in parts if isinstance(p, ZBL)]
        s = [p for p in parts if not isinstance(p, ZBL)]
        if len(s) != 1 or len(z) > 1:
            raise TypeError(f"cannot export {type(m).__name__} with members "
                            f"{[type(p).__name__ for p in parts]} to LAMMPS")
        zbl = z[0] if z else zbl
        snaps.append(s[0])
    return zbl, snaps


def _mean_linear(snaps):
    """The exact mean of linear/quadratic committee members (linear in coefficients)."""
    import copy

    import torch

    mean = copy.deepcopy(snaps[0])
    with torch.no_grad():
        mean.coefficients.copy_(torch.stack([s.coefficients.detach() for s in snaps]).mean(0))
    return mean


def export_lammps(model, out, *, stem: str = "model") -> dict:
    """Write LAMMPS files of a fitted model into ``out``; returns ``{file name: path}``.

    Uses :func:`ase_mlp.io.export.export_lammps`: linear/quadratic SNAP as
    ``STEM.snapcoeff`` + ``STEM.snapparam``, NN-SNAP as ``STEM.mliap.model`` +
    ``STEM.mliap.descriptor``, and ``STEM.lammps``, the include file with the
    ``pair_style``/``pair_coeff`` lines (``hybrid/overlay zbl ...`` with a ZBL
    baseline). LAMMPS has no committees: a linear/quadratic committee is written
    as its mean model (exact: the mean of the coefficients), an NN committee as
    one set of files per member (``STEM_member<k>.*``).
    """
    from ase_mlp.io.export import export_lammps as _export
    from ase_mlp.models.committee import Committee
    from ase_mlp.models.snap import NNSNAP
    from ase_mlp.models.sum import SumModel

    out = pathlib.Path(out)
    if not isinstance(model, Committee):
        pots = [_export(model, out, stem)]
    else:
        zbl, snaps = _parts(model)
        if isinstance(snaps[0], NNSNAP):
            pots = [_export(m, out, f"{stem}_member{k}") for k, m in enumerate(model.models)]
        else:
            mean = _mean_linear(snaps)
            pots = [_export(mean if zbl is None else SumModel(zbl, mean), out, stem)]
    return {p.name: p for pot in pots for p in pot.files}
