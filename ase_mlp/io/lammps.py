"""Read and write LAMMPS SNAP and ML-IAP model files.

Supported files
---------------
``pair_style snap``
    a ``.snapcoeff`` file (``nelem ncoeff`` header, then per element a line
    ``Element radius weight`` and ``ncoeff`` coefficients, one per line) and a
    ``.snapparam`` file (``keyword value`` lines). Linear and quadratic
    (``quadraticflag 1``) models, all descriptor flags of ``pair_style snap``.
``pair_style mliap ... descriptor sna``
    a ``.mliap.descriptor`` file (``keyword value...`` lines, elements listed
    in it) and a ``.mliap.model`` file for ``model linear``, ``model
    quadratic`` or ``model nn``. Other descriptors (``so3``) and Python models
    (``mliappy``, ``unified``) are not supported and raise a clear error.
LAMMPS wrapper files
    the ``X.snap`` / ``X.mliap`` input fragments shipped with LAMMPS
    (``pair_style snap``, ``pair_style mliap``, or ``pair_style
    hybrid/overlay zbl inner outer snap|mliap ...``) with ``variable``
    substitution and ``&`` continuations; see :func:`read_lammps_potential`.

File-format facts (from the LAMMPS sources, ``src/ML-SNAP/pair_snap.cpp`` and
``src/ML-IAP/mliap_*.cpp``)
--------------------------------------------------------------------------------
* Comments start with ``#`` anywhere on a line; in keyword files single and
  double quotes are word separators (so ``'Ta'`` reads as ``Ta``).
* ``.snapcoeff``: the element blocks may come in any order; LAMMPS places them
  by name in the order of the elements on the ``pair_coeff`` line (which also
  orders ``sinner``/``dinner`` values and, with ``chemflag``, the
  multi-element bispectrum blocks). Without that line, ase_mlp uses the
  order of the blocks in the file.
* Quadratic coefficients: ``beta_0``, the ``K`` linear ones, then the upper
  triangle ``a_kl`` (``l >= k``) row by row; ``E = beta.B + 1/2 B^T A B``.
* ML-IAP model files carry no element names: element blocks follow the
  descriptor's ``elems`` order.
* NN model (``model nn``): header ``nelem nparams``, then a line
  ``NET ndescriptors nlayers act_1 nodes_1 ... act_n nodes_n`` (the output
  layer is the last entry, 1 node); then per element ``ndescriptors`` means,
  ``ndescriptors`` scales and ``nparams`` weights (values may span several
  lines, each section ending at a line end). The network input is
  ``(B - mean) / scale``. Layer ``l`` stores node after node, the bias first:
  node ``n`` has bias ``c[k_l + n (n_in + 1)]`` and weights
  ``c[k_l + n (n_in + 1) + 1 + i]``. Activations ``linear``, ``sigmoid``,
  ``tanh``, ``relu`` (LAMMPS treats any other name silently as linear;
  ase_mlp refuses it).
"""

from __future__ import annotations

import ast
import datetime
import math
import os
import pathlib
import re
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from ase_mlp._version import __version__
from ase_mlp.descriptors._sna_tables import bispectrum_triples
from ase_mlp.descriptors.bispectrum import IGNORED_KEYWORDS, Bispectrum
from ase_mlp.models.base import Model
from ase_mlp.models.snap import NNSNAP, LinearSNAP, QuadraticSNAP


__all__ = [
    "ModelFileError",
    "read_snap",
    "read_mliap",
    "write_snap",
    "write_mliap",
    "read_lammps_potential",
    "detect_format",
    "SnapFormat",
    "MliapFormat",
    "LammpsWrapperFormat",
]


class ModelFileError(ValueError):
    """A model file that cannot be read: the message names file, line and key.

    Attributes
    ----------
    path : str
        The offending file.
    line : int or None
        1-based line number, when the problem sits on one line.
    key : str or None
        The keyword (or element, section) concerned, when there is one.
    """

    def __init__(self, path, message: str, *, line: int | None = None, key: str | None = None):
        self.path = str(path)
        self.line = line
        self.key = key
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- lexing

_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_INT_RE = re.compile(r"[+-]?\d+\Z")
_WORD_SPLIT = re.compile(r"[\s\"']+")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass
class _Line:
    number: int
    words: list[str]


