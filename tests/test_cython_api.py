"""The kernels as other Cython code sees them: a module that cimports numpy (whose headers
include <complex.h>, where `I` is a macro) and then fastlstm.libfastlstm, built against the
installed header and static library, must give the same result as fastlstm.lstm, calling the
C kernel without the GIL."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlstm

pytest.importorskip("Cython")

USER_PYX = textwrap.dedent('''
    # cython: language_level=3
    import numpy as np
    cimport numpy as cnp
    from libc.stdint cimport int64_t
    from fastlstm.libfastlstm cimport (FL_OK, fl_dims, fl_lstm_forward_f32,
                                       fl_lstm_reserve_bytes, fl_openmp_enabled, fl_status,
                                       fl_status_string)

    cnp.import_array()

    def run(float[:, :, ::1] x, float[:, ::1] w_ih, float[:, ::1] w_hh, float[::1] b_ih,
            float[::1] b_hh):
        cdef fl_dims d
        d.seq_len = x.shape[0]; d.batch = x.shape[1]; d.input_size = x.shape[2]
        d.hidden_size = w_hh.shape[1]; d.batch_first = 0; d.n_threads = 2
        cdef cnp.ndarray y = np.empty((x.shape[0], x.shape[1], w_hh.shape[1]), np.float32)
        cdef float[:, :, ::1] yv = y
        cdef fl_status st
        cdef size_t reserve_bytes = 0
        with nogil:
            st = fl_lstm_forward_f32(&d, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &b_ih[0],
                                     &b_hh[0], NULL, NULL, NULL, &yv[0, 0, 0], NULL, NULL, NULL,
                                     NULL, 0)
        if st != FL_OK:
            raise RuntimeError(fl_status_string(st).decode())
        st = fl_lstm_reserve_bytes(&d, 4, &reserve_bytes)
        if st != FL_OK:
            raise RuntimeError(fl_status_string(st).decode())
        return y, reserve_bytes, fl_openmp_enabled()
''')

SETUP_PY = textwrap.dedent('''
    import os
    import fastlstm
    from Cython.Build import cythonize
    from setuptools import Extension, setup
    # the folder holding the fastlstm package, where Cython finds fastlstm/libfastlstm.pxd
    package_parent = os.path.dirname(os.path.dirname(fastlstm.__file__))
    import numpy
    omp = ["-fopenmp"] if fastlstm.openmp_enabled() else []
    ext = Extension("user_ext", ["user_ext.pyx"],
                    include_dirs=[numpy.get_include(), fastlstm.get_include()],
                    library_dirs=[fastlstm.get_library_dir()], libraries=["fastlstm", "m"],
                    extra_compile_args=omp, extra_link_args=omp)
    setup(ext_modules=cythonize([ext], include_path=[package_parent]))
''')


def test_cimport_from_another_cython_module(tmp_path):
    (tmp_path / "user_ext.pyx").write_text(USER_PYX)
    (tmp_path / "setup.py").write_text(SETUP_PY)
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-4000:]
    sys.path.insert(0, str(tmp_path))
    try:
        import user_ext
    finally:
        sys.path.remove(str(tmp_path))
    rng = np.random.default_rng(0)
    T, B, I, H = 5, 3, 4, 6
    args = [rng.uniform(-0.5, 0.5, s).astype(np.float32)
            for s in ((T, B, I), (4 * H, I), (4 * H, H), (4 * H,), (4 * H,))]
    y, reserve_bytes, openmp = user_ext.run(*args)
    fastlstm.set_num_threads(1)
    try:
        expected = fastlstm.lstm(*args, training=False).output
    finally:
        fastlstm.set_num_threads(None)
    np.testing.assert_array_equal(y, expected)
    assert reserve_bytes >= 4 * T * B * 6 * H
    assert openmp == fastlstm.openmp_enabled()  # the library carries the build's OpenMP setting


def test_the_package_ships_header_library_and_pxd():
    assert os.path.exists(os.path.join(fastlstm.get_include(), "fastlstm.h"))
    assert os.path.exists(os.path.join(fastlstm.get_library_dir(), "libfastlstm.a"))
    pkg = os.path.dirname(fastlstm.__file__)
    assert os.path.exists(os.path.join(pkg, "libfastlstm.pxd"))
    assert os.path.exists(os.path.join(pkg, "py.typed"))
