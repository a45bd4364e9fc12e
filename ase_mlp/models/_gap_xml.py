"""Reader of the GAP potential files written by ``gap_fit`` (QUIP/GAP ``.xml``).

The layout read here is what ``gap_fit`` writes (GAP's ``gp_predict`` serialisation)::

    <GAP_...>                                    (wrapper named after the label; optional)
      <Potential label=L init_args="IP GAP label=L"/>
      <GAP_params label=L gap_version=...>
        <GAP_data do_core="F"> <e0 Z=".." value=".."/> ... </GAP_data>
        <gpSparse label=L n_coordinate=N>
          <gpCoordinates dimensions=d signal_variance=delta signal_mean=f0
                         covariance_type=1|2 [zeta=..] n_sparseX=M n_permutations=1
                         [sparseX_filename=F sparseX_md5sum=..]>
            <theta> d numbers </theta>           (ard_se only)
            <descriptor> distance_2b cutoff=... Z1=.. Z2=.. </descriptor>
            <permutation i="1">1</permutation>
            <sparseX i=.. alpha=.. sparseCutoff=..> d numbers (inline) </sparseX>
            ...                                  (or sparseX_slice children, d > 50)

With ``sparse_separate_file=T`` (gap_fit's default) the sparse points live in a text file
``F`` next to the xml (``d * M`` numbers, one per line, point after point); its md5 sum is
checked when the xml records one. Everything else (core potentials, ``Sum`` of an ``IP``
and GAP, covariance types other than ard_se and dot_product, permutations) is refused by
:func:`read_gap_xml` with :class:`GapFormatError` naming the file and what was found.
The parser only reads data: it never evaluates anything from the file.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import xml.etree.ElementTree as ET

import numpy as np

from ase_mlp.models.serialization import ModelFormatError


class GapFormatError(ModelFormatError):
    """A GAP ``.xml`` file cannot be read as a supported GAP model; the message names the
    file and the element or key."""


COVARIANCE_NAMES = {0: "none", 1: "ard_se", 2: "dot_product", 3: "bond_real_space", 4: "pp"}
_TOKEN = re.compile(r"""([A-Za-z_][\w]*)\s*=\s*(\{[^}]*\}|"[^"]*"|'[^']*'|\S+)|(\S+)""")


def parse_args_string(text: str) -> tuple[str, dict]:
    """Split a QUIP argument string ``"name key=value key={a b} flag"`` into the leading
    name and a dict of strings (braces and quotes stripped; a bare flag maps to ``"T"``)."""
    name, args = None, {}
    for m in _TOKEN.finditer(text):
        key, value, bare = m.groups()
        if bare is not None:
            if name is None:
                name = bare
            else:
                args[bare] = "T"
            continue
        if value[:1] in "{\"'":
            value = value[1:-1]
        args[key] = value.strip()
    return name or "", args


def _float(el, key, path, where):
    value = el.get(key)
    if value is None:
        raise GapFormatError(f"{path}: {where} has no attribute {key!r}")
    try:
        return float(value)
    except ValueError:
        raise GapFormatError(f"{path}: {where} attribute {key}={value!r} is not a number") \
            from None


def _numbers(text, path, where) -> np.ndarray:
    try:
        return np.array([float(t) for t in (text or "").split()], dtype=np.float64)
    except ValueError as err:
        raise GapFormatError(f"{path}: {where} holds a non-number ({err})") from None