def _read_text(path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError as err:
        raise ModelFileError(path, f"cannot open: {err.strerror or err}") from None


def _words(text: str) -> list[str]:
    """Words of one line: the comment from ``#`` on removed, quotes stripped."""
    text = text.split("#", 1)[0]
    return [w for w in _WORD_SPLIT.split(text) if w]


def _lines(path) -> tuple[list[_Line], int]:
    """Non-empty lines (after comment removal) and the total line count."""
    raw = _read_text(path).splitlines()
    out = [_Line(n, w) for n, w in ((k + 1, _words(t)) for k, t in enumerate(raw)) if w]
    return out, len(raw)


def _leading_comments(path, limit: int = 20) -> list[str]:
    """The comment lines at the top of a file (its provenance: date, authors, citation)."""
    out = []
    try:
        text = _read_text(path)
    except ModelFileError:
        return out
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("#"):
            break
        s = s.lstrip("#").strip()
        if s:
            out.append(s)
        if len(out) >= limit:
            break
    return out


def _is_float(word: str) -> bool:
    return bool(_FLOAT_RE.match(word))


def _is_int(word: str) -> bool:
    return bool(_INT_RE.match(word))


def _float(path, line: _Line | int, word: str, key: str) -> float:
    if not _is_float(word):
        raise ModelFileError(path, f"{key}: value {word!r} is not a number",
                             line=_num(line), key=key)
    return float(word)


def _int(path, line: _Line | int, word: str, key: str) -> int:
    if not _is_int(word):
        raise ModelFileError(path, f"{key}: value {word!r} is not an integer",
                             line=_num(line), key=key)
    return int(word)


def _num(line) -> int | None:
    return line.number if isinstance(line, _Line) else line


def _fmt(x) -> str:
    """Shortest text that reads back as exactly the same double."""
    return repr(float(x))


# --------------------------------------------------------------------------- sniffing

_DESCRIPTOR_KEYS = {"nelems", "elems", "radelems", "welems", "sinnerelems", "dinnerelems"}
_SO3_KEYS = ("nmax", "lmax", "alpha")

_KIND_TEXT = {
    "snapcoeff": "a SNAP coefficient file (.snapcoeff)",
    "snapparam": "a SNAP parameter file (.snapparam)",
    "mliap-model": "an ML-IAP model file (.mliap.model)",
    "mliap-descriptor": "an ML-IAP descriptor file (.mliap.descriptor)",
    "coefficients": "a coefficient file (SNAP .snapcoeff or ML-IAP .mliap.model)",
    "lammps-input": "a LAMMPS input fragment (.snap/.mliap wrapper)",
    "binary": "a binary file",
    "empty": "an empty file (only comments and blank lines)",
    "unknown": "no LAMMPS model file format",
    "missing": "a missing file",
}


def _sniff(path) -> str:
    """Classify a file by its content (never raises)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return "missing"
    if b"\0" in head:
        return "binary"
    text = head.decode("utf-8", errors="replace")
    lines = []
    for raw in text.splitlines():
        w = _words(raw)
        if w:
            lines.append(w)
        if len(lines) >= 60:
            break
    if not lines:
        return "empty"
    if any(w[0] == "pair_style" for w in lines):
        return "lammps-input"
    first = lines[0]
    if len(first) == 2 and _is_int(first[0]) and _is_int(first[1]):
        if len(lines) > 1:
            second = lines[1]
            if second[0].startswith("NET"):
                return "mliap-model"
            if (len(second) == 3 and not _is_float(second[0]) and _is_float(second[1])
                    and _is_float(second[2])):
                return "snapcoeff"
            if len(second) == 1 and _is_float(second[0]):
                return "mliap-model"
        return "coefficients"
    if all(_IDENT_RE.match(w[0]) for w in lines):
        keys = {w[0] for w in lines}
        if keys & (_DESCRIPTOR_KEYS | set(_SO3_KEYS)):
            return "mliap-descriptor"
        return "snapparam"
    return "unknown"


def _pair_kinds(paths) -> tuple[str, dict]:
    """Decide 'snap' or 'mliap' for two files; returns (format, {role: path})."""
    p0, p1 = (pathlib.Path(p) for p in paths)
    k0, k1 = _sniff(p0), _sniff(p1)
    coeff_like = {"snapcoeff", "mliap-model", "coefficients"}
    param_like = {"snapparam", "mliap-descriptor"}
    if k0 in param_like and k1 in coeff_like:
        (p0, k0), (p1, k1) = (p1, k1), (p0, k0)
    if k0 in coeff_like and k1 in param_like:
        snapish = {k0, k1} & {"snapcoeff", "snapparam"}
        mliapish = {k0, k1} & {"mliap-model", "mliap-descriptor"}
        if snapish and mliapish:
            raise ValueError(
                f"cannot combine {p0} ({_KIND_TEXT[k0]}) with {p1} ({_KIND_TEXT[k1]}): "
                "a SNAP model needs a .snapcoeff and a .snapparam file, an ML-IAP model a "
                ".mliap.model and a .mliap.descriptor file")
        if mliapish:
            return "mliap", {"model": p0, "descriptor": p1}
        return "snap", {"coeff": p0, "param": p1}
    raise ValueError(
        f"cannot recognise the file pair: {p0} looks like {_KIND_TEXT[k0]} and {p1} looks like "
        f"{_KIND_TEXT[k1]}; expected a coefficient file (first line 'nelem ncoeff') and a "
        "parameter/descriptor file ('keyword value' lines)")


def detect_format(paths) -> str:
    """Which LAMMPS model format a file, or pair of files, holds (by content).

    Parameters
    ----------
    paths : path or sequence of paths
        One wrapper file, or two model files in either order.

    Returns
    -------
    str
        ``"snap"`` (.snapcoeff + .snapparam), ``"mliap"`` (.mliap.model +
        .mliap.descriptor) or ``"lammps-wrapper"`` (a ``.snap``/``.mliap``
        input fragment).

    Raises
    ------
    ValueError
        Saying what each file looked like and what was expected.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [pathlib.Path(p) for p in paths]
    if len(paths) == 1:
        kind = _sniff(paths[0])
        if kind == "lammps-input":
            return "lammps-wrapper"
        raise ValueError(
            f"{paths[0]} looks like {_KIND_TEXT[kind]}; a single file must be a LAMMPS wrapper "
            "(a .snap or .mliap input fragment with pair_style/pair_coeff lines); SNAP and "
            "ML-IAP models need two files (coefficients and parameters)")
    if len(paths) == 2:
        return _pair_kinds(paths)[0]
    raise ValueError(f"expected one or two files, got {len(paths)}: {[str(p) for p in paths]}")


# --------------------------------------------------------------------------- keyword files

#: scalar keywords of .snapparam files: name -> parser ("f" float, "i" int, "b" flag)
_SNAP_SCALARS = {
    "rcutfac": "f", "twojmax": "i", "rfac0": "f", "rmin0": "f", "switchflag": "b",
    "bzeroflag": "b", "quadraticflag": "b", "chemflag": "b", "bnormflag": "b",
    "wselfallflag": "b", "switchinnerflag": "b",
    # Kokkos/OpenMP tuning knobs: accepted, no effect here
    **{key: "i" for key in IGNORED_KEYWORDS},
}
_SNAP_PER_ELEMENT = {"sinner": "f", "dinner": "f"}
#: .mliap.descriptor (``descriptor sna``)
_MLIAP_SCALARS = dict(_SNAP_SCALARS, nelems="i")
del _MLIAP_SCALARS["quadraticflag"]
_MLIAP_PER_ELEMENT = {"elems": "s", "radelems": "f", "welems": "f", "sinnerelems": "f",
                      "dinnerelems": "f"}
_REQUIRED = ("rcutfac", "twojmax")


@dataclass
class _Keywords:
    path: pathlib.Path
    scalars: dict = field(default_factory=dict)  # key -> (value, line)
    lists: dict = field(default_factory=dict)  # key -> (words, line)

    def get(self, key, default=None):
        return self.scalars[key][0] if key in self.scalars else default

    def line(self, key):
        if key in self.scalars:
            return self.scalars[key][1]
        if key in self.lists:
            return self.lists[key][1]
        return None


def _parse_keywords(path, scalars: dict, per_element: dict, what: str) -> _Keywords:
    lines, _ = _lines(path)
    out = _Keywords(pathlib.Path(path))
    unknown = []
    for ln in lines:
        key, vals = ln.words[0], ln.words[1:]
        if key in per_element:
            out.lists[key] = (vals, ln.number)
            continue
        if key not in scalars:
            unknown.append((key, ln.number))
            continue
        if len(vals) != 1:
            raise ModelFileError(
                path, f"wrong number of values for keyword {key!r}: it takes 1 value, got "
                f"{len(vals)}" + (f" ({' '.join(vals)})" if vals else ""), line=ln.number, key=key)
        kind = scalars[key]
        if kind == "f":
            value = _float(path, ln, vals[0], key)
            if not math.isfinite(value):
                raise ModelFileError(path, f"{key}: value must be finite", line=ln.number, key=key)
        else:
            value = _int(path, ln, vals[0], key)
            if kind == "b":
                value = bool(value)
        out.scalars[key] = (value, ln.number)
    so3 = [(k, n) for k, n in unknown if k in _SO3_KEYS]
    if so3:
        names = ", ".join(repr(k) for k, _ in so3)
        raise ModelFileError(
            path, f"unsupported ML-IAP descriptor: keys {names} (lines "
            f"{', '.join(str(n) for _, n in so3)}) belong to the SO(3) power-spectrum descriptor "
            "('descriptor so3'); ase_mlp supports only the SNAP bispectrum ('descriptor sna')",
            line=so3[0][1], key=so3[0][0])
    if unknown:
        key, number = unknown[0]
        hint = ""
        if key == "quadraticflag" and "quadraticflag" not in scalars:
            hint = " (in ML-IAP the model style, 'model quadratic', selects a quadratic model)"
        elif key in _DESCRIPTOR_KEYS and "nelems" not in scalars:
            hint = " (this is an ML-IAP descriptor keyword, not a .snapparam one)"
        elif key in ("sinner", "dinner") and key not in per_element:
            hint = f" (ML-IAP descriptors use '{key}elems')"
        raise ModelFileError(path, f"unknown keyword {key!r} in {what}{hint}; known keywords: "
                             f"{', '.join(sorted(set(scalars) | set(per_element)))}",
                             line=number, key=key)
    for key in _REQUIRED:
        if key not in out.scalars:
            raise ModelFileError(path, f"missing required keyword {key!r} in {what}", key=key)
    return out


def _per_element_values(kw: _Keywords, key: str, n: int, kind: str, count_from: str):
    if key not in kw.lists:
        return None
    vals, number = kw.lists[key]
    if len(vals) != n:
        raise ModelFileError(
            kw.path, f"wrong number of values for keyword {key!r}: it takes one value per element "
            f"({n}, {count_from}), got {len(vals)}", line=number, key=key)
    if kind == "s":
        return list(vals)
    out = [_float(kw.path, number, v, key) for v in vals]
    for v in out:
        if not math.isfinite(v):
            raise ModelFileError(kw.path, f"{key}: values must be finite", line=number, key=key)
    return out


def _inner_switch(kw: _Keywords, skey: str, dkey: str, n: int, count_from: str):
    flag = kw.get("switchinnerflag", False)
    sinner = _per_element_values(kw, skey, n, "f", count_from)
    dinner = _per_element_values(kw, dkey, n, "f", count_from)
    if flag:
        for key, val in ((skey, sinner), (dkey, dinner)):
            if val is None:
                raise ModelFileError(
                    kw.path, f"missing keyword {key!r}: switchinnerflag is set (line "
                    f"{kw.line('switchinnerflag')}) and needs both {skey!r} and {dkey!r}", key=key)
    else:
        for key, val in ((skey, sinner), (dkey, dinner)):
            if val is not None:
                raise ModelFileError(
                    kw.path, f"keyword {key!r} given but switchinnerflag is not set (add "
                    "'switchinnerflag 1' or remove it)", line=kw.line(key), key=key)
    return sinner, dinner


def _make_descriptor(kw: _Keywords, elements, radii, weights, sinner, dinner) -> Bispectrum:
    try:
        return Bispectrum(
            elements, kw.get("twojmax"), kw.get("rcutfac"), radii, weights,
            rfac0=kw.get("rfac0", 0.99363), rmin0=kw.get("rmin0", 0.0),
            switchflag=kw.get("switchflag", True), bzeroflag=kw.get("bzeroflag", True),
            chemflag=kw.get("chemflag", False), bnormflag=kw.get("bnormflag", False),
            wselfallflag=kw.get("wselfallflag", False),
            switchinnerflag=kw.get("switchinnerflag", False), sinner=sinner, dinner=dinner)
    except ValueError as err:
        raise ModelFileError(kw.path, f"invalid SNAP descriptor parameters: {err}") from None


# --------------------------------------------------------------------------- .snapcoeff


@dataclass
class _Block:
    element: str
    radius: float
    weight: float
    values: list
    line: int


def _coefficient_header(path, lines: list[_Line]):
    if not lines:
        raise ModelFileError(path, "empty coefficient file: expected a header line "
                             "'nelements ncoefficients'", key="header")
    h = lines[0]
    if len(h.words) != 2 or not (_is_int(h.words[0]) and _is_int(h.words[1])):
        raise ModelFileError(path, "expected the header 'nelements ncoefficients' (two integers), "
                             f"got {' '.join(h.words)!r}", line=h.number, key="header")
    nel, ncoeff = int(h.words[0]), int(h.words[1])
    if nel < 1 or ncoeff < 1:
        raise ModelFileError(path, f"header declares {nel} elements and {ncoeff} coefficients; "
                             "both must be positive", line=h.number, key="header")
    return nel, ncoeff, h.number


def _read_snapcoeff(path):
    lines, nlines = _lines(path)
    nel, ncoeff, hline = _coefficient_header(path, lines)
    blocks: list[_Block] = []
    seen: dict[str, int] = {}
    pos = 1
    for b in range(nel):
        if pos >= len(lines):
            raise ModelFileError(
                path, f"element block missing: the header (line {hline}) declares {nel} element "
                f"blocks but the file ends after {b} (at line {nlines})", line=nlines,
                key="element block")
        ln = lines[pos]
        w = ln.words
        if len(w) != 3 or _is_float(w[0]):
            raise ModelFileError(
                path, f"expected the header of element block {b + 1} of {nel} "
                f"('Element radius weight'), got {' '.join(w)!r}", line=ln.number,
                key="element block")
        name = w[0]
        if name in seen:
            raise ModelFileError(
                path, f"duplicated element {name!r}: its block already started at line "
                f"{seen[name]}", line=ln.number, key=name)
        seen[name] = ln.number
        radius = _float(path, ln, w[1], f"radius of {name}")
        weight = _float(path, ln, w[2], f"weight of {name}")
        pos += 1
        values = []
        while len(values) < ncoeff:
            if pos >= len(lines):
                raise ModelFileError(
                    path, f"truncated coefficient file: element block {name!r} (block {b + 1}, "
                    f"line {ln.number}) ends after {len(values)} of {ncoeff} coefficients at the "
                    "end of the file", line=nlines, key=name)
            c = lines[pos]
            if len(c.words) == 3 and not _is_float(c.words[0]):
                raise ModelFileError(
                    path, f"coefficient count mismatch in element block {name!r} (block {b + 1}, "
                    f"line {ln.number}): expected {ncoeff} coefficients (header, line {hline}), "
                    f"found {len(values)} before the next block {c.words[0]!r}", line=c.number,
                    key=name)
            if len(c.words) != 1:
                raise ModelFileError(
                    path, f"element block {name!r}: expected one coefficient per line, got "
                    f"{len(c.words)} values", line=c.number, key=name)
            values.append(_float(path, c, c.words[0], f"coefficient {len(values)} of {name}"))
            pos += 1
        blocks.append(_Block(name, radius, weight, values, ln.number))
    if pos < len(lines):
        c = lines[pos]
        if len(c.words) == 1 and _is_float(c.words[0]):
            last = blocks[-1]
            raise ModelFileError(
                path, f"coefficient count mismatch in element block {last.element!r} (block "
                f"{nel}, line {last.line}): expected {ncoeff} coefficients (header, line "
                f"{hline}), found more", line=c.number, key=last.element)
        raise ModelFileError(
            path, f"unexpected content after the {nel} element block(s) declared in the header "
            f"(line {hline}): {' '.join(c.words)!r}", line=c.number, key="element block")
    return nel, ncoeff, hline, blocks


def _expected_ncoeff(K: int, quadratic: bool) -> int:
    return 1 + K + (K * (K + 1) // 2 if quadratic else 0)


def _describe_count(K: int, quadratic: bool, desc: Bispectrum) -> str:
    n_el = len(desc.elements)
    k = (f"K = {desc.n_components_per_block} x {n_el}^3 = {K} (chemflag)" if desc.chemflag
         else f"K = {K}")
    if quadratic:
        return (f"1 + K + K(K+1)/2 = {_expected_ncoeff(K, True)} for a quadratic model with "
                f"twojmax={desc.twojmax}, {k}")
    return f"1 + K = {K + 1} for a linear model with twojmax={desc.twojmax}, {k}"


#: suffixes of the LAMMPS input fragments looked at by :func:`_warn_if_wrapped`
_WRAPPER_SUFFIXES = (".snap", ".mliap", ".lammps", ".mod", ".in")


def _warn_if_wrapped(first, second) -> None:
    """Warn when a LAMMPS wrapper beside a model pair adds pair styles to it.

    Ta06A.snapcoeff/.snapparam are used by Ta06A.snap with ``hybrid/overlay zbl``:
    the pair alone lacks the ZBL core, which keeps atoms apart. Wrappers (files
    with a suffix in :data:`_WRAPPER_SUFFIXES` holding a ``pair_style`` line) in
    the same directory whose ``pair_coeff`` lines name both files and other pair
    styles are reported; anything unreadable is skipped silently.
    """
    try:
        files = {pathlib.Path(first).resolve(), pathlib.Path(second).resolve()}
        folder = next(iter(files)).parent
        candidates = sorted(p for p in folder.iterdir()
                            if p.suffix in _WRAPPER_SUFFIXES and p.is_file()
                            and p.stat().st_size < (1 << 20))
    except OSError:
        return
    for wrapper in candidates:
        try:
            text = wrapper.read_text(errors="replace")
        except OSError:
            continue
        # cheap filter first (file names built from variables are not recognised)
        if not all(p.name in text for p in files) or _sniff(wrapper) != "lammps-input":
            continue
        try:
            commands = _wrapper_commands(wrapper)
        except Exception:  # noqa: BLE001 - a wrapper we cannot read is not our concern here
            continue
        named, extra, style = False, set(), None
        for cmd in commands:
            w = cmd.words
            if w[0] == "pair_style":
                style = " ".join(w[1:])
            elif w[0] == "pair_coeff" and len(w) > 3:
                if {_resolve(wrapper, x).resolve() for x in w[3:] if "." in x} >= files:
                    named = True
                if style is not None and style.startswith("hybrid") and w[3] not in (
                        "snap", "mliap"):
                    extra.add(w[3])
        if named and extra:
            warnings.warn(
                f"{' and '.join(sorted(p.name for p in files))} were read as a bare SNAP model, "
                f"but {wrapper} beside them uses them in 'pair_style {style}' together with "
                f"{', '.join(sorted(extra))}: the model read here lacks that term (e.g. the ZBL "
                "core repulsion that keeps atoms apart); use read_lammps_potential("
                f"{str(wrapper)!r}) (or MLPCalculator.from_file of that file) to include it",
                UserWarning, stacklevel=_caller_level())
            return


def _caller_level() -> int:
    """``stacklevel`` that attributes a warning to the first caller outside ase_mlp."""
    package = str(pathlib.Path(__file__).resolve().parents[1])
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def read_snap(coeff_file, param_file, *, elements=None):
    """Read a LAMMPS ``pair_style snap`` model (``.snapcoeff`` + ``.snapparam``).

    Warns when a LAMMPS wrapper file in the same directory (such as ``Ta06A.snap``)
    uses the pair together with other pair styles (``hybrid/overlay zbl``): read the
    wrapper with :func:`read_lammps_potential` to get the whole potential.

    Parameters
    ----------
    coeff_file, param_file : str or path
        The two files, in either order (they are told apart by content).
    elements : list of str, optional
        Element names as on LAMMPS's ``pair_coeff`` line: selects and orders the
        coefficient blocks (and orders ``sinner``/``dinner``, as LAMMPS does).
        Default: all blocks in file order.

    Returns
    -------
    LinearSNAP or QuadraticSNAP
        ``quadraticflag`` selects the quadratic model.

    Raises
    ------
    ModelFileError
        Naming file, line and key of any problem.
    """
    model = _read_snap(coeff_file, param_file, elements=elements)
    _warn_if_wrapped(coeff_file, param_file)
    return model


def _read_snap(coeff_file, param_file, *, elements=None):
    """:func:`read_snap` without the wrapper warning (used by :func:`read_lammps_potential`)."""
    coeff_file, param_file = _order(coeff_file, param_file, "snapcoeff", "snapparam",
                                    "mliap-model", "read_mliap")
    kw = _parse_keywords(param_file, _SNAP_SCALARS, _SNAP_PER_ELEMENT, "a SNAP parameter file")
    nel, ncoeff, hline, blocks = _read_snapcoeff(coeff_file)
    by_name = {b.element: b for b in blocks}
    if elements is None:
        chosen = blocks
        count_from = "the number of element blocks in " + coeff_file.name
    else:
        elements = list(elements)
        missing = [e for e in elements if e not in by_name]
        if missing:
            raise ModelFileError(
                coeff_file, f"element block missing: element {missing[0]!r} not found; the file "
                f"has blocks for {list(by_name)}", key=missing[0])
        if len(set(elements)) != len(elements):
            raise ValueError(f"elements {elements} has duplicates")
        chosen = [by_name[e] for e in elements]
        count_from = "the number of elements requested"
        if kw.get("chemflag", False) and len(chosen) != nel:
            raise ModelFileError(
                param_file, f"chemflag is set (line {kw.line('chemflag')}) so every element "
                f"block of {coeff_file.name} ({list(by_name)}) must be used, but only {elements} "
                "were requested", key="chemflag")
    names = [b.element for b in chosen]
    sinner, dinner = _inner_switch(kw, "sinner", "dinner", len(chosen), count_from)
    try:
        desc_elements = _check_symbols(names)
    except ValueError as err:
        raise ModelFileError(coeff_file, str(err), key="element") from None
    desc = _make_descriptor(kw, desc_elements, [b.radius for b in chosen],
                            [b.weight for b in chosen], sinner, dinner)
    quadratic = kw.get("quadraticflag", False)
    K = desc.n_descriptors
    expected = _expected_ncoeff(K, quadratic)
    if ncoeff != expected:
        raise ModelFileError(
            coeff_file, f"coefficient count mismatch: the header declares {ncoeff} coefficients "
            f"per element block, but {param_file.name} needs {_describe_count(K, quadratic, desc)}",
            line=hline, key="ncoeff")
    coefficients = np.array([b.values for b in chosen], dtype=np.float64)
    cls = QuadraticSNAP if quadratic else LinearSNAP
    model = cls(desc, coefficients)
    _set_provenance(model, coeff_file, [coeff_file, param_file])
    return model


_COEFF_LIKE = ("snapcoeff", "mliap-model", "coefficients")
_KEYWORD_LIKE = ("snapparam", "mliap-descriptor")


def _order(first, second, coeff_kind, param_kind, other_kind, other_reader):
    """Put (coefficient file, keyword file) in that order, by content.

    Only clear cases are refused here (a missing file, two files of the same
    role, a coefficient file of the other format); anything else goes to the
    parsers, whose errors name the line and key.
    """
    first, second = pathlib.Path(first), pathlib.Path(second)
    k1, k2 = _sniff(first), _sniff(second)
    if k1 in _KEYWORD_LIKE and k2 not in _KEYWORD_LIKE:
        first, second, k1, k2 = second, first, k2, k1
    for p, k in ((first, k1), (second, k2)):
        if k == "missing":
            raise ModelFileError(p, "file not found")
        if k == "binary":
            raise ModelFileError(p, "this is a binary file, not a LAMMPS model file")
    if k1 in _KEYWORD_LIKE:
        raise ModelFileError(
            first, f"expected {_KIND_TEXT[coeff_kind]} (first line 'nelements ncoefficients'); "
            f"both {first.name} and {second.name} look like keyword files")
    if k2 in _COEFF_LIKE:
        raise ModelFileError(
            second, f"expected {_KIND_TEXT[param_kind]} ('keyword value' lines); both "
            f"{first.name} and {second.name} look like coefficient files")
    if k1 == other_kind:
        raise ModelFileError(first, f"expected {_KIND_TEXT[coeff_kind]}, but this looks like "
                             f"{_KIND_TEXT[k1]}: use {other_reader}")
    return first, second


def _check_symbols(names):
    from ase_mlp.models.base import check_elements

    try:
        return check_elements(names)
    except ValueError as err:
        raise ValueError(f"{err}; element names must be chemical symbols") from None


def _set_provenance(model, main_file, files):
    lines = _leading_comments(main_file)
    lines.append("read from " + ", ".join(str(pathlib.Path(f).name) for f in files))
    model.provenance = lines


# --------------------------------------------------------------------------- ML-IAP


def _read_descriptor(path) -> Bispectrum:
    kw = _parse_keywords(path, _MLIAP_SCALARS, _MLIAP_PER_ELEMENT, "an ML-IAP 'sna' descriptor")
    for key in ("nelems", "elems", "radelems", "welems"):
        if key not in kw.scalars and key not in kw.lists:
            raise ModelFileError(path, f"missing required keyword {key!r} in an ML-IAP 'sna' "
                                 "descriptor", key=key)
    n = kw.get("nelems")
    if n < 1:
        raise ModelFileError(path, f"nelems must be positive, got {n}", line=kw.line("nelems"),
                             key="nelems")
    src = f"nelems={n}"
    names = _per_element_values(kw, "elems", n, "s", src)
    radii = _per_element_values(kw, "radelems", n, "f", src)
    weights = _per_element_values(kw, "welems", n, "f", src)
    if len(set(names)) != len(names):
        dup = next(e for e in names if names.count(e) > 1)
        raise ModelFileError(path, f"duplicated element {dup!r} in 'elems'",
                             line=kw.line("elems"), key=dup)
    try:
        names = _check_symbols(names)
    except ValueError as err:
        raise ModelFileError(path, str(err), line=kw.line("elems"), key="elems") from None
    sinner, dinner = _inner_switch(kw, "sinnerelems", "dinnerelems", n, src)
    return _make_descriptor(kw, names, radii, weights, sinner, dinner)


_NN_ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu")


def _read_mliap_model(path, desc: Bispectrum, style: str | None):
    lines, nlines = _lines(path)
    nel, nparams, hline = _coefficient_header(path, lines)
    n_desc = len(desc.elements)
    if nel != n_desc:
        raise ModelFileError(
            path, f"element block count mismatch: the header declares {nel} element blocks but "
            f"the descriptor lists {n_desc} elements {desc.elements}", line=hline, key="nelements")
    K = desc.n_descriptors
    is_nn = len(lines) > 1 and lines[1].words[0].startswith("NET")
    if style is None:
        if is_nn:
            style = "nn"
        elif nparams == _expected_ncoeff(K, False):
            style = "linear"
        elif nparams == _expected_ncoeff(K, True):
            style = "quadratic"
        else:
            raise ModelFileError(
                path, f"coefficient count mismatch: the header declares {nparams} coefficients per "
                f"element block; the descriptor needs {_describe_count(K, False, desc)}, or "
                f"{_describe_count(K, True, desc)}", line=hline, key="nparams")
    if style == "nn":
        if not is_nn:
            raise ModelFileError(path, "model nn: expected a line 'NET ndescriptors nlayers "
                                 "activation nodes ...' after the header", key="NET",
                                 line=lines[1].number if len(lines) > 1 else nlines)
        return _read_nn(path, lines, nlines, nel, nparams, desc)
    if is_nn:
        raise ModelFileError(path, f"model {style}: this is a neural-network model file (NET "
                             "line); use 'model nn'", line=lines[1].number, key="NET")
    if style not in ("linear", "quadratic"):
        raise ValueError(f"unknown ML-IAP model style {style!r}")
    expected = _expected_ncoeff(K, style == "quadratic")
    if nparams != expected:
        raise ModelFileError(
            path, f"coefficient count mismatch: the header declares {nparams} coefficients per "
            f"element block, but the descriptor needs "
            f"{_describe_count(K, style == 'quadratic', desc)}", line=hline, key="nparams")
    values = []
    pos = 1
    for b, name in enumerate(desc.elements):
        row = []
        while len(row) < nparams:
            if pos >= len(lines):
                raise ModelFileError(
                    path, f"truncated model file: element block {b + 1} ({name!r}) ends after "
                    f"{len(row)} of {nparams} coefficients at the end of the file", line=nlines,
                    key=name)
            c = lines[pos]
            if len(c.words) != 1:
                raise ModelFileError(path, f"element block {b + 1} ({name!r}): expected one "
                                     f"coefficient per line, got {len(c.words)} values",
                                     line=c.number, key=name)
            row.append(_float(path, c, c.words[0], f"coefficient {len(row)} of {name}"))
            pos += 1
        values.append(row)
    if pos < len(lines):
        c = lines[pos]
        raise ModelFileError(
            path, f"coefficient count mismatch: {nel} element block(s) of {nparams} coefficients "
            f"(header, line {hline}) are complete but the file goes on with "
            f"{' '.join(c.words)!r}", line=c.number, key=desc.elements[-1])
    cls = QuadraticSNAP if style == "quadratic" else LinearSNAP
    return cls(desc, np.array(values, dtype=np.float64))


def _read_nn(path, lines, nlines, nel, nparams, desc: Bispectrum):
    K = desc.n_descriptors
    net = lines[1]
    w = net.words
    if len(w) < 3 or not (_is_int(w[1]) and _is_int(w[2])):
        raise ModelFileError(path, "expected 'NET ndescriptors nlayers activation nodes ...'",
                             line=net.number, key="NET")
    nd, nlayers = int(w[1]), int(w[2])
    if nd != K:
        raise ModelFileError(
            path, f"NET line declares {nd} descriptors but the descriptor has K = {K} "
            f"(twojmax={desc.twojmax})", line=net.number, key="ndescriptors")
    if nlayers < 1 or len(w) != 3 + 2 * nlayers:
        raise ModelFileError(
            path, f"NET line declares {nlayers} layers and needs {2 * nlayers} words "
            f"'activation nodes' after it, got {len(w) - 3}", line=net.number, key="NET")
    acts, nodes = [], []
    for k in range(nlayers):
        act, nn = w[3 + 2 * k], w[4 + 2 * k]
        if act not in _NN_ACTIVATIONS:
            raise ModelFileError(
                path, f"unknown activation {act!r} for layer {k + 1}; LAMMPS knows "
                f"{', '.join(_NN_ACTIVATIONS)}", line=net.number, key=act)
        nodes.append(_int(path, net, nn, f"nodes of layer {k + 1}"))
        if nodes[-1] < 1:
            raise ModelFileError(path, f"layer {k + 1} has {nodes[-1]} nodes", line=net.number,
                                 key="NET")
        acts.append(act)
    if nodes[-1] != 1:
        raise ModelFileError(path, f"the last (output) layer must have 1 node, got {nodes[-1]}",
                             line=net.number, key="NET")
    sizes = [K] + nodes
    expected = sum((sizes[k] + 1) * sizes[k + 1] for k in range(nlayers))
    if nparams != expected:
        raise ModelFileError(
            path, f"coefficient count mismatch: the header declares {nparams} parameters per "
            f"element, but the network {' -> '.join(map(str, sizes))} has {expected} "
            "(weights and biases)", line=lines[0].number, key="nparams")
    pos = 2
    means, stds, coeffs = [], [], []

    def section(label, count, name, b):
        nonlocal pos
        vals = []
        while len(vals) < count:
            if pos >= len(lines):
                raise ModelFileError(
                    path, f"truncated model file: element block {b + 1} ({name!r}) ends in its "
                    f"{label} section after {len(vals)} of {count} values", line=nlines, key=name)
            c = lines[pos]
            if len(vals) + len(c.words) > count:
                raise ModelFileError(
                    path, f"element block {b + 1} ({name!r}): the {label} section needs {count} "
                    f"values but this line brings it to {len(vals) + len(c.words)}",
                    line=c.number, key=name)
            vals.extend(_float(path, c, x, f"{label} of {name}") for x in c.words)
            pos += 1
        return vals

    for b, name in enumerate(desc.elements):
        means.append(section("mean (scale0)", K, name, b))
        stds.append(section("scale (scale1)", K, name, b))
        coeffs.append(section("weights", nparams, name, b))
    if pos < len(lines):
        c = lines[pos]
        raise ModelFileError(
            path, f"unexpected content after the {nel} element block(s): "
            f"{' '.join(c.words[:5])!r}", line=c.number, key=desc.elements[-1])
    std = np.array(stds)
    if np.any(std == 0):
        b, k = map(int, np.argwhere(std == 0)[0])
        raise ModelFileError(path, f"element {desc.elements[b]!r}: scale (scale1) of descriptor "
                             f"{k} is zero", key=desc.elements[b])
    model = NNSNAP(desc, hidden=nodes[:-1], activations=acts, mean=np.array(means), std=std)
    for b in range(nel):
        c = np.asarray(coeffs[b], dtype=np.float64)
        k = 0
        for layer in range(nlayers):
            n_in, n_out = sizes[layer], sizes[layer + 1]
            block = c[k:k + n_out * (n_in + 1)].reshape(n_out, n_in + 1)
            model.set_layer(b, layer, block[:, 1:], block[:, 0])
            k += n_out * (n_in + 1)
    return model


def read_mliap(model_file, descriptor_file, *, style: str | None = None):
    """Read a LAMMPS ``pair_style mliap`` model with the ``sna`` descriptor.

    Parameters
    ----------
    model_file, descriptor_file : str or path
        The ``.mliap.model`` and ``.mliap.descriptor`` files, in either order.
    style : {"linear", "quadratic", "nn"}, optional
        The ``model`` style of the ``pair_style`` line. Default: inferred (a
        ``NET`` line means ``nn``; otherwise the coefficient count tells linear
        from quadratic).

    Returns
    -------
    LinearSNAP, QuadraticSNAP or NNSNAP

    Raises
    ------
    ModelFileError
        Naming file, line and key; also for unsupported descriptors (``so3``).
    """
    model_file, descriptor_file = _order(model_file, descriptor_file, "mliap-model",
                                         "mliap-descriptor", "snapcoeff", "read_snap")
    desc = _read_descriptor(descriptor_file)
    model = _read_mliap_model(model_file, desc, style)
    _set_provenance(model, model_file, [model_file, descriptor_file])
    return model


# --------------------------------------------------------------------------- writing


def _stamp(model, kind: str) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [f"# {kind} written by ase_mlp {__version__} on {now}",
           f"# model: {type(model).__name__}, elements {' '.join(model.elements)}, "
           f"{model.descriptor.n_descriptors} bispectrum components, units metal (eV, Angstrom)"]
    for line in getattr(model, "provenance", None) or []:
        out.append(f"# source: {line}")
    return out


def _b_labels(desc: Bispectrum) -> list[str]:
    triples = bispectrum_triples(desc.twojmax)
    nb = len(triples)
    n = len(desc.elements)
    out = []
    for k in range(desc.n_descriptors):
        j1, j2, j = triples[k % nb]
        label = f"B[{k}] (j1 j2 j = {j1} {j2} {j})"
        if desc.chemflag:
            blk = k // nb
            e1, e2, e3 = blk // (n * n), (blk // n) % n, blk % n
            label += f" elements {desc.elements[e1]}{desc.elements[e2]}{desc.elements[e3]}"
        out.append(label)
    return out


def _coefficient_lines(model, row) -> list[str]:
    desc = model.descriptor
    K = desc.n_descriptors
    labels = _b_labels(desc)
    out = [f"{_fmt(row[0])}  # constant"]
    out += [f"{_fmt(row[1 + k])}  # {labels[k]}" for k in range(K)]
    if isinstance(model, QuadraticSNAP):
        m = 1 + K
        for k in range(K):
            for li in range(k, K):
                out.append(f"{_fmt(row[m])}  # B[{k}]*B[{li}]")
                m += 1
    return out


def _snap_like(model, writer: str):
    if isinstance(model, (LinearSNAP, QuadraticSNAP)):
        return
    kind = type(model).__name__
    hint = ""
    if isinstance(model, NNSNAP):
        hint = "; NN-SNAP models only exist as ML-IAP files: use write_mliap"
    elif hasattr(model, "models"):
        hint = "; write the SNAP member (model.models[k]) and keep the other terms separately"
    raise TypeError(f"{writer} writes LinearSNAP and QuadraticSNAP models, not {kind}{hint}")


def _flag(x) -> str:
    return "1" if x else "0"


def _descriptor_flags(cfg) -> list[str]:
    return [
        f"rfac0 {_fmt(cfg['rfac0'])}",
        f"rmin0 {_fmt(cfg['rmin0'])}",
        f"switchflag {_flag(cfg['switchflag'])}",
        f"bzeroflag {_flag(cfg['bzeroflag'])}",
        f"chemflag {_flag(cfg['chemflag'])}",
        f"bnormflag {_flag(cfg['bnormflag'])}",
        f"wselfallflag {_flag(cfg['wselfallflag'])}",
        f"switchinnerflag {_flag(cfg['switchinnerflag'])}",
    ]


def _write(path, lines):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def write_snap(model, coeff_file, param_file) -> None:
    """Write a linear or quadratic SNAP model as LAMMPS ``.snapcoeff`` + ``.snapparam``.

    Numbers are written with full double precision (``repr``), so reading the
    files back gives bit-identical coefficients. Use them with
    ``pair_coeff * * FILE.snapcoeff FILE.snapparam El1 El2 ...`` listing the
    elements in ``model.elements`` order (which orders ``sinner``/``dinner``
    and, with chemflag, the bispectrum blocks).

    Parameters
    ----------
    model : LinearSNAP or QuadraticSNAP
    coeff_file, param_file : str or path
    """
    _snap_like(model, "write_snap")
    desc = model.descriptor
    cfg = desc.config()
    coeffs = model.coefficients.detach().cpu().double().numpy()
    K = desc.n_descriptors
    lines = _stamp(model, "LAMMPS SNAP coefficients (pair_style snap)")
    lines += [f"# pair_coeff * * {pathlib.Path(coeff_file).name} {pathlib.Path(param_file).name} "
              f"{' '.join(model.elements)}", "",
              "# nelements ncoefficients", f"{len(model.elements)} {coeffs.shape[1]}"]
    for e, el in enumerate(model.elements):
        lines.append(f"{el} {_fmt(cfg['radii'][e])} {_fmt(cfg['weights'][e])}")
        lines += _coefficient_lines(model, coeffs[e])
    _write(coeff_file, lines)

    quadratic = isinstance(model, QuadraticSNAP)
    p = _stamp(model, "LAMMPS SNAP parameters (pair_style snap)")
    p += [f"# {K} bispectrum components; {coeffs.shape[1]} coefficients per element", "",
          "# required", f"rcutfac {_fmt(cfg['rcutfac'])}", f"twojmax {cfg['twojmax']}", "",
          "# optional", f"quadraticflag {_flag(quadratic)}"]
    p += _descriptor_flags(cfg)
    if cfg["switchinnerflag"]:
        p.append(f"# per element, in the order {' '.join(model.elements)}")
        p.append("sinner " + " ".join(_fmt(v) for v in cfg["sinner"]))
        p.append("dinner " + " ".join(_fmt(v) for v in cfg["dinner"]))
    _write(param_file, p)


def _chunks(values, n=5):
    return [" ".join(_fmt(v) for v in values[k:k + n]) for k in range(0, len(values), n)]


def write_mliap(model, model_file, descriptor_file) -> None:
    """Write a SNAP-family model as LAMMPS ML-IAP ``model`` + ``descriptor sna`` files.

    Linear and quadratic models give ``model linear`` / ``model quadratic``
    files, NN-SNAP a ``model nn`` file (``(B - mean)/std`` standardisation and
    the layer weights, node after node with the bias first). Full double
    precision.

    Parameters
    ----------
    model : LinearSNAP, QuadraticSNAP or NNSNAP
    model_file, descriptor_file : str or path
    """
    if not isinstance(model, (LinearSNAP, QuadraticSNAP, NNSNAP)):
        raise TypeError(f"write_mliap writes LinearSNAP, QuadraticSNAP and NNSNAP models, not "
                        f"{type(model).__name__}")
    desc = model.descriptor
    cfg = desc.config()
    K = desc.n_descriptors
    if isinstance(model, NNSNAP):
        style = "nn"
    elif isinstance(model, QuadraticSNAP):
        style = "quadratic"
    else:
        style = "linear"
    usage = (f"# pair_style mliap model {style} {pathlib.Path(model_file).name} descriptor sna "
             f"{pathlib.Path(descriptor_file).name}")

    d = _stamp(model, "LAMMPS ML-IAP SNAP descriptor (descriptor sna)")
    d += [usage, "", "# required", f"rcutfac {_fmt(cfg['rcutfac'])}",
          f"twojmax {cfg['twojmax']}", "", "# elements", f"nelems {len(model.elements)}",
          "elems " + " ".join(model.elements),
          "radelems " + " ".join(_fmt(v) for v in cfg["radii"]),
          "welems " + " ".join(_fmt(v) for v in cfg["weights"]), "", "# optional"]
    d += _descriptor_flags(cfg)
    if cfg["switchinnerflag"]:
        d.append("sinnerelems " + " ".join(_fmt(v) for v in cfg["sinner"]))
        d.append("dinnerelems " + " ".join(_fmt(v) for v in cfg["dinner"]))
    _write(descriptor_file, d)

    m = _stamp(model, f"LAMMPS ML-IAP model (model {style})")
    m.append(usage)
    if style != "nn":
        coeffs = model.coefficients.detach().cpu().double().numpy()
        m += ["", "# nelements nparams", f"{len(model.elements)} {coeffs.shape[1]}"]
        for e, el in enumerate(model.elements):
            # LAMMPS reads exactly nparams one-number lines per element (inline comments
            # allowed): a comment-only line in between is "Wrong number of items"
            lines = _coefficient_lines(model, coeffs[e])
            lines[0] += f", element {el}"
            m += lines
        _write(model_file, m)
        return
    sizes = [K] + list(model.hidden) + [1]
    nlayers = len(sizes) - 1
    nparams = sum((sizes[k] + 1) * sizes[k + 1] for k in range(nlayers))
    net = " ".join(f"{a} {n}" for a, n in zip(model.activations, sizes[1:], strict=True))
    m += ["", "# nelements nparams", f"{len(model.elements)} {nparams}", "",
          "# NET ndescriptors nlayers (activation nodes) per layer, output layer last",
          f"NET {K} {nlayers} {net}"]
    mean = model.mean.detach().cpu().double().numpy()
    std = model.std.detach().cpu().double().numpy()
    for e, el in enumerate(model.elements):
        m += ["", f"# element {el}: scale0 (mean; the input is (B - mean)/scale)"]
        m += _chunks(mean[e])
        m += [f"# element {el}: scale1 (scale)"]
        m += _chunks(std[e])
        for layer, lin in enumerate(model.networks[e]):
            w = lin.weight.detach().cpu().double().numpy()
            b = lin.bias.detach().cpu().double().numpy()
            m.append(f"# element {el}: layer {layer + 1}, {w.shape[0]} node(s) x "
                     f"(bias + {w.shape[1]} weights)")
            for n in range(w.shape[0]):
                m += _chunks(np.concatenate([[b[n]], w[n]]))
    _write(model_file, m)


# --------------------------------------------------------------------------- wrapper files

_IGNORED_COMMANDS = {"mass", "neighbor", "neigh_modify", "print", "log", "echo", "comm_modify",
                     "thermo", "thermo_style", "thermo_modify", "timestep", "newton"}
_MATH = {"sqrt": math.sqrt, "exp": math.exp, "ln": math.log, "log": math.log10,
         "abs": abs, "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor,
         "ceil": math.ceil, "round": round, "PI": math.pi}


@dataclass
class _Command:
    line: int
    words: list[str]


def _strip_comment(text: str) -> str:
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif text.startswith('"""', i):
            quote = '"""'
            i += 3
            continue
        elif c in "'\"":
            quote = c
        elif c == "#":
            return text[:i]
        i += 1
    return text


def _split_words(text: str) -> list[str]:
    out, cur, quote, i, has = [], [], None, 0, False
    while i < len(text):
        c = text[i]
        if quote:
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            cur.append(c)
        elif text.startswith('"""', i):
            quote, has = '"""', True
            i += 3
            continue
        elif c in "'\"":
            quote, has = c, True
        elif c.isspace():
            if cur or has:
                out.append("".join(cur))
            cur, has = [], False
        else:
            cur.append(c)
        i += 1
    if cur or has:
        out.append("".join(cur))
    return out


class _Variables:
    def __init__(self, path):
        self.path = path
        self.values: dict[str, tuple[str, str]] = {}  # name -> (style, text)

    def define(self, cmd: _Command):
        w = cmd.words
        if len(w) < 3:
            raise ModelFileError(self.path, "variable: expected 'variable NAME STYLE VALUE'",
                                 line=cmd.line, key="variable")
        name, style, args = w[1], w[2], w[3:]
        if style in ("index", "string", "equal"):
            if not args:
                raise ModelFileError(self.path, f"variable {name}: no value", line=cmd.line,
                                     key=name)
            if style == "index" and name in self.values and self.values[name][0] == "index":
                return  # LAMMPS keeps an existing index variable
            self.values[name] = (style, args[0] if style != "equal" else " ".join(args))
        elif style == "delete":
            self.values.pop(name, None)
        else:
            raise ModelFileError(self.path, f"variable {name}: style {style!r} is not supported "
                                 "(index, string, equal are)", line=cmd.line, key=name)

    def value(self, name, line):
        if name not in self.values:
            raise ModelFileError(self.path, f"undefined variable {name!r}", line=line, key=name)
        style, text = self.values[name]
        if style == "equal":
            return format(self.evaluate(text, line), ".15g")
        return text

    def evaluate(self, expr: str, line):
        src = re.sub(r"\bv_([A-Za-z_]\w*)", r"__v_\1", expr).replace("^", "**")
        try:
            tree = ast.parse(src, mode="eval")
        except SyntaxError:
            raise ModelFileError(self.path, f"cannot evaluate the expression {expr!r}",
                                 line=line, key=expr) from None

        def ev(node):
            if isinstance(node, ast.Expression):
                return ev(node.body)
            if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
                return float(node.value)
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
                v = ev(node.operand)
                return -v if isinstance(node.op, ast.USub) else v
            if isinstance(node, ast.BinOp):
                a, b = ev(node.left), ev(node.right)
                ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                       ast.Div: lambda: a / b, ast.Pow: lambda: a ** b}
                if type(node.op) in ops:
                    return float(ops[type(node.op)]())
            if isinstance(node, ast.Name):
                if node.id.startswith("__v_"):
                    return float(self.value(node.id[4:], line))
                if node.id == "PI":
                    return math.pi
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in _MATH and not node.keywords):
                return float(_MATH[node.func.id](*[ev(a) for a in node.args]))
            raise ModelFileError(self.path, f"cannot evaluate the expression {expr!r} (only "
                                 "arithmetic, v_NAME and simple math functions)", line=line,
                                 key=expr)

        try:
            return ev(tree)
        except (ZeroDivisionError, OverflowError, ValueError, TypeError) as err:
            if isinstance(err, ModelFileError):
                raise
            raise ModelFileError(self.path, f"cannot evaluate {expr!r}: {err}", line=line,
                                 key=expr) from None

    def substitute(self, text: str, line: int) -> str:
        out, i, quote = [], 0, None
        while i < len(text):
            c = text[i]
            if quote:
                if c == quote:
                    quote = None
                out.append(c)
                i += 1
                continue
            if c in "'\"":
                quote = c
                out.append(c)
                i += 1
                continue
            if c == "$" and i + 1 < len(text):
                nxt = text[i + 1]
                if nxt == "{":
                    end = text.find("}", i + 2)
                    if end < 0:
                        raise ModelFileError(self.path, "unterminated ${...}", line=line,
                                             key=text[i:])
                    out.append(self.value(text[i + 2:end], line))
                    i = end + 1
                    continue
                if nxt == "(":
                    depth, j = 0, i + 1
                    while j < len(text):
                        depth += text[j] == "("
                        depth -= text[j] == ")"
                        if depth == 0:
                            break
                        j += 1
                    if depth:
                        raise ModelFileError(self.path, "unterminated $(...)", line=line,
                                             key=text[i:])
                    expr = text[i + 2:j].split(":", 1)[0]
                    out.append(format(self.evaluate(expr, line), ".20g"))
                    i = j + 1
                    continue
                out.append(self.value(nxt, line))
                i += 2
                continue
            out.append(c)
            i += 1
        return "".join(out)


