"""Suite-wide JAX settings: strict dtype promotion and no implicit rank promotion.

They turn silent broadcasting and dtype-widening bugs into errors.
"""

import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# jnn's caches (compiled programs, generated data) go to a folder of this test session, never
# the user's ~/.cache; subprocesses started by the tests inherit it.
os.environ.setdefault("JNN_CACHE_DIR", tempfile.mkdtemp(prefix="jnn-test-cache-"))
# The suite is bound by XLA compile time (hundreds of small programs), not by running them:
# LLVM's backend optimisations halve the compile time of each and buy nothing here. The
# semantics are XLA's either way; benchmarks never run with this flag.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()


import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fresh, fixed PRNG key for each test."""
    return jax.random.key(0)
