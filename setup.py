"""Build of the compiled CPU kernels at install time (everything else is in pyproject.toml).

The library has a plain C ABI and is loaded with ctypes: no Python, torch or CUDA
headers are needed to build it. The extension is optional: when no C++ compiler is
available the install still succeeds, and ase_mlp compiles the kernels on first use
into a user cache (or falls back to its torch implementation).
"""

import importlib.util
import pathlib

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_kbuild", ROOT / "ase_mlp/kernels/_build.py")
_kbuild = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_kbuild)


class BuildKernels(build_ext):
    """Build the plain shared library (no ``PyInit_`` symbol is needed or exported)."""

    def get_export_symbols(self, ext):
        return ext.export_symbols


kernels = Extension(
    "ase_mlp.kernels._sna_cpu",
    sources=["ase_mlp/kernels/sna_cpu.cpp"],
    depends=["ase_mlp/kernels/sna_core.h"],
    include_dirs=["ase_mlp/kernels"],
    extra_compile_args=[f for f in _kbuild.CXXFLAGS if f not in ("-shared", "-fPIC")]
    + [_kbuild.digest_define(ROOT / "ase_mlp/kernels")],
    extra_link_args=["-pthread"],
    export_symbols=[],
    language="c++",
    optional=True,
)

setup(ext_modules=[kernels], cmdclass={"build_ext": BuildKernels})