def _wrapper_commands(path) -> list[_Command]:
    raw = _read_text(path).splitlines()
    variables = _Variables(path)
    out = []
    k = 0
    while k < len(raw):
        start = k
        text = raw[k]
        while text.rstrip().endswith("&") and k + 1 < len(raw):
            text = text.rstrip()[:-1] + " " + raw[k + 1]
            k += 1
        k += 1
        text = _strip_comment(text).strip()
        if not text:
            continue
        text = variables.substitute(text, start + 1)
        words = _split_words(text)
        if not words:
            continue
        cmd = _Command(start + 1, words)
        if words[0] == "variable":
            variables.define(cmd)
            continue
        out.append(cmd)
    return out


def _bounds(path, line, word: str, ntypes: int) -> range:
    """LAMMPS type ranges: ``n``, ``*``, ``n*``, ``*n``, ``m*n``."""
    try:
        if word == "*":
            lo, hi = 1, ntypes
        elif "*" in word:
            a, b = word.split("*", 1)
            lo = int(a) if a else 1
            hi = int(b) if b else ntypes
        else:
            lo = hi = int(word)
    except ValueError:
        raise ModelFileError(path, f"pair_coeff: bad atom type {word!r}", line=line,
                             key=word) from None
    if lo < 1 or hi > ntypes or lo > hi:
        raise ModelFileError(path, f"pair_coeff: atom type range {word!r} is outside 1..{ntypes}",
                             line=line, key=word)
    return range(lo, hi + 1)


