"""Build the fastlstm C core and its Cython binding.

OpenMP is detected by compiling *and running* a small program with the same compiler that
builds the extension; without it the build is serial and ``fastlstm.openmp_enabled()`` says so.
Environment switches: ``FASTLSTM_NO_OPENMP=1`` (force serial), ``FASTLSTM_NATIVE=1`` (add
``-march=native``; never the default, a wheel must run on other CPUs), ``FASTLSTM_CYTHON_DEBUG=1``
(bounds checks back on in the binding).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CSRC = "csrc"
C_SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / CSRC).glob("*.c"))

OMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel num_threads(2) reduction(+:n)
    n += 1;
    printf("%d\n", n);
    return n == 2 ? 0 : 1;
}
"""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class BuildExt(build_ext):
    """build_ext that probes OpenMP with the compiler it is about to use (pyFFTW/POT style)."""

    def _probe(self, source: str, cflags: list, ldflags: list) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(source)
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                exe = os.path.join(tmp, "probe")
                self.compiler.link_executable(objs, exe, extra_postargs=ldflags)
                subprocess.run([exe], check=True, capture_output=True, timeout=60)
                return True
            except Exception:
                return False

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            base, omp_c, omp_l, simd = ["/O2"], ["/openmp"], [], []
        else:
            base = ["-O3", "-std=gnu11", "-ffp-contract=fast", "-Wall", "-Wno-unused-function"]
            omp_c, omp_l, simd = ["-fopenmp"], ["-fopenmp"], ["-fopenmp-simd"]
            if _flag("FASTLSTM_NATIVE"):
                base.append("-march=native")
        use_omp = not _flag("FASTLSTM_NO_OPENMP") and self._probe(OMP_PROBE, omp_c, omp_l)
        if use_omp:
            cflags, ldflags, macros = base + omp_c, omp_l, [("FASTLSTM_OPENMP", "1")]
            print("fastlstm: OpenMP found, building the parallel kernels")
        else:
            simd_ok = bool(simd) and self._probe("int main(void){return 0;}", simd, [])
            cflags, ldflags, macros = base + (simd if simd_ok else []), [], []
            print("fastlstm: WARNING: OpenMP not found (or FASTLSTM_NO_OPENMP set); "
                  "building serial kernels. On macOS: brew install libomp, then set "
                  "CFLAGS='-Xpreprocessor -fopenmp' LDFLAGS='-lomp'.")
        for ext in self.extensions:
            ext.extra_compile_args = cflags + list(ext.extra_compile_args or [])
            ext.extra_link_args = ldflags + list(ext.extra_link_args or [])
            ext.define_macros = list(ext.define_macros or []) + macros
        super().build_extensions()


class BuildPy(build_py):
    """Ship the public C header inside the package so ``fastlstm.get_include()`` finds it."""

    def run(self):
        super().run()
        dest = Path(self.build_lib) / "fastlstm" / "include"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(HERE / CSRC / "fastlstm.h", dest / "fastlstm.h")


debug = _flag("FASTLSTM_CYTHON_DEBUG")
directives = dict(language_level=3, boundscheck=debug, wraparound=debug,
                  initializedcheck=debug, cdivision=True, embedsignature=True)

extensions = [
    Extension(
        "fastlstm._core",
        sources=["fastlstm/_core.pyx"] + C_SOURCES,
        include_dirs=[CSRC, numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives),
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
