"""A trained run as a self-contained detector that needs only JAX (``python -m aejax.export``).

    python -m aejax.export --workdir runs/dense-mnist --out detector/

writes ``detector/metadata.json`` and the serialized :mod:`jax.export` artifact it names
(``detector.jax``). The artifact's function takes uint8 images ``[N, H, W, C]`` (any N: the
batch size is symbolic) and returns what :func:`aejax.detector.decide` does: ``score``
(float32 ``[N]``), ``p_value``, ``ood`` (bool ``[N]``, score above the threshold) and every
score of :func:`aejax.ood.names`. The parameters, fitted statistics, held-out scores and
threshold are constants inside it; it is lowered for CPU, CUDA and TPU (``--platforms``), so
one file runs on each. Loading it::

    import json, pathlib, jax, numpy as np
    from jax import export
    folder = pathlib.Path("detector")
    meta = json.loads((folder / "metadata.json").read_text())
    detect = export.deserialize((folder / meta["artifact"]).read_bytes())
    out = detect.call(np.load("images.npy"))   # uint8 [N, H, W, C] of meta["input"]["shape"]
    print(out["score"], out["ood"])

On CPU it reproduces ``python -m aejax.score`` to the last bit when run with aejax's XLA
flags (``metadata.json``'s ``xla_flags``, in ``XLA_FLAGS``) on the same batch of images;
under XLA's defaults, or in batches of other sizes, scores may differ in the last float32
bits (XLA:CPU adds a dot product's terms in an order that depends on both; measured below
1e-5, relative or, near 0, absolute), which moves a verdict only for a score that close to
the threshold.

The artifact computes from the pixels on; decoding image files and converting them to the
model's shape happen before it (``metadata.json``'s ``preprocessing`` says how, and
:mod:`aejax.inputs` does it).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path

from aejax import files, ood, run, thresholds, xla
from aejax.detector import Detector
from aejax.errors import AejaxError

ARTIFACT = "detector.jax"
PLATFORMS = ("cpu", "cuda", "tpu")


def _versions() -> dict[str, str]:
    out = {}
    for package in ("aejax", "jax", "jaxlib", "flax"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def exported(detector, platforms: tuple[str, ...] = PLATFORMS) -> "jax.export.Exported":  # noqa: F821, UP037
    """The :class:`jax.export.Exported` of ``detector``'s decision on ``[n, H, W, C]``
    uint8 images, ``n`` symbolic."""
    import jax
    import jax.numpy as jnp

    from aejax import core
    from aejax.detector import decide

    terms_of, fitted = core.terms_of(detector.state), detector.fitted()
    score = detector.threshold.score

    def detect(images_NxHxWxC):
        return decide(fitted, terms_of(images_NxHxWxC), score)

    (n,) = jax.export.symbolic_shape("n")
    spec = jax.ShapeDtypeStruct((n, *detector.image_shape), jnp.uint8)
    return jax.export.export(jax.jit(detect), platforms=platforms)(spec)


def metadata(detector, platforms: tuple[str, ...]) -> dict:
    """What ``metadata.json`` says: everything needed to use the artifact correctly."""
    h, w, c = detector.image_shape
    return {
        "artifact": ARTIFACT,
        "format": "jax.export serialized Exported (jax.export.deserialize(bytes).call(x))",
        "platforms": list(platforms),
        "input": {"shape": ["N", h, w, c], "dtype": "uint8", "range": [0, 255]},
        "outputs": {
            "score": f"float32 [N], the {detector.threshold.score} score (higher: more anomalous)",
            "p_value": "float32 [N], (1 + held-out scores >= score) / (held-out count + 1)",
            "ood": "bool [N], score > threshold",
            **{name: "float32 [N]" for name in ood.names()},
        },
        "score": detector.threshold.score,
        "threshold": detector.threshold.to_dict(),
        "threshold_description": detector.threshold.describe(),
        "preprocessing": {
            "inside": "pixels / 255 as float32",
            "before": f"image files decoded by Pillow, converted to {'RGB' if c == 3 else 'L'}"
            f" and resized to {h}x{w} (bilinear) when they differ (aejax.inputs)",
            "run": detector.config.data_options(),
        },
        "training": {
            "workdir": str(detector.workdir),
            "arch": detector.config.arch,
            "dataset": detector.config.dataset,
            "checkpoint_step": detector.step,
            "config": detector.config.__dict__,
            "statistics": detector.stats.meta,
        },
        "versions": _versions(),
        # XLA:CPU sums in an order that depends on its flags and on the batch: with these
        # flags (what aejax sets) and the same batch, the artifact gives aejax.score's float32
        # bits exactly; under XLA's defaults, within a few ulps (tests/test_score.py).
        "xla_flags": " ".join(xla.CPU_FLAGS),
    }


def write(detector, out_dir: Path, platforms: tuple[str, ...] = PLATFORMS) -> list[Path]:
    """Writes the artifact and ``metadata.json`` to ``out_dir`` (each file atomically)."""
    blob = exported(detector, platforms).serialize()
    out_dir.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(out_dir / ARTIFACT) as tmp:
        tmp.write_bytes(blob)
    files.write_json(out_dir / "metadata.json", metadata(detector, platforms))
    return [out_dir / ARTIFACT, out_dir / "metadata.json"]


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """What ``python -m aejax.export`` asks for: checkpoint ``step`` (default latest) of the
    run in ``workdir`` (default the most recent one), on score ``score`` with threshold
    ``policy`` (default: the run's), lowered for ``platforms``, written to ``out``."""

    out: Path
    workdir: Path | None = None
    step: int | None = None
    score: str | None = None
    policy: thresholds.Policy | None = None
    platforms: tuple[str, ...] = PLATFORMS


def export(request: ExportRequest) -> tuple[Detector, list[Path]]:
    """The run's detector and the files written."""
    unknown = set(request.platforms) - set(PLATFORMS)
    if not request.platforms or unknown:
        raise AejaxError(
            f"--platforms {','.join(request.platforms)!r}: choose among {', '.join(PLATFORMS)}"
        )
    workdir = request.workdir or run.latest_workdir()
    detector = Detector.load(workdir, request.step)  # on one device: the artifact's
    if request.score or request.policy:
        detector = detector.with_threshold(request.policy, request.score)
    return detector, write(detector, request.out, request.platforms)
