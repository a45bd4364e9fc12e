"""Unsupervised classification of local atomic environments.

Cluster atoms by their local environment along (large) trajectories to find phases that
were not put in by hand (e.g. an unreported crystalline phase at a reactive interface).

Pipeline (:class:`EnvironmentClassifier`):

1. per-atom descriptors (:class:`EnvironmentDescriptor`: SNAP bispectrum, or SOAP through
   featomic when installed), optionally species-resolved and neighbour-averaged;
2. standardisation and dimensionality reduction (PCA; UMAP with ``reducer="umap"`` when
   ``umap-learn`` is installed);
3. clustering with scikit-learn (``pip install 'ase-mlp[environments]'``): k-means, Gaussian
   mixtures (number of clusters by BIC), HDBSCAN or DBSCAN. The model is fitted on a random
   sample of atom-frames and predicts every atom of every frame (density-based methods
   predict by the nearest fitted sample points);
4. stable labels: clusters are renumbered by decreasing size in the fit sample, ties by the
   mean of the first principal component, so a given seed always gives the same labels.

:func:`classify_environments` streams a trajectory (a file is read frame by frame with
:func:`ase.io.iread`) in chunks and keeps only the per-atom labels and small summaries:
cluster fractions versus time and versus a coordinate along a cell vector, per-cluster
composition, mean descriptor and coordination number, a 2D projection sample, and a few
members of each cluster (written as extxyz by :meth:`EnvironmentResult.write_members`).

Units: Å; time in whatever unit ``times`` is given (frame index by default).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms

from ase_mlp.analysis._environments import (
    NOISE,
    EnvironmentDescriptor,
    EnvironmentResult,
    _chain,
    _environment,
    _last_per_slot,
    _reservoir,
    plot_environments,
)


__all__ = [
    "EnvironmentClassifier",
    "EnvironmentDescriptor",
    "EnvironmentResult",
    "add_cli",
    "classify_environments",
    "cli_main",
    "plot_environments",
]

_SKLEARN = ("environment clustering needs scikit-learn: "
            "pip install 'ase-mlp[environments]' (or pip install scikit-learn)")
METHODS = ("gmm", "kmeans", "hdbscan", "dbscan")


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise ImportError(_SKLEARN) from exc


def _frames_of(source, index=":"):
    """A fresh iterator over the frames of ``source`` (path, Atoms or iterable)."""
    if isinstance(source, (str, os.PathLike)):
        import ase.io

        if not os.path.exists(source):
            raise FileNotFoundError(f"trajectory file {os.fspath(source)!r} does not exist")
        return ase.io.iread(source, index=index)
    if isinstance(source, Atoms):
        return iter([source])
    try:
        return iter(source)
    except TypeError:
        raise ValueError(f"trajectory must be a file name, an ase.Atoms or an iterable of "
                         f"them, got {type(source).__name__}") from None


def _check_frame(atoms, k):
    if not isinstance(atoms, Atoms):
        raise ValueError(f"frame {k} is a {type(atoms).__name__}, expected ase.Atoms")
    if len(atoms) == 0:
        raise ValueError(f"frame {k} has no atoms")
    return atoms


class EnvironmentClassifier:
    """Fit a clustering of local environments on a sample, then label any frame.

    Parameters
    ----------
    descriptor : EnvironmentDescriptor
        Per-atom descriptor (see there for species blocks and neighbour averaging).
    method : {"gmm", "kmeans", "hdbscan", "dbscan"}
        Clustering algorithm (scikit-learn).
    n_clusters : int, optional
        Number of clusters for "gmm"/"kmeans"; None chooses it from the Bayesian
        information criterion of Gaussian mixtures with 1 to ``max_clusters`` components
        (for "kmeans" too): the smallest ``k`` with ``BIC(k) - BIC_min <= bic_tolerance *
        (BIC(1) - BIC_min)``.
    bic_tolerance : float
        0 takes the plain BIC minimum. Descriptor clouds of a phase are not Gaussian, and
        with tens of thousands of samples the minimum splits them into several components
        that gain little (here: Si diamond + beta-tin, 20 000 samples: minimum at 7, with
        ``BIC(2)`` within 6 % of the range); the default 0.1 keeps the clusters that
        matter.
    max_clusters : int
        Upper bound when ``n_clusters`` is None.
    n_components : int
        Dimensions kept by the reducer (PCA components, or UMAP embedding dimensions).
        Keep it small: the BIC over-splits clusters that are not Gaussian, which they are
        less and less in the minor components (4 keeps about 98 % of the variance of
        Si crystal + liquid bispectra).
    reducer : {"pca", "umap", None}
        Dimensionality reduction after standardisation (UMAP needs ``umap-learn``).
    standardize : bool
        Scale every descriptor component to zero mean and unit variance first.
    max_fit_samples : int
        Atom-frames drawn (without replacement) from the fit frames to fit the model.
    min_cluster_size : int
        HDBSCAN's smallest cluster, and DBSCAN's ``min_samples``.
    eps : float, optional
        DBSCAN radius in the reduced space; None uses the 95th percentile of the
        ``min_cluster_size``-th nearest-neighbour distances of the sample.
    covariance_type : str
        Gaussian-mixture covariance ("full", "diag", "tied", "spherical").
    seed : int
        Seed of every random choice (sampling, k-means / mixture initialisation, UMAP).
    n_threads : int or None
        BLAS/OpenMP threads of the scikit-learn calls (set only inside them with
        :func:`threadpoolctl.threadpool_limits` and restored after; None: leave as is).
        The matrices are small, so 1 (default) is fastest on a busy machine.
    """

    def __init__(self, descriptor: EnvironmentDescriptor, *, method: str = "gmm",
                 n_clusters: int | None = None, max_clusters: int = 8, n_components: int = 4,
                 bic_tolerance: float = 0.1,
                 reducer: str | None = "pca", standardize: bool = True,
                 max_fit_samples: int = 20000, min_cluster_size: int = 25,
                 eps: float | None = None, covariance_type: str = "full", seed: int = 0,
                 n_threads: int | None = 1):
        if not isinstance(descriptor, EnvironmentDescriptor):
            raise TypeError(f"descriptor must be an EnvironmentDescriptor, got "
                            f"{type(descriptor).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if n_clusters is not None and (int(n_clusters) != n_clusters or n_clusters < 1):
            raise ValueError(f"n_clusters must be a positive integer or None, got {n_clusters!r}")
        if method in ("hdbscan", "dbscan") and n_clusters is not None:
            raise ValueError(f"method={method!r} finds the number of clusters itself: "
                             "leave n_clusters=None")
        if int(max_clusters) < 1:
            raise ValueError(f"max_clusters must be >= 1, got {max_clusters}")
        if not 0.0 <= bic_tolerance < 1.0:
            raise ValueError(f"bic_tolerance must be in [0, 1), got {bic_tolerance}")
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if reducer not in ("pca", "umap", None):
            raise ValueError(f"reducer must be 'pca', 'umap' or None, got {reducer!r}")
        if int(max_fit_samples) < 2:
            raise ValueError(f"max_fit_samples must be >= 2, got {max_fit_samples}")
        if eps is not None and not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        _sklearn()
        self.descriptor = descriptor
        self.method = method
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        self.max_clusters = int(max_clusters)
        self.n_components = int(n_components)
        self.bic_tolerance = float(bic_tolerance)
        self.reducer = reducer
        self.standardize = bool(standardize)
        self.max_fit_samples = int(max_fit_samples)
        self.min_cluster_size = int(min_cluster_size)
        self.eps = eps
        self.covariance_type = covariance_type
        self.seed = int(seed)
        self.n_threads = None if n_threads is None else int(n_threads)
        self.fitted = False
        self.bic: dict[int, float] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, frames, *, stride: int = 1, max_frames: int | None = None
            ) -> EnvironmentClassifier:
        """Fit on a random sample of the atoms of every ``stride``-th frame.

        ``frames``: an :class:`ase.Atoms`, an iterable of them, or a file name (streamed:
        the sample is drawn by reservoir sampling, at most ``max_fit_samples`` rows are
        held). ``max_frames`` caps the number of frames used.
        """
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_frames is not None and int(max_frames) < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        rng = np.random.default_rng(self.seed)
        sample = None
        seen = used = 0
        for k, atoms in enumerate(_frames_of(frames)):
            if k % stride:
                continue
            if max_frames is not None and used >= max_frames:
                break
            used += 1
            X, _, _ = self.descriptor.compute(_check_frame(atoms, k), f"frame {k}")
            if sample is None:
                sample = np.empty((self.max_fit_samples, X.shape[1]))
            slot, a = _last_per_slot(_reservoir(rng, seen, len(X), self.max_fit_samples))
            sample[slot] = X[a]
            seen += len(X)
        if sample is None:
            raise ValueError("no frames to fit on")
        return self.fit_features(sample[:min(seen, self.max_fit_samples)])

    def _limits(self):
        if self.n_threads is None:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=self.n_threads)

    def fit_features(self, X) -> EnvironmentClassifier:
        """Fit on descriptor rows ``X`` (n_samples, n_features) directly."""
        with self._limits():
            return self._fit_features(X)

    def _fit_features(self, X) -> EnvironmentClassifier:
        from sklearn.preprocessing import StandardScaler

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"X must have shape (n_samples >= 2, n_features), got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"X has non-finite values in row "
                             f"{int(np.nonzero(~np.isfinite(X).all(1))[0][0])}")
        self.n_features = X.shape[1]
        self._scaler = StandardScaler(with_std=self.standardize).fit(X)
        Z = self._scaler.transform(X)
        # a second PCA always gives the ordering / 2D projection axes
        from sklearn.decomposition import PCA

        n_pca = min(self.n_components, Z.shape[1], len(Z))
        self._pca = PCA(n_components=n_pca, svd_solver="full").fit(Z)
        if self.reducer == "pca":
            Y = self._pca.transform(Z)
            self._umap = None
        elif self.reducer == "umap":  # pragma: no cover - optional extra
            try:
                import umap
            except ImportError as exc:
                raise ImportError("reducer='umap' needs umap-learn: pip install umap-learn") \
                    from exc
            self._umap = umap.UMAP(n_components=self.n_components, random_state=self.seed)
            Y = self._umap.fit_transform(Z)
        else:
            Y = Z
            self._umap = None
        raw = self._cluster(Y)
        self._relabel(raw, self._pca.transform(Z)[:, 0])
        self.fitted = True
        self.fit_labels_ = self._map(raw)
        return self

    def _cluster(self, Y):
        from sklearn.cluster import DBSCAN, HDBSCAN, KMeans
        from sklearn.mixture import GaussianMixture
        from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

        self._gmm = self._kmeans = self._knn = None
        if self.method in ("gmm", "kmeans"):
            k = self.n_clusters
            if k is None:
                k = self._bic_choice(Y)
            k = min(k, len(Y))
            if self.method == "gmm":
                self._gmm = GaussianMixture(k, covariance_type=self.covariance_type,
                                            n_init=2, random_state=self.seed,
                                            reg_covar=1e-5).fit(Y)
                return self._gmm.predict(Y)
            self._kmeans = KMeans(k, n_init=5, random_state=self.seed).fit(Y)
            return self._kmeans.labels_
        if self.method == "hdbscan":
            raw = HDBSCAN(min_cluster_size=self.min_cluster_size, copy=True).fit_predict(Y)
        else:
            eps = self.eps
            if eps is None:
                nn = NearestNeighbors(n_neighbors=min(self.min_cluster_size, len(Y))).fit(Y)
                eps = float(np.percentile(nn.kneighbors(Y)[0][:, -1], 95))
            self.eps_ = eps
            raw = DBSCAN(eps=eps, min_samples=self.min_cluster_size).fit_predict(Y)
        self._knn = KNeighborsClassifier(n_neighbors=min(5, len(Y))).fit(Y, raw)
        return raw

    def _bic_choice(self, Y) -> int:
        from sklearn.mixture import GaussianMixture

        self.bic = {}
        for k in range(1, min(self.max_clusters, len(Y) - 1) + 1):
            g = GaussianMixture(k, covariance_type=self.covariance_type, n_init=1,
                                random_state=self.seed, reg_covar=1e-5).fit(Y)
            self.bic[k] = float(g.bic(Y))
        best = min(self.bic.values())
        span = self.bic[1] - best
        return min(k for k, b in self.bic.items() if b - best <= self.bic_tolerance * span)

    def _relabel(self, raw, pc1):
        """Stable numbering: by decreasing size, ties by mean PC1; noise stays -1."""
        ids = [c for c in np.unique(raw) if c != NOISE]
        key = sorted(ids, key=lambda c: (-int((raw == c).sum()), float(pc1[raw == c].mean()),
                                         int(c)))
        top = int(max(np.max(raw), 0)) + 1
        self._lut = np.full(top + 1, NOISE, dtype=np.int64)  # last slot: noise
        for new, old in enumerate(key):
            self._lut[old] = new
        self.n_clusters_ = len(key)

    def _map(self, raw):
        raw = np.asarray(raw, dtype=np.int64)
        return self._lut[np.where(raw == NOISE, len(self._lut) - 1, raw)]

    # -------------------------------------------------------------- predict
    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError("EnvironmentClassifier is not fitted: call fit() first")

    def reduce(self, X):
        """Standardised, reduced coordinates of descriptor rows (the clustering space)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}")
        Z = self._scaler.transform(X)
        if self.reducer == "pca":
            return self._pca.transform(Z)
        if self.reducer == "umap":  # pragma: no cover - optional extra
            return self._umap.transform(Z)
        return Z

    def project(self, X) -> np.ndarray:
        """First two principal components of descriptor rows (for plots)."""
        self._check_fitted()
        P = self._pca.transform(self._scaler.transform(np.asarray(X, dtype=np.float64)))
        if P.shape[1] == 1:
            P = np.column_stack([P, np.zeros(len(P))])
        return P[:, :2]

    def predict_features(self, X) -> np.ndarray:
        """Stable cluster labels (``-1``: noise of HDBSCAN/DBSCAN) of descriptor rows."""
        Y = self.reduce(X)
        with self._limits():
            if self._gmm is not None:
                raw = self._gmm.predict(Y)
            elif self._kmeans is not None:
                raw = self._kmeans.predict(Y)
            else:
                raw = self._knn.predict(Y)
        return self._map(raw)

    def predict(self, atoms: Atoms) -> np.ndarray:
        """Stable cluster label of every atom of one frame."""
        X, _, _ = self.descriptor.compute(_check_frame(atoms, 0))
        return self.predict_features(X)


