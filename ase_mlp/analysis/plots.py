"""Optional matplotlib figures for the analysis results.

matplotlib is imported inside the functions (``pip install 'ase-mlp[plot]'``), so importing
this module does not need it. Figures are built with :class:`matplotlib.figure.Figure`
directly (no ``pyplot``, no global figure registry or backend change) and are returned;
pass ``filename`` to also save them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


_INSTALL = "plotting needs matplotlib: pip install 'ase-mlp[plot]'"

_OMEGA_LABELS = {
    "rad/fs": r"$\omega$ (rad/fs)",
    "THz": r"$\nu$ (THz)",
    "meV": r"$\hbar\omega$ (meV)",
    "cm-1": r"$\tilde\nu$ (cm$^{-1}$)",
}


def _new_figure(ax=None, figsize=(5.0, 3.6)):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(_INSTALL) from exc
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig, filename):
    if filename is not None:
        fig.savefig(filename, dpi=150)
    return fig


def _as_curves(y, default_label: str) -> dict:
    if isinstance(y, Mapping):
        return dict(y)
    return {default_label: y}


def _label(key) -> str:
    if isinstance(key, tuple):
        return "-".join(str(k) for k in key)
    return str(key)


def plot_msd(t, msd, *, fit=None, ax=None, filename=None, loglog: bool = False):
    """Plot MSD curves, optionally with a diffusion fit.

    Parameters
    ----------
    t : array_like
        Lag times (fs).
    msd : array_like or dict
        One MSD curve (Å^2) or a dict of curves (as returned by :func:`~ase_mlp.analysis.msd`).
    fit : DiffusionFit or dict of DiffusionFit, optional
        Fits to draw as dashed lines over their window.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    filename : str or path, optional
        Save the figure there.
    loglog : bool
        Logarithmic axes (ballistic slope 2 vs diffusive slope 1).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _new_figure(ax)
    curves = _as_curves(msd, "MSD")
    fits = fit if isinstance(fit, Mapping) else ({next(iter(curves)): fit} if fit else {})
    t = np.asarray(t, dtype=float)
    for key, y in curves.items():
        sel = t > 0 if loglog else slice(None)
        (line,) = ax.plot(t[sel], np.asarray(y)[sel], label=_label(key))
        f = fits.get(key)
        if f is not None:
            tt = np.linspace(*f.fit_window, 50)
            ax.plot(tt, f.intercept + 2 * f.dim * f.D * tt, "--", color=line.get_color(),
                    label=f"D = {f.D_cm2_s:.3g} cm$^2$/s")
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("t (fs)")
    ax.set_ylabel(r"MSD ($\AA^2$)")
    ax.legend()
    return _finish(fig, filename)


def plot_rdf(r, g, *, coordination=None, ax=None, filename=None):
    """Plot radial distribution functions.

    Parameters
    ----------
    r : array_like
        Radii (Å).
    g : array_like or dict
        One RDF or a dict of them (as returned by :func:`~ase_mlp.analysis.partial_rdf`;
        pairs ``(b, a)`` duplicating ``(a, b)`` are drawn once).
    coordination : dict, optional
        ``{key: (r_n, n)}`` running coordination numbers drawn on a second y axis.
    ax, filename
        As in :func:`plot_msd`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _new_figure(ax)
    curves = _as_curves(g, "g(r)")
    seen = set()
    for key, y in curves.items():
        canon = tuple(sorted(key)) if isinstance(key, tuple) else key
        if canon in seen:
            continue
        seen.add(canon)
        ax.plot(r, y, label=_label(key))
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xlabel(r"r ($\AA$)")
    ax.set_ylabel("g(r)")
    if coordination:
        ax2 = ax.twinx()
        for key, (rn, n) in coordination.items():
            ax2.plot(rn, n, ":", label=f"n {_label(key)}")
        ax2.set_ylabel("coordination number")
        ax2.legend(loc="center right")
    ax.legend()
    return _finish(fig, filename)


def plot_vdos(omega, g, *, unit: str = "THz", ax=None, filename=None, trim: float | None = 1e-3):
    """Plot vibrational densities of states.

    Parameters
    ----------
    omega : array_like
        Angular frequencies (rad/fs), as returned by :func:`~ase_mlp.analysis.vdos`.
    g : array_like or dict
        One spectrum or a dict of them. They are rescaled to the plotted unit so that the
        area stays 1.
    unit : {"THz", "meV", "cm-1", "rad/fs"}
        Unit of the horizontal axis.
    ax, filename
        As in :func:`plot_msd`.
    trim : float or None
        Show frequencies up to 1.1 times the one beyond which every spectrum stays below
        ``trim`` times its maximum (:func:`~ase_mlp.analysis.spectra.signal_cutoff`),
        not the whole range to the Nyquist frequency. None: the whole range.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ase_mlp.analysis.spectra import (
        omega_to_cm1,
        omega_to_mev,
        omega_to_thz,
        signal_cutoff,
    )

    convert = {
        "rad/fs": lambda w: np.asarray(w, dtype=float),
        "THz": omega_to_thz,
        "meV": omega_to_mev,
        "cm-1": omega_to_cm1,
    }
    if unit not in convert:
        raise ValueError(f"unit must be one of {', '.join(convert)}, got {unit!r}")
    fig, ax = _new_figure(ax)
    omega = np.asarray(omega, dtype=float)
    x = convert[unit](omega)
    scale = float(convert[unit](1.0))           # dx/domega (all conversions are linear)
    for key, y in _as_curves(g, "VDOS").items():
        ax.plot(x, np.asarray(y) / scale, label=_label(key))
    ax.set_xlabel(_OMEGA_LABELS[unit])
    ax.set_ylabel(f"g (1/{unit})")
    if trim is not None:
        top = signal_cutoff(x, {k: np.asarray(y) for k, y in _as_curves(g, "VDOS").items()},
                            rel=trim)
        ax.set_xlim(0, min(1.1 * top, float(x[-1])) if top > 0 else None)
    else:
        ax.set_xlim(left=0)
    ax.legend()
    return _finish(fig, filename)