def _find_gap_params(root, path):
    if root.tag == "GAP_params":
        return None, root
    pot = root.find("Potential")
    params = root.find("GAP_params")
    others = sorted({c.tag for c in root} - {"Potential", "GAP_params"})
    if params is None:
        raise GapFormatError(
            f"{path}: no <GAP_params> element (top-level elements: {[c.tag for c in root]}); "
            "not a GAP potential file")
    if pot is not None:
        init = pot.get("init_args", "")
        name, args = parse_args_string(init)
        words = init.split()
        if name != "IP" or len(words) < 2 or words[1] != "GAP":
            raise GapFormatError(
                f"{path}: <Potential init_args={init!r}> is not a plain 'IP GAP' potential "
                "(a Sum of a core potential and GAP, or another potential); only pure GAP "
                "files are supported (remove the core and add it as a separate ase_mlp "
                "model, e.g. ZBL, in a SumModel)")
    if others:
        raise GapFormatError(
            f"{path}: holds parameters of other potentials besides GAP: {others}; core "
            "potentials are not supported")
    return pot, params


def read_gap_xml(path) -> dict:
    """Read a GAP xml file into plain data.

    Returns ``{"label", "gap_version", "e0": {Z: value}, "coordinates": [...]}`` where
    each coordinate is a dict with ``descriptor`` (the string), ``name``, ``args``, ``covariance``
    ("ard_se" or "dot_product"), ``delta``, ``f0``, ``zeta``, ``theta`` (d,),
    ``sparse_x`` (M, d), ``alpha`` (M,), ``sparse_cutoff`` (M,), ``label``.
    """
    path = pathlib.Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise GapFormatError(f"{path}: not a readable xml file: {err}") from None
    _, params = _find_gap_params(root, path)
    label = params.get("label", "")
    data = params.find("GAP_data")
    if data is None:
        raise GapFormatError(f"{path}: <GAP_params> has no <GAP_data> element")
    if data.get("do_core", "F").strip().upper().startswith("T"):
        raise GapFormatError(
            f"{path}: <GAP_data do_core=T>: the GAP includes a core potential "
            "(core_param_file), which is not supported")
    # old files carry one e0 for every element as an attribute of GAP_data
    e0_default = _float(data, "e0", path, "<GAP_data>") if data.get("e0") else 0.0
    e0 = {}
    for el in data.findall("e0"):
        z = int(_float(el, "Z", path, "<e0>"))
        e0[z] = _float(el, "value", path, f"<e0 Z={z}>")
    sparse = params.findall("gpSparse")
    if len(sparse) != 1:
        raise GapFormatError(f"{path}: expected one <gpSparse> element, found {len(sparse)}")
    coords = sparse[0].findall("gpCoordinates")
    n_declared = sparse[0].get("n_coordinate")
    if n_declared is not None and int(n_declared) != len(coords):
        raise GapFormatError(
            f"{path}: <gpSparse n_coordinate={n_declared}> but {len(coords)} <gpCoordinates>")
    if not coords:
        raise GapFormatError(f"{path}: <gpSparse> holds no <gpCoordinates>")
    version = params.get("gap_version")
    try:
        version = int(float(version)) if version else None
    except ValueError:
        raise GapFormatError(f"{path}: <GAP_params gap_version={version!r}> is not a number") \
            from None
    return {"label": label, "e0": e0, "e0_default": e0_default, "gap_version": version,
            "coordinates": [_read_coordinate(c, k, path) for k, c in enumerate(coords)]}


