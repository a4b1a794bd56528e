"""Build the fastlstm C core (a static library, libfastlstm.a) and its Cython binding.

The C sources in csrc/ are compiled once into libfastlstm.a; the extension fastlstm._core links
it, and the library is installed inside the package (``fastlstm.get_library_dir()``, beside
the header in ``fastlstm.get_include()``) for C and Cython programs of others, the way NumPy
ships libnpymath.a.

OpenMP is detected by compiling *and running* a small program with the same compiler that
builds the extension; without it the build is serial and ``fastlstm.openmp_enabled()`` says so.
Environment switches: ``FASTLSTM_NO_OPENMP=1`` (force serial), ``FASTLSTM_NATIVE=1`` (add
``-march=native``; never the default, a wheel must run on other CPUs), ``FASTLSTM_CYTHON_DEBUG=1``
(bounds checks back on in the binding), ``FASTLSTM_OPT`` (the optimisation flag, default
``-O3``; the sanitizer build sets ``-O1``), ``FASTLSTM_EXTRA_CFLAGS`` and
``FASTLSTM_EXTRA_LDFLAGS`` (appended last, e.g. ``-fsanitize=address``).
"""
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

try:
    from setuptools.modified import newer_group
except ImportError:  # setuptools < 69
    from distutils.dep_util import newer_group

HERE = Path(__file__).resolve().parent
CSRC = "csrc"
# Relative paths: setuptools wants them, and the build must work from an unpacked sdist.
C_SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / CSRC).rglob("*.c")
                   if "examples" not in p.parts)
C_HEADERS = sorted(str(p.relative_to(HERE)) for p in (HERE / CSRC).rglob("*.h"))
LIBRARY = "fastlstm"


def _version() -> str:
    """FASTLSTM_VERSION from the public header: the one place the version is written."""
    text = (HERE / CSRC / "fastlstm.h").read_text()
    return re.search(r'#define FASTLSTM_VERSION "([^"]+)"', text).group(1)


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


def _env_flags(name: str) -> list:
    return shlex.split(os.environ.get(name, ""))


class BuildExt(build_ext):
    """Probe OpenMP with the compiler about to be used (pyFFTW/POT style), build libfastlstm.a
    from csrc/, then the extension against it."""

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

    def _is_clang(self) -> bool:
        if not hasattr(self, "_clang"):
            # a program that says so by its exit status (a failing compile would print an
            # alarming error in every gcc build's log)
            self._clang = self.compiler.compiler_type != "msvc" and self._probe(
                "int main(void) {\n#ifdef __clang__\n    return 0;\n#else\n    return 1;\n"
                "#endif\n}\n", [], [])
        return self._clang

    def _flags(self):
        """(compile flags, link flags) for the C core and the extension."""
        if self.compiler.compiler_type == "msvc":
            base, omp_c, omp_l, simd = ["/O2"], ["/openmp"], [], []
        else:
            opt = os.environ.get("FASTLSTM_OPT", "-O3")
            base = [opt, "-std=gnu11", "-ffp-contract=fast", "-Wall", "-Wno-unused-function"]
            if self._is_clang():
                base.append("-Wno-pass-failed")  # float64 `omp simd` loops that call libm
            omp_c, omp_l, simd = ["-fopenmp"], ["-fopenmp"], ["-fopenmp-simd"]
            if _flag("FASTLSTM_NATIVE"):
                base.append("-march=native")
        extra_c, extra_l = _env_flags("FASTLSTM_EXTRA_CFLAGS"), _env_flags("FASTLSTM_EXTRA_LDFLAGS")
        if not _flag("FASTLSTM_NO_OPENMP") and self._probe(OMP_PROBE, omp_c, omp_l):
            print("fastlstm: OpenMP found, building the parallel kernels")
            return base + omp_c + extra_c, omp_l + extra_l
        simd_ok = bool(simd) and self._probe("int main(void){return 0;}", simd, [])
        print("fastlstm: WARNING: OpenMP not found (or FASTLSTM_NO_OPENMP set); building "
              "serial kernels. With clang: install libomp (Debian: libomp-dev; macOS: brew "
              "install libomp, then CFLAGS='-Xpreprocessor -fopenmp' LDFLAGS='-lomp').")
        return base + (simd if simd_ok else []) + extra_c, extra_l

    def _isa_flags(self) -> dict:
        """Extra flags per source file. clang compiles each OpenMP region into a function of
        its own that does not inherit the file's `#pragma clang attribute` target, so there the
        files of an instruction set also get its -m flags (those files run only on CPUs that
        have it: api.c dispatches at run time). gcc needs none, and gets none."""
        if not self._is_clang() or platform.machine().lower() not in ("x86_64", "amd64"):
            return {}
        return {"kernels_avx2.c": ["-mavx2", "-mfma"],
                "kernels_avx512.c": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw",
                                     "-mavx2", "-mfma"]}

    def _build_core_library(self, cflags: list, lib_dir: str) -> str:
        """Compile csrc/ into lib_dir/libfastlstm.a (skipped when it is newer than every C
        source and header). Returns the library's path."""
        lib_path = os.path.join(lib_dir, self.compiler.library_filename(LIBRARY))
        if not (self.force or newer_group(C_SOURCES + C_HEADERS + ["setup.py"], lib_path,
                                          missing="newer")):
            return lib_path
        isa_flags, objects = self._isa_flags(), []
        for source in C_SOURCES:
            objects += self.compiler.compile(
                [source], output_dir=self.build_temp, include_dirs=[CSRC], depends=C_HEADERS,
                extra_postargs=cflags + isa_flags.get(os.path.basename(source), []))
        os.makedirs(lib_dir, exist_ok=True)
        if os.path.exists(lib_path):
            os.remove(lib_path)  # `ar` would add to the old archive
        self.compiler.create_static_lib(objects, LIBRARY, output_dir=lib_dir)
        return lib_path

    def build_extensions(self):
        cflags, ldflags = self._flags()
        lib_dir = os.path.join(os.path.dirname(self.get_ext_fullpath("fastlstm._core")), "lib")
        self._core_library = self._build_core_library(cflags, lib_dir)
        for ext in self.extensions:
            ext.extra_compile_args = cflags + list(ext.extra_compile_args or [])
            ext.extra_link_args = ldflags + list(ext.extra_link_args or [])
            ext.library_dirs = [lib_dir] + list(ext.library_dirs or [])
            ext.libraries = [LIBRARY] + list(ext.libraries or [])
        super().build_extensions()

    def copy_extensions_to_source(self):
        """--inplace (and editable installs): the library goes beside the extension too."""
        super().copy_extensions_to_source()
        package_dir = self.get_finalized_command("build_py").get_package_dir("fastlstm")
        os.makedirs(os.path.join(package_dir, "lib"), exist_ok=True)
        shutil.copy2(self._core_library, os.path.join(package_dir, "lib"))


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
        sources=["fastlstm/_core.pyx"],
        include_dirs=[CSRC, numpy.get_include()],
        depends=C_SOURCES + C_HEADERS + ["fastlstm/libfastlstm.pxd"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION")],
        libraries=["m"] if os.name == "posix" else [],
    )
]

setup(
    version=_version(),
    ext_modules=cythonize(extensions, compiler_directives=directives),
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
