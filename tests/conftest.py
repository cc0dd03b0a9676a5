"""Shared fixtures. Real-data tests read the TFDS datasets that `scripts/setup.sh` prepared."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
