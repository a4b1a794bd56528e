"""fastlstm benchmarks (see README.md in this folder).

This file makes ``bench`` a package so that pytest imports ``bench/conftest.py`` as
``bench.conftest``: a second top-level ``conftest`` module would replace ``tests/conftest.py``
in ``sys.modules`` and break the tests' ``from conftest import ...``.
"""