def _read_coordinate(el, k, path) -> dict:
    where = f"<gpCoordinates> #{k + 1} (label {el.get('label')!r})"
    d = int(_float(el, "dimensions", path, where))
    cov_id = int(_float(el, "covariance_type", path, where))
    cov = COVARIANCE_NAMES.get(cov_id, str(cov_id))
    if cov not in ("ard_se", "dot_product"):
        raise GapFormatError(
            f"{path}: {where} has covariance_type {cov_id} ({cov}); only ard_se (1) and "
            "dot_product (2) are supported")
    if el.get("sparsified", "T").strip().upper().startswith("F"):
        raise GapFormatError(f"{path}: {where} is not sparsified (a full GP); not supported")
    n_perm = int(_float(el, "n_permutations", path, where)) if el.get("n_permutations") else 1
    if n_perm != 1:
        raise GapFormatError(
            f"{path}: {where} has n_permutations={n_perm}; permutation-symmetrised "
            "covariances are not supported")
    m = int(_float(el, "n_sparseX", path, where))
    desc_el = el.find("descriptor")
    if desc_el is None or not (desc_el.text or "").strip():
        raise GapFormatError(f"{path}: {where} has no <descriptor> string")
    descriptor = " ".join(desc_el.text.split())
    name, args = parse_args_string(descriptor)
    theta = np.zeros(0)
    if cov == "ard_se":
        th = el.find("theta")
        if th is None:
            raise GapFormatError(f"{path}: {where} (ard_se) has no <theta>")
        theta = _numbers(th.text, path, f"{where} <theta>")
        if theta.shape != (d,):
            raise GapFormatError(f"{path}: {where} <theta> has {theta.size} values, expected {d}")
    points = el.findall("sparseX")
    if len(points) != m:
        raise GapFormatError(f"{path}: {where} declares n_sparseX={m} but holds {len(points)} "
                             "<sparseX> elements")
    alpha = np.array([_float(p, "alpha", path, f"{where} <sparseX>") for p in points])
    cut = np.array([_float(p, "sparseCutoff", path, f"{where} <sparseX>") for p in points])
    filename = el.get("sparseX_filename")
    if filename:
        x = _read_sparse_file(path, filename, el.get("sparseX_md5sum"), m, d, where)
    else:
        rows = []
        for p in points:
            if p.get("sliced", "F").strip().upper().startswith("T"):
                text = " ".join(s.text or "" for s in p.findall("sparseX_slice"))
            else:
                text = p.text
            row = _numbers(text, path, f"{where} <sparseX i={p.get('i')}>")
            if row.shape != (d,):
                raise GapFormatError(f"{path}: {where} <sparseX i={p.get('i')}> holds "
                                     f"{row.size} values, expected {d}")
            rows.append(row)
        x = np.array(rows).reshape(m, d)
    zeta = float(el.get("zeta", "1")) if cov == "dot_product" else 1.0
    out = {"descriptor": descriptor, "name": name, "args": args, "covariance": cov,
           "delta": _float(el, "signal_variance", path, where),
           "f0": float(el.get("signal_mean", "0") or 0.0), "zeta": zeta, "theta": theta,
           "sparse_x": x, "alpha": alpha, "sparse_cutoff": cut,
           "label": el.get("label", ""), "where": where}
    for key in ("alpha", "sparse_cutoff", "sparse_x", "theta"):
        if not np.isfinite(out[key]).all():
            raise GapFormatError(f"{path}: {where} {key} holds non-finite values")
    return out


def _read_sparse_file(path, filename, md5, m, d, where) -> np.ndarray:
    # gap_fit strips the directory and reads the file from the xml's directory
    fpath = path.parent / pathlib.Path(filename).name
    try:
        raw = fpath.read_bytes()
    except OSError as err:
        raise GapFormatError(f"{path}: {where} refers to sparseX_filename {filename!r}, which "
                             f"cannot be read next to the xml ({err})") from None
    if md5 and hashlib.md5(raw).hexdigest() != md5.strip():
        raise GapFormatError(f"{path}: sparse-point file {fpath.name} does not match the md5 "
                             f"sum recorded in the xml ({md5}): the files do not belong together")
    values = _numbers(raw.decode("ascii", "replace"), fpath, "the sparse-point file")
    if values.size != m * d:
        raise GapFormatError(f"{path}: sparse-point file {fpath.name} holds {values.size} "
                             f"numbers, expected n_sparseX * dimensions = {m} * {d}")
    return values.reshape(m, d)


def sparse_files(path) -> list[pathlib.Path]:
    """The separate sparse-point files an xml refers to (for copying a model around)."""
    path = pathlib.Path(path)
    return sorted(path.parent.glob(path.name + ".sparseX.*"))
