"""Imports TensorFlow Datasets with TensorFlow kept off every accelerator, and quiet.

TFDS needs TensorFlow to prepare and decode datasets. On a GPU/TPU host TF would otherwise
grab accelerator memory that JAX needs, so every GPU is hidden from TF before TF touches one.
Imported lazily: code that never reads data never pays for importing TensorFlow.
"""

import contextlib
import functools
import logging
import os
import re
import sys
import tempfile

# What TF's C++ side prints while it loads, before any log level it reads takes effect.
_IMPORT_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog|oneDNN custom operations|"
    r"cpu_feature_guard|To enable the following instructions|rebuild TensorFlow"
)


def tensorflow():
    """TensorFlow, imported as :func:`tfds` imports it (off every accelerator, quiet)."""
    tfds()
    import tensorflow as tf

    return tf


@contextlib.contextmanager
def quiet():
    """TensorFlow's C++ start-up lines (oneDNN, CPU features, absl's) dropped from what the
    block writes to stderr: captures file descriptor 2 (C++ writes bypass sys.stderr) and
    replays all but that noise when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _IMPORT_NOISE.search(line):
                    sys.stderr.write(line)


@functools.cache
def tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet():
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
        import tensorflow_datasets
    tensorflow_datasets.disable_progress_bar()
    # TFDS logs routine steps ("Variant folder ... has no dataset_info.json") as warnings.
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tensorflow_datasets
