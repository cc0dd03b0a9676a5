"""Test session set-up: 8 simulated CPU devices, so data parallelism is tested for real.

Set before anything starts a JAX backend (the CLIs' own --cpu-devices defaults cannot change
it afterwards; in-process CLI runs use these 8 devices unless told --devices N). Real-data
tests read the TFDS datasets that scripts/setup.sh prepared (or prepare them on first use).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

from aejax import parallel  # noqa: E402

parallel.configure(cpu_devices=8)  # aejax's XLA:CPU flags too, as the CLIs use them
# Start the backend now: from here on nothing (e.g. a CLI's own --cpu-devices default) can
# change the device count.
assert jax.device_count() == 8, jax.devices()