def classify_environments(trajectory, *, descriptor: EnvironmentDescriptor | None = None,
                          classifier: EnvironmentClassifier | None = None,
                          elements: Sequence[str] | None = None, index=":",
                          fit_stride: int = 1, fit_frames: int | None = None,
                          times=None, axis: int | None = None, bins: int = 40,
                          n_members: int = 20, n_projection: int = 5000,
                          labelled_output=None, progress: bool = False,
                          **classifier_kwargs) -> EnvironmentResult:
    """Cluster the local environments of a trajectory and label every atom of every frame.

    Parameters
    ----------
    trajectory : str, path, ase.Atoms or iterable of ase.Atoms
        A file (read twice, frame by frame, with :func:`ase.io.iread`; only per-atom labels
        and summaries are kept, so 1e6 atom-frames fit in memory) or frames in memory. A
        one-shot generator is fitted on its first ``fit_frames`` frames (default 1).
    descriptor : EnvironmentDescriptor, optional
        Default: bispectrum (twojmax 6, neighbour-averaged once) for ``elements``.
    classifier : EnvironmentClassifier, optional
        A fitted or unfitted classifier; default one built from ``classifier_kwargs``
        (``method``, ``n_clusters``, ``seed``, ...; see :class:`EnvironmentClassifier`).
    elements : sequence of str, optional
        Element list of the default descriptor; default: the elements of the first frame.
    index : str
        ASE slice of the frames of a file (e.g. ``"::10"``).
    fit_stride, fit_frames : int
        Fit on every ``fit_stride``-th frame, at most ``fit_frames`` of them.
    times : array_like, optional
        Time of every frame (any unit) for ``fractions`` versus time.
    axis : {0, 1, 2}, optional
        Cell vector along which cluster fractions are binned, e.g. across an interface:
        bins of the wrapped fractional coordinate; edges in Å, scaled by the mean cell
        height along that vector.
    bins : int
        Number of bins of the spatial profile.
    n_members : int
        Environments kept (reservoir-sampled) per cluster for :meth:`~EnvironmentResult.
        write_members`.
    n_projection : int
        Atom-frames kept (reservoir-sampled) for the 2D projection plot.
    labelled_output : str, optional
        extxyz file to which every frame is written with ``arrays["cluster"]``.
    progress : bool
        Show a tqdm progress bar.
    """
    from ase_mlp.analysis.phases import default_cutoffs

    if axis is not None and axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1, 2 or None, got {axis!r}")
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if fit_frames is not None and int(fit_frames) < 1:
        raise ValueError(f"fit_frames must be >= 1, got {fit_frames}")
    is_file = isinstance(trajectory, (str, os.PathLike))
    if isinstance(trajectory, Atoms):
        trajectory = [trajectory]
    reiterable = is_file or (isinstance(trajectory, Iterable)
                             and iter(trajectory) is not trajectory)
    frames = _frames_of(trajectory, index)
    buffered = []
    fit_source = None
    if classifier is None or not classifier.fitted:
        if reiterable:
            fit_source = trajectory if not is_file else _frames_of(trajectory, index)
            n_fit = fit_frames
        else:  # one-shot iterator: fit on its first frames, kept for the labelling pass
            n_fit = 1 if fit_frames is None else int(fit_frames)
            for atoms in frames:
                buffered.append(atoms)
                if len(buffered) >= (n_fit - 1) * fit_stride + 1:
                    break
            fit_source = buffered
            if not buffered:
                raise ValueError("the trajectory has no frames")
    if descriptor is None and classifier is not None:
        descriptor = classifier.descriptor
    if descriptor is None:
        if elements is None:
            first = next(iter(_frames_of(trajectory, index) if is_file else
                              (buffered or trajectory)), None)
            if first is None:
                raise ValueError("the trajectory has no frames")
            elements = sorted(set(first.get_chemical_symbols()))
        descriptor = EnvironmentDescriptor(elements)
    if classifier is None:
        classifier = EnvironmentClassifier(descriptor, **classifier_kwargs)
    elif classifier_kwargs:
        raise ValueError(f"classifier is given: these options would be ignored: "
                         f"{sorted(classifier_kwargs)}")
    if not classifier.fitted:
        classifier.fit(fit_source, stride=fit_stride, max_frames=n_fit)
    descriptor = classifier.descriptor
    K = classifier.n_clusters_
    E = len(descriptor.elements)
    rng = np.random.default_rng(classifier.seed + 1)
    first_shell = default_cutoffs(descriptor.elements)
    cn_cut = np.array([[first_shell[(a, b)] for b in descriptor.elements]
                       for a in descriptor.elements])

    labels, offsets, fractions = [], [0], []
    composition = np.zeros((K, E), dtype=np.int64)
    sum_desc = np.zeros((K, 0))
    sum_cn = np.zeros(K)
    prof = np.zeros((bins, K)) if axis is not None else None
    heights = []
    proj, proj_lab, seen_proj = [], [], 0
    members = {c: [] for c in range(K)}
    seen = np.zeros(K, dtype=np.int64)
    writer = None
    if labelled_output is not None:
        import ase.io

        writer = open(labelled_output, "w")  # noqa: SIM115 - closed below
    stream = frames if not buffered else _chain(buffered, frames)
    if progress:
        from tqdm.auto import tqdm

        total = len(trajectory) if (not is_file and hasattr(trajectory, "__len__")) else None
        stream = tqdm(stream, total=total, desc="environments", unit="frame")
    try:
        for k, atoms in enumerate(stream):
            _check_frame(atoms, k)
            X, species, (i, j, r, vec) = descriptor.compute(atoms, f"frame {k}")
            lab = classifier.predict_features(X)
            n = len(atoms)
            labels.append(lab.astype(np.int16 if K < 32000 else np.int32))
            offsets.append(offsets[-1] + n)
            ok = lab >= 0
            fractions.append(np.bincount(lab[ok], minlength=K)[:K] / n)
            composition += np.bincount(lab[ok] * E + species[ok],
                                       minlength=K * E).reshape(K, E)
            onehot = np.zeros((K, n))
            onehot[lab[ok], np.nonzero(ok)[0]] = 1.0
            if sum_desc.shape[1] == 0:
                sum_desc = np.zeros((K, X.shape[1]))
            sum_desc += onehot @ X
            cn = np.bincount(i[r < cn_cut[species[i], species[j]]], minlength=n)
            sum_cn += onehot @ cn
            if prof is not None:
                s = atoms.cell.scaled_positions(atoms.positions)[:, axis] % 1.0
                h = atoms.cell.volume / np.linalg.norm(np.cross(*np.delete(
                    atoms.cell.array, axis, axis=0)))
                heights.append(h)
                b = np.minimum((s * bins).astype(np.int64), bins - 1)
                prof += np.bincount(b[ok] * K + lab[ok], minlength=bins * K).reshape(bins, K)
            # reservoir samples: 2D projection and member environments
            m = len(lab)
            take = _reservoir(rng, seen_proj, m, n_projection)
            if len(take):
                P = classifier.project(X[take[:, 1]])
                for (slot, a), p in zip(take, P, strict=True):
                    if slot < len(proj):
                        proj[slot], proj_lab[slot] = p, lab[a]
                    else:
                        proj.append(p)
                        proj_lab.append(lab[a])
            seen_proj += m
            for c in range(K):
                idx = np.nonzero(lab == c)[0]
                for slot, a in _reservoir(rng, seen[c], len(idx), n_members):
                    env = _environment(atoms, idx[a], i, j, vec, k, c)
                    if slot < len(members[c]):
                        members[c][slot] = env
                    else:
                        members[c].append(env)
                seen[c] += len(idx)
            if writer is not None:
                out = atoms.copy()
                out.calc = None
                out.arrays["cluster"] = lab.astype(np.int64)
                ase.io.write(writer, out, format="extxyz")
    finally:
        if writer is not None:
            writer.close()
    if not labels:
        raise ValueError("the trajectory has no frames")
    nf = len(labels)
    if times is None:
        times = np.arange(nf, dtype=float)
    times = np.asarray(times, dtype=float)
    if times.shape != (nf,):
        raise ValueError(f"times has shape {times.shape}, expected ({nf},): one per frame")
    total = composition.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_desc = sum_desc / total[:, None]
        mean_cn = sum_cn / total
        if prof is not None:
            prof = prof / prof.sum(1, keepdims=True)
    edges = None
    if prof is not None:
        edges = np.linspace(0.0, float(np.mean(heights)), bins + 1)
    proj_arr = np.array(proj).reshape(-1, 2)
    return EnvironmentResult(
        labels=np.concatenate(labels), offsets=np.asarray(offsets, dtype=np.int64),
        n_clusters=K, times=times, fractions=np.array(fractions), composition=composition,
        elements=list(descriptor.elements), mean_descriptor=mean_desc,
        mean_coordination=mean_cn, profile_edges=edges, profile=prof,
        projection=proj_arr, projection_labels=np.asarray(proj_lab, dtype=np.int64),
        members=members,
        settings=dict(descriptor=descriptor.config(), method=classifier.method,
                      n_clusters=K, seed=classifier.seed, reducer=classifier.reducer,
                      n_components=classifier.n_components, bic=classifier.bic,
                      bic_tolerance=classifier.bic_tolerance))