def _resolve(path: pathlib.Path, name: str) -> pathlib.Path:
    p = pathlib.Path(name)
    if p.is_absolute():
        return p
    near = path.parent / p
    if near.exists():
        return near
    env = os.environ.get("LAMMPS_POTENTIALS")
    if env and (pathlib.Path(env) / p).exists():
        return pathlib.Path(env) / p
    return near


def _parse_mliap_args(path, line, args):
    """``model STYLE FILE descriptor sna FILE`` (any order) -> (style, model, descriptor)."""
    model = descriptor = None
    i = 0
    while i < len(args):
        kw = args[i]
        if kw == "model" and i + 2 < len(args):
            style, fname = args[i + 1], args[i + 2]
            if style not in ("linear", "quadratic", "nn"):
                raise ModelFileError(
                    path, f"pair_style mliap: model style {style!r} is not supported (linear, "
                    "quadratic and nn are; Python models such as mliappy need LAMMPS itself)",
                    line=line, key=style)
            model = (style, fname)
            i += 3
        elif kw == "descriptor" and i + 2 < len(args):
            style, fname = args[i + 1], args[i + 2]
            if style != "sna":
                raise ModelFileError(
                    path, f"pair_style mliap: descriptor {style!r} is not supported (only 'sna', "
                    "the SNAP bispectrum)", line=line, key=style)
            descriptor = fname
            i += 3
        elif kw == "unified":
            raise ModelFileError(path, "pair_style mliap unified (Python models) is not supported",
                                 line=line, key="unified")
        else:
            raise ModelFileError(path, f"pair_style mliap: unexpected word {kw!r} (expected "
                                 "'model STYLE FILE' and 'descriptor sna FILE')", line=line,
                                 key=kw)
    if model is None or descriptor is None:
        missing = "model" if model is None else "descriptor"
        raise ModelFileError(path, f"pair_style mliap: missing '{missing}' keyword", line=line,
                             key=missing)
    return model[0], model[1], descriptor


