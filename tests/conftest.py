"""Test session set-up: 8 simulated CPU devices, so data parallelism is tested for real.

Set before anything starts a JAX backend (the CLIs' own --cpu-devices defaults cannot change
it afterwards; in-process CLI runs use these 8 devices unless told --devices N). Real-data
tests read the TFDS datasets that scripts/setup.sh prepared (or prepare them on first use).
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The decoded-array cache of this session (subprocesses inherit it): the tests fill it from
# TFDS themselves, and their tiny temporary datasets stay out of the user's cache.
os.environ.setdefault("AEJAX_CACHE_DIR", tempfile.mkdtemp(prefix="aejax-test-cache-"))
# Runs on the tests' own folders and arrays train until converged, up to 12,000 steps by
# default (aejax.stopping): the tests' runs stop at 300 (tests/test_stopping.py checks the
# real ceiling).
os.environ.setdefault("AEJAX_MAX_STEPS", "300")
# The commands' subprocesses start with the huge pages `python -m aejax.train` would restart
# itself to get (aejax.xla.restart_with_huge_pages): the same allocator a user's run has,
# without a second start-up per command. tests/test_train_cli.py checks the restart itself.
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")

import jax  # noqa: E402

from aejax import parallel, xla  # noqa: E402

xla.apply_flags()  # aejax's XLA:CPU flags, as the CLIs use them (tests/test_api.py: without)
parallel.configure(cpu_devices=8)
# Start the backend now: from here on nothing (e.g. a CLI's own --cpu-devices default) can
# change the device count.
assert jax.device_count() == 8, jax.devices()
