"""Find or build the compiled CPU kernel library, and load it with ctypes.

Where the library comes from, in order:

1. ``ase_mlp/kernels/_sna_cpu*.so`` built when the package was installed (the
   setuptools extension of ``setup.py``; plain C ABI, no torch at build time), used
   when it was built from the current sources (a digest compiled into it);
2. a copy compiled on first use into a per-user cache
   (``$ASE_MLP_CACHE`` or ``$XDG_CACHE_HOME/ase_mlp`` or ``~/.cache/ase_mlp``),
   keyed by a hash of the sources, the compiler and the flags, written through a
   temporary file and an atomic rename so concurrent processes never load a
   half-written file.

The compiler is ``$CXX`` or ``g++`` (1.5-5 s). Without one, :func:`library` raises
:class:`KernelUnavailable` with the reason; the torch implementation is then used.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile


HERE = pathlib.Path(__file__).resolve().parent
SOURCES = ("sna_core.h", "sna_cpu.cpp")
#: flags of the CPU build (portable: no -march=native, so a cache on a shared home
#: directory works on every node of a cluster; -fopenmp-simd only enables the
#: ``omp simd`` reductions of sna_core.h, no OpenMP runtime is linked)
CXXFLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno",
            "-fopenmp-simd", "-DSNA_OMP_SIMD")
ABI_VERSION = 13


class KernelUnavailable(RuntimeError):
    """The compiled kernels cannot be used here (no compiler, build failed, ...)."""


def cache_dir() -> pathlib.Path:
    env = os.environ.get("ASE_MLP_CACHE")
    if env:
        return pathlib.Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "ase_mlp"


def source_digest(root: pathlib.Path = HERE) -> str:
    """Digest of the kernel sources (compiled into the library and checked at load)."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((root / name).read_bytes())
    return h.hexdigest()[:16]


def digest_define(root: pathlib.Path = HERE) -> str:
    return f'-DASE_MLP_SNA_SOURCE_DIGEST="{source_digest(root)}"'


def _source_hash(compiler: str) -> str:
    h = hashlib.sha256()
    h.update(source_digest().encode())
    h.update(" ".join(CXXFLAGS).encode())
    h.update(compiler.encode())
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h.update(version.encode())
    h.update(sys.platform.encode())
    return h.hexdigest()[:16]


def compile_library(target: pathlib.Path, compiler: str | None = None) -> pathlib.Path:
    """Compile the CPU library to ``target`` (atomically); returns ``target``."""
    compiler = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise KernelUnavailable(
            f"no C++ compiler: {compiler!r} is not on PATH (install g++ or set CXX); the "
            f"torch implementation is used instead")
    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    cmd = [compiler, *CXXFLAGS, digest_define(), str(HERE / "sna_cpu.cpp"), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise KernelUnavailable(
                f"compiling the SNAP kernels failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _installed() -> pathlib.Path | None:
    if os.environ.get("ASE_MLP_IGNORE_INSTALLED_KERNELS"):  # tests of the cache/fallback
        return None
    found = sorted(HERE.glob("_sna_cpu*.so")) + sorted(HERE.glob("_sna_cpu*.pyd"))
    return found[0] if found else None


def _load(path: pathlib.Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.ase_mlp_sna_abi_version.restype = ctypes.c_int64
    lib.ase_mlp_sna_source_digest.restype = ctypes.c_char_p
    if lib.ase_mlp_sna_abi_version() != ABI_VERSION:
        raise KernelUnavailable(f"{path} has another kernel ABI version")
    if lib.ase_mlp_sna_source_digest().decode() != source_digest():
        raise KernelUnavailable(f"{path} was built from other kernel sources")
    for name in ("ase_mlp_sna_f64", "ase_mlp_sna_f32"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.ase_mlp_small_neighbors.restype = ctypes.c_int64
    lib.ase_mlp_small_neighbors.argtypes = (
        [ctypes.c_int64] + [ctypes.c_void_p] * 5 + [ctypes.c_double, ctypes.c_void_p,
                                                    ctypes.c_void_p, ctypes.c_int64,
                                                    ctypes.c_int64] + [ctypes.c_void_p] * 3)
    for name in ("ase_mlp_edge_vectors_f64", "ase_mlp_edge_vectors_f32"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 7
    lib.ase_mlp_sna_workspace.restype = ctypes.c_int64
    lib.ase_mlp_sna_workspace.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64]
    lib.ase_mlp_edge_keep.restype = ctypes.c_int64
    lib.ase_mlp_edge_keep.argtypes = ([ctypes.c_int64] + [ctypes.c_void_p] * 5
                                      + [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                         ctypes.c_void_p, ctypes.c_int64, ctypes.c_double,
                                         ctypes.c_void_p])
    for name in ("ase_mlp_zbl_f64", "ase_mlp_zbl_f32"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = ([ctypes.c_int64] + [ctypes.c_void_p] * 4 + [ctypes.c_int64]
                       + [ctypes.c_void_p] * 2 + [ctypes.c_double] * 2 + [ctypes.c_void_p] * 2)
    for name in ("ase_mlp_assemble_f64", "ase_mlp_assemble_f32"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] + [ctypes.c_void_p] * 2
    return lib


def library() -> ctypes.CDLL:
    """The loaded CPU kernel library (built into the user cache on first use).

    Raises :class:`KernelUnavailable` (the same reason every time: a failed build is
    not retried within a process)."""
    lib, error = _library()
    if lib is None:
        raise KernelUnavailable(error)
    return lib


@functools.lru_cache(maxsize=None)
def _library():
    try:
        return _find_or_build(), None
    except KernelUnavailable as exc:
        return None, str(exc)


def _find_or_build() -> ctypes.CDLL:
    installed = _installed()
    if installed is not None:
        try:
            return _load(installed)
        except (OSError, KernelUnavailable):
            pass  # stale build from an older source: fall through to the cache
    compiler = os.environ.get("CXX") or "g++"
    path = cache_dir() / "kernels" / f"libsna_cpu-{_source_hash(compiler)}.so"
    if not path.exists():
        compile_library(path, compiler)
    try:
        return _load(path)
    except OSError as exc:
        raise KernelUnavailable(f"cannot load the compiled kernels {path}: {exc}") from exc


def available() -> bool:
    """True when the compiled CPU kernels load (building them if needed)."""
    return _library()[0] is not None