def _parse_pair_style(path, cmd: _Command) -> dict:
    """Sub-styles of the ``pair_style`` line: {'zbl': (inner, outer), 'snap': ..., 'mliap': ...}."""
    w = cmd.words
    if len(w) < 2:
        raise ModelFileError(path, "pair_style without a style", line=cmd.line, key="pair_style")
    style, args = w[1], w[2:]
    if style == "hybrid/overlay":
        overlay = True
    elif style in ("hybrid", "hybrid/scaled"):
        raise ModelFileError(path, f"pair_style {style} is not supported (only hybrid/overlay, "
                             "whose terms add up)", line=cmd.line, key=style)
    else:
        overlay = False
        args = [style] + args
    styles: dict = {}
    i = 0
    while i < len(args):
        name = args[i]
        if name in styles:
            raise ModelFileError(path, f"pair style {name!r} appears twice; not supported",
                                 line=cmd.line, key=name)
        if name == "zbl":
            if i + 2 >= len(args):
                raise ModelFileError(path, "pair_style zbl needs 'inner outer'", line=cmd.line,
                                     key="zbl")
            inner = _float(path, cmd.line, args[i + 1], "zbl inner cutoff")
            outer = _float(path, cmd.line, args[i + 2], "zbl outer cutoff")
            if not 0 < inner <= outer:
                raise ModelFileError(path, f"pair_style zbl: need 0 < inner <= outer, got {inner} "
                                     f"{outer}", line=cmd.line, key="zbl")
            styles["zbl"] = (inner, outer)
            i += 3
        elif name == "snap":
            styles["snap"] = True
            i += 1
        elif name == "mliap":
            j = i + 1
            while j < len(args) and args[j] in ("model", "descriptor", "unified"):
                j += 3 if args[j] != "unified" else 2
            styles["mliap"] = _parse_mliap_args(path, cmd.line, args[i + 1:j])
            i = j
        else:
            raise ModelFileError(
                path, f"unsupported pair style {name!r}" + (" in hybrid/overlay" if overlay else "")
                + "; supported: snap, mliap (descriptor sna), and hybrid/overlay of zbl with one "
                "of them", line=cmd.line, key=name)
        if not overlay and i < len(args):
            raise ModelFileError(path, f"pair_style {name}: unexpected arguments "
                                 f"{' '.join(args[i:])!r}", line=cmd.line, key=name)
    ml = [s for s in ("snap", "mliap") if s in styles]
    if len(ml) != 1:
        raise ModelFileError(
            path, "need exactly one SNAP term (pair style snap or mliap), found "
            f"{ml or 'none'}", line=cmd.line, key="pair_style")
    styles["_overlay"] = overlay
    return styles


