"""pytest configuration: the shared fixtures live in testkit.py with the other helpers (a
module named conftest cannot be imported reliably once bench/ has a conftest.py too)."""
import os

# A relative $FASTLSTM_DATA (the README's `FASTLSTM_DATA=../shared/datasets/mnist pytest`) means
# relative to where pytest was started; made absolute once, here, so that tests which change
# folder (and the subprocesses they start) still find the files.
if os.environ.get("FASTLSTM_DATA"):
    os.environ["FASTLSTM_DATA"] = os.path.abspath(os.environ["FASTLSTM_DATA"])

from testkit import num_threads, rng  # noqa: E402,F401  (fixtures)