# ----------------------------------------------------------------------------- CLI
def add_cli(subparsers):
    """Add the ``environments`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "environments", help="unsupervised classification of local atomic environments "
        "(bispectrum + PCA + clustering): labels, fractions vs time/position, plots")
    p.add_argument("trajectory", help="trajectory (any format ASE reads)")
    p.add_argument("--index", default=":", help="ASE slice of the frames (e.g. '::10')")
    p.add_argument("--method", choices=METHODS, default="gmm", help="clustering method")
    p.add_argument("--n-clusters", type=int, default=None,
                   help="number of clusters (gmm/kmeans); default: lowest BIC")
    p.add_argument("--max-clusters", type=int, default=8, help="upper bound for the BIC scan")
    p.add_argument("--bic-tolerance", type=float, default=0.1,
                   help="smallest k within this fraction of the BIC range of the minimum "
                        "(0: the BIC minimum)")
    p.add_argument("--min-cluster-size", type=int, default=25, help="HDBSCAN/DBSCAN")
    p.add_argument("--descriptor", choices=("bispectrum", "soap"), default="bispectrum")
    p.add_argument("--twojmax", type=int, default=6, help="bispectrum band limit")
    p.add_argument("--cutoff-factor", type=float, default=1.8,
                   help="pair cutoff = factor x sum of covalent radii")
    p.add_argument("--cutoff", type=float, default=None, help="one cutoff for all pairs (Å)")
    p.add_argument("--species-blocks", action="store_true",
                   help="species-resolved descriptor blocks")
    p.add_argument("--average", type=int, default=1, help="neighbour-averaging passes")
    p.add_argument("--n-components", type=int, default=4, help="PCA components")
    p.add_argument("--fit-stride", type=int, default=1, help="fit on every n-th frame")
    p.add_argument("--fit-frames", type=int, default=None, help="fit on at most n frames")
    p.add_argument("--max-fit-samples", type=int, default=20000,
                   help="atom-frames sampled for the fit")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), default=None,
                   help="cell vector for cluster fractions versus position")
    p.add_argument("--bins", type=int, default=40, help="bins of the position profile")
    p.add_argument("--dt", type=float, default=None,
                   help="time between frames (any unit) for the time axis; default frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=20,
                   help="environments per cluster written to cluster_<c>.extxyz")
    p.add_argument("--labelled", action="store_true",
                   help="also write labelled.extxyz (every frame, arrays['cluster'])")
    p.add_argument("--no-plots", action="store_true", help="skip the png figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--output", default=None,
                   help="output directory (default: TRAJ_environments beside the trajectory, "
                        "as `ase-mlp analyze` does)")
    p.set_defaults(func=cli_main)
    return p


def cli_main(args) -> int:
    """Run ``ase-mlp environments``; writes summary.json, labels.npz, extxyz and png files."""
    if not os.path.exists(args.trajectory):
        raise FileNotFoundError(f"trajectory file {args.trajectory!r} does not exist")
    import ase.io

    first = ase.io.read(args.trajectory, index=0)
    descriptor = EnvironmentDescriptor(
        sorted(set(first.get_chemical_symbols())), kind=args.descriptor,
        twojmax=args.twojmax, cutoff_factor=args.cutoff_factor, cutoff=args.cutoff,
        species_blocks=args.species_blocks, average=args.average)
    classifier = EnvironmentClassifier(
        descriptor, method=args.method, n_clusters=args.n_clusters,
        max_clusters=args.max_clusters, bic_tolerance=args.bic_tolerance,
        n_components=args.n_components,
        max_fit_samples=args.max_fit_samples, min_cluster_size=args.min_cluster_size,
        seed=args.seed)
    if args.output is None:
        stem, _ = os.path.splitext(args.trajectory)
        args.output = f"{stem}_environments"
    os.makedirs(args.output, exist_ok=True)
    res = classify_environments(
        args.trajectory, classifier=classifier, index=args.index,
        fit_stride=args.fit_stride, fit_frames=args.fit_frames, axis=args.axis,
        bins=args.bins, n_members=args.members, progress=not args.no_progress,
        labelled_output=(os.path.join(args.output, "labelled.extxyz")
                         if args.labelled else None))
    if args.dt is not None:
        res.times = res.times * args.dt
    np.savez_compressed(os.path.join(args.output, "labels.npz"), labels=res.labels,
                        offsets=res.offsets, times=res.times, fractions=res.fractions,
                        mean_descriptor=res.mean_descriptor,
                        **({} if res.profile is None else
                           dict(profile=res.profile, profile_edges=res.profile_edges)))
    with open(os.path.join(args.output, "summary.json"), "w") as fh:
        json.dump(res.summary(), fh, indent=2)
    res.write_members(args.output)
    if not args.no_plots:
        try:
            plot_environments(res, args.output,
                              time_label="time" if args.dt is not None else "frame")
        except ImportError as exc:
            print(f"plots skipped: {exc}")
    s = res.summary()
    print(f"{s['n_atom_frames']} atom-frames in {s['n_frames']} frames: "
          f"{s['n_clusters']} clusters")
    for c in s["clusters"]:
        comp = " ".join(f"{e}{n}" for e, n in c["composition"].items() if n)
        print(f"  cluster {c['label']}: {100 * c['fraction']:.1f} %  CN "
              f"{c['mean_coordination']:.2f}  {comp}")
    print(f"written to {args.output}/")
    return 0