def read_lammps_potential(path) -> Model:
    """Read a LAMMPS wrapper file (``X.snap``, ``X.mliap``) as shipped with LAMMPS.

    Understood: ``variable NAME index|string|equal VALUE`` with ``${NAME}``,
    ``$N`` and ``$(expr)`` substitution, ``&`` continuations, ``#`` comments,
    quotes; ``pair_style snap``, ``pair_style mliap model linear|quadratic|nn
    FILE descriptor sna FILE`` and ``pair_style hybrid/overlay zbl INNER OUTER
    snap|mliap ...``; ``pair_coeff`` lines. Relative file names are resolved
    next to the wrapper (then in ``$LAMMPS_POTENTIALS``).

    LAMMPS atom type ``n`` is the ``n``-th element name on the snap/mliap
    ``pair_coeff`` line (``NULL`` types are skipped). ZBL nuclear charges come
    from the ``pair_coeff I J zbl Zi Zj`` lines and must be consistent per
    element (ZBL between elements uses ``Z_i`` and ``Z_j``).

    Returns
    -------
    Model
        ``SumModel(ZBL, snap)`` for ``hybrid/overlay``, else the SNAP model.

    Raises
    ------
    ModelFileError
        For unsupported pair styles or commands and malformed lines.
    """
    path = pathlib.Path(path)
    commands = _wrapper_commands(path)
    styles = None
    coeffs: list[_Command] = []
    for cmd in commands:
        head = cmd.words[0]
        if head == "pair_style":
            styles = _parse_pair_style(path, cmd)
            coeffs = []
        elif head == "pair_coeff":
            if styles is None:
                raise ModelFileError(path, "pair_coeff before pair_style", line=cmd.line,
                                     key="pair_coeff")
            coeffs.append(cmd)
        elif head == "units":
            if len(cmd.words) < 2 or cmd.words[1] != "metal":
                raise ModelFileError(path, f"units {' '.join(cmd.words[1:])}: only 'units metal' "
                                     "is supported", line=cmd.line, key="units")
        elif head in ("include", "pair_modify", "pair_write", "kspace_style"):
            raise ModelFileError(path, f"command {head!r} is not supported in a model wrapper",
                                 line=cmd.line, key=head)
        elif head not in _IGNORED_COMMANDS:
            warnings.warn(f"{path}, line {cmd.line}: ignoring LAMMPS command {head!r}",
                          stacklevel=2)
    if styles is None:
        raise ModelFileError(path, "no pair_style line", key="pair_style")
    overlay = styles["_overlay"]
    ml = "snap" if "snap" in styles else "mliap"

    # the snap/mliap pair_coeff line maps atom types to elements
    ml_line = None
    zbl_lines = []
    for cmd in coeffs:
        w = cmd.words
        if len(w) < 3:
            raise ModelFileError(path, "pair_coeff: too few arguments", line=cmd.line,
                                 key="pair_coeff")
        if overlay:
            sub = w[3] if len(w) > 3 else ""
            rest = w[4:]
            if sub not in styles or sub.startswith("_"):
                raise ModelFileError(path, f"pair_coeff for style {sub!r}, which is not on the "
                                     "pair_style line", line=cmd.line, key=sub or "pair_coeff")
        else:
            sub, rest = ml, w[3:]
        if sub == ml:
            if w[1] != "*" or w[2] != "*":
                raise ModelFileError(path, f"pair_coeff for {ml} must use '* *'", line=cmd.line,
                                     key=ml)
            if ml_line is not None:
                warnings.warn(f"{path}, line {cmd.line}: a second {ml} pair_coeff line replaces "
                              f"the one on line {ml_line[0]}", stacklevel=2)
            ml_line = (cmd.line, rest)
        else:
            zbl_lines.append(cmd)
    if ml_line is None:
        raise ModelFileError(path, f"no 'pair_coeff * *' line for {ml}", key="pair_coeff")
    line, rest = ml_line
    if ml == "snap":
        if len(rest) < 3:
            raise ModelFileError(path, "pair_coeff * * snap needs 'COEFF PARAM El1 El2 ...'",
                                 line=line, key="snap")
        files, types = rest[:2], rest[2:]
    else:
        files, types = [], rest
        if not types:
            raise ModelFileError(path, "pair_coeff * * mliap needs element names", line=line,
                                 key="mliap")
    ntypes = len(types)
    elements: list[str] = []
    for t in types:
        if t != "NULL" and t not in elements:
            elements.append(t)
    if not elements:
        raise ModelFileError(path, "every atom type is NULL", line=line, key="pair_coeff")

    if ml == "snap":
        snap = _read_snap(_resolve(path, files[0]), _resolve(path, files[1]), elements=elements)
    else:
        style, mfile, dfile = styles["mliap"]
        snap = read_mliap(_resolve(path, mfile), _resolve(path, dfile), style=style)
        unknown = [e for e in elements if e not in snap.elements]
        if unknown:
            raise ModelFileError(path, f"pair_coeff: element {unknown[0]!r} is not in the "
                                 f"descriptor's elems {snap.elements}", line=line, key=unknown[0])
    if "zbl" not in styles:
        return snap

    inner, outer = styles["zbl"]
    z_type: dict[int, tuple[float, int]] = {}
    cross: dict[tuple[int, int], tuple[float, float, int]] = {}  # later lines override
    for cmd in zbl_lines:
        w = cmd.words
        if len(w) != 6:
            raise ModelFileError(path, "pair_coeff I J zbl needs 'Zi Zj'", line=cmd.line,
                                 key="zbl")
        zi = _float(path, cmd.line, w[4], "zbl Zi")
        zj = _float(path, cmd.line, w[5], "zbl Zj")
        for i in _bounds(path, cmd.line, w[1], ntypes):
            for j in _bounds(path, cmd.line, w[2], ntypes):
                if j < i:
                    continue
                if i == j:
                    if zi != zj:
                        raise ModelFileError(path, f"pair_coeff {i} {i} zbl: Zi and Zj must be "
                                             f"equal, got {zi} {zj}", line=cmd.line, key="zbl")
                    z_type[i] = (zi, cmd.line)
                else:
                    cross[i, j] = (zi, zj, cmd.line)
    for (i, j), (zi, zj, ln) in cross.items():
        for t, z in ((i, zi), (j, zj)):
            if t not in z_type:
                z_type[t] = (z, ln)
            elif z_type[t][0] != z:
                raise ModelFileError(
                    path, f"pair_coeff {i} {j} zbl {zi:g} {zj:g}: type {t} has Z = "
                    f"{z_type[t][0]:g} (line {z_type[t][1]}); pair-specific charges are not "
                    "supported", line=ln, key="zbl")
    z_el: dict[str, float] = {}
    for t, el in enumerate(types, start=1):
        if el == "NULL":
            continue
        if t not in z_type:
            raise ModelFileError(path, f"no 'pair_coeff {t} {t} zbl Z Z' line for atom type {t} "
                                 f"({el})", key="zbl")
        z, ln = z_type[t]
        if el in z_el and z_el[el] != z:
            raise ModelFileError(path, f"element {el} gets two ZBL charges, {z_el[el]:g} and {z:g}",
                                 line=ln, key=el)
        z_el[el] = z
    from ase.data import atomic_numbers

    from ase_mlp.models.sum import SumModel
    from ase_mlp.models.zbl import ZBL

    z = [z_el.get(el, float(atomic_numbers[el])) for el in snap.elements]
    z = [int(v) if float(v).is_integer() else v for v in z]
    return SumModel(ZBL(snap.elements, inner, outer, z=z), snap)


