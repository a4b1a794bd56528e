"""pytest configuration: the shared fixtures live in testkit.py with the other helpers (a
module named conftest cannot be imported reliably once bench/ has a conftest.py too)."""
from testkit import num_threads, rng  # noqa: F401  (fixtures)