# --------------------------------------------------------------------------- entry points


def _as_paths(paths) -> list[pathlib.Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [pathlib.Path(p) for p in paths]


def _can(paths, fmt) -> bool:
    try:
        return detect_format(_as_paths(paths)) == fmt
    except (ValueError, OSError):
        return False


class _LammpsFormat:
    """Entry point base (group ``ase_mlp.model_formats``): ``can_load`` / ``load``."""

    name = ""
    n_paths = 0
    kind = ""

    @classmethod
    def can_load(cls, paths) -> bool:
        return len(_as_paths(paths)) == cls.n_paths and _can(paths, cls.kind)

    @classmethod
    def load(cls, paths) -> Model:
        return cls._read(*_as_paths(paths))


class SnapFormat(_LammpsFormat):
    """Entry point: a ``.snapcoeff`` + ``.snapparam`` pair (either order)."""

    name, n_paths, kind = "lammps_snap", 2, "snap"
    _read = staticmethod(lambda *p: read_snap(*p))


class MliapFormat(_LammpsFormat):
    """Entry point: a ``.mliap.model`` + ``.mliap.descriptor`` pair (either order)."""

    name, n_paths, kind = "lammps_mliap", 2, "mliap"
    _read = staticmethod(lambda *p: read_mliap(*p))


class LammpsWrapperFormat(_LammpsFormat):
    """Entry point: one LAMMPS ``X.snap`` / ``X.mliap`` wrapper file."""

    name, n_paths, kind = "lammps_wrapper", 1, "lammps-wrapper"
    _read = staticmethod(lambda p: read_lammps_potential(p))
