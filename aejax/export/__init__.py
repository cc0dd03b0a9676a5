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
    detect = export.deserialize((folder / meta["artifacts"]["jax"]["file"]).read_bytes())
    out = detect.call(np.load("images.npy"))   # uint8 [N, H, W, C] of meta["input"]["shape"]
    print(out["score"], out["ood"])

On CPU it reproduces ``python -m aejax.score`` to the last bit when run with aejax's XLA
flags (``metadata.json``'s ``artifacts.jax.xla_flags``, in ``XLA_FLAGS``) on the same batch
of images; under XLA's defaults, or in batches of other sizes, scores may differ in the last
float32 bits (XLA:CPU adds a dot product's terms in an order that depends on both; measured below
1e-5, relative or, near 0, absolute), which moves a verdict only for a score that close to
the threshold.

``--format saved_model`` writes the same function as a TensorFlow SavedModel instead
(``detector/saved_model/``, :func:`write_saved_model`): TF Serving or any TensorFlow runs
it, with no JAX installed::

    import numpy as np, tensorflow as tf
    detect = tf.saved_model.load("detector/saved_model").signatures["serving_default"]
    out = detect(images=tf.constant(np.load("images.npy")))   # uint8 [N, H, W, C], any N
    print(out["score"].numpy(), out["ood"].numpy())

``--format onnx`` writes it as ``detector/detector.onnx`` (:func:`write_onnx`), for
onnxruntime in C++, C#, Java, JavaScript or Python::

    import numpy as np, onnxruntime as ort
    session = ort.InferenceSession("detector/detector.onnx")
    score, p_value, ood, *every = session.run(None, {"images": np.load("images.npy")})

The artifact computes from the pixels on; decoding image files and converting them to the
model's shape happen before it (``metadata.json``'s ``preprocessing`` says how, and
:mod:`aejax.inputs` does it).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from aejax import eval as evaluation
from aejax import files, ood, run, thresholds, xla
from aejax.detector import Detector
from aejax.errors import AejaxError

ARTIFACT = "detector.jax"
SAVED_MODEL = "saved_model"
ONNX = "detector.onnx"
PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("jax", "saved_model", "onnx")


def _versions() -> dict[str, str]:
    out = {}
    for package in ("aejax", "jax", "jaxlib", "flax"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def decision(detector, members_in_turn: bool = False) -> Callable:
    """``detector``'s decision as a pure function of uint8 images ``[N, H, W, C]``, its
    parameters and statistics constants inside it (an ensemble's members vmapped, or with
    ``members_in_turn`` one after another: :func:`aejax.core.terms_of`)."""
    from aejax import core
    from aejax.detector import decide

    terms_of = core.terms_of(detector.state, members_in_turn=members_in_turn)
    fitted = detector.fitted()
    score = detector.threshold.score

    def detect(images_NxHxWxC):
        return decide(fitted, terms_of(images_NxHxWxC), score)

    return detect


def exported(detector, platforms: tuple[str, ...] = PLATFORMS) -> "jax.export.Exported":  # noqa: F821, UP037
    """The :class:`jax.export.Exported` of ``detector``'s decision on ``[n, H, W, C]``
    uint8 images, ``n`` symbolic."""
    import jax
    import jax.numpy as jnp

    detect = decision(detector)
    (n,) = jax.export.symbolic_shape("n")
    spec = jax.ShapeDtypeStruct((n, *detector.image_shape), jnp.uint8)
    with xla.full_precision():
        return jax.export.export(jax.jit(detect), platforms=platforms)(spec)


def write_saved_model(detector, folder: Path, platforms: tuple[str, ...] = PLATFORMS) -> None:
    """``detector``'s decision as a TensorFlow SavedModel in ``folder``: signature
    ``serving_default(images: uint8 [N, H, W, C]) -> {score, p_value, ood, every score}``,
    N any. Converted by :mod:`jax.experimental.jax2tf` (native serialization: the same
    StableHLO as the ``jax.export`` artifact, lowered for ``platforms``, run by TensorFlow's
    XLA); written beside ``folder`` and renamed into place, so a failed export leaves no
    half of one."""
    import shutil

    from aejax.data import _tf

    tf = _tf.tensorflow()  # first: off the accelerators, its start-up lines dropped
    from jax.experimental import jax2tf

    h, w, c = detector.image_shape
    converted = jax2tf.convert(
        decision(detector),
        polymorphic_shapes=[f"(n, {h}, {w}, {c})"],
        native_serialization_platforms=platforms,
    )
    module = tf.Module()
    spec = tf.TensorSpec([None, h, w, c], tf.uint8, name="images")
    module.detect = tf.function(converted, input_signature=[spec], autograph=False)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with xla.full_precision(), _tf.quiet():  # traced (and lowered) here
            signatures = {"serving_default": module.detect.get_concrete_function()}
            tf.saved_model.save(module, str(tmp), signatures=signatures)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# What tf.saved_model.save writes into its folder: a SavedModel aejax wrote holds nothing else.
SAVED_MODEL_FILES = frozenset({"saved_model.pb", "fingerprint.pb", "variables", "assets"})


def check_replaceable(folder: Path) -> None:
    """One clear error when ``folder`` holds anything a SavedModel export did not write:
    replacing the export would delete it."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise AejaxError(f"{folder} is a file where the SavedModel's folder goes: move it")
    others = sorted(p.name for p in folder.iterdir() if p.name not in SAVED_MODEL_FILES)
    if others:
        raise AejaxError(
            f"{folder} holds files an export did not write ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}): replacing the SavedModel would delete "
            "them; move them, or give another --out"
        )


def write_onnx(detector, path: Path) -> None:
    """``detector``'s decision as an ONNX model (opset 23) at ``path``: input ``images``,
    uint8 ``[N, H, W, C]``, N dynamic; outputs :func:`aejax.detector.outputs`. Converted by
    jax2onnx from the computation :mod:`aejax.backend`'s CPU layers trace (plain ``lax``
    convolutions, pooling by reshapes: what aejax computes on CPU, and what ONNX runtimes
    mostly run on)."""
    import jax
    import jax.numpy as jnp

    # Imported before jax2onnx traces: it tells the model's activations by the functions
    # flax had before the converter patched them.
    from aejax import backend
    from aejax.backend import cpu  # noqa: F401

    try:
        import onnx
        from jax2onnx import to_onnx
    except ImportError:
        raise AejaxError(
            "--format onnx needs jax2onnx and onnx: bash scripts/setup.sh dev installs them "
            "(or, in a clone: uv pip install -e '.[onnx]' --override "
            "requirements/overrides.txt; docs/installation.md says why not pip)"
        ) from None
    from aejax.detector import outputs

    detect, names = decision(detector, members_in_turn=True), outputs()

    def ordered(images_NxHxWxC):
        out, seen, values = detect(images_NxHxWxC), set(), []
        for k in names:  # an ONNX value has one name: `score` is also its score's, so copied
            value = out[k] if id(out[k]) not in seen else jnp.copy(out[k])
            seen.add(id(out[k]))
            values.append(value)
        return tuple(values)

    spec = jax.ShapeDtypeStruct(("N", *detector.image_shape), jnp.uint8)
    # The converter's notes (float64 constants kept float32, shapes it leaves untyped) are
    # no news to a user: what matters is checked below.
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "jax2onnx")]
    levels = [q.level for q in quiet]
    with backend.use("cpu"), xla.full_precision(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q in quiet:
            q.setLevel(logging.ERROR)
        try:
            model = to_onnx(ordered, inputs=[spec], input_names=["images"],
                            output_names=list(names), model_name="aejax_detector")  # fmt: skip
        except Exception as e:  # the converter's own errors, of any type: one line
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AejaxError(
                f"jax2onnx cannot convert this {detector.config.arch} run ({reason}): export "
                "it with --format saved_model"
            ) from None
        finally:
            for q, level in zip(quiet, levels, strict=True):
                q.setLevel(level)
    with files.atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        _check_onnx(detector, tmp, names)


def _check_onnx(detector, path: Path, names: tuple[str, ...]) -> None:
    """Runs the converted model with onnxruntime on a few images against the detector
    itself: a model the converter got wrong, or one onnxruntime cannot run, is an error
    here, never a file."""
    import numpy as np

    try:
        import onnxruntime
    except ImportError:
        return
    images = np.random.default_rng(0).integers(0, 256, (3, *detector.image_shape), np.uint8)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # its reason is in the error below, said once
    try:
        session = onnxruntime.InferenceSession(str(path), options)
        got = session.run(None, {"images": images})[0]
    except Exception as e:  # onnxruntime's own errors: one line, the reason in it
        reason = str(e).split("Status Message:")[-1].strip().splitlines()[0]
        raise AejaxError(
            f"onnxruntime cannot run the ONNX model jax2onnx made of this "
            f"{detector.config.arch} run ({reason}): export it with --format saved_model"
        ) from None
    want = detector.detect(images)[names[0]]
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise AejaxError(
            f"the ONNX model's scores differ from the detector's ({got} vs {want}): export "
            "this run with --format saved_model"
        )


def artifact_entry(format: str, platforms: tuple[str, ...]) -> dict:
    """``metadata.json``'s entry for one artifact: its file, how to call it and, where they
    mean something for it, the platforms it was lowered for and the XLA flags under which
    it gives aejax's bits."""
    entry = {
        "file": {"jax": ARTIFACT, "saved_model": SAVED_MODEL, "onnx": ONNX}[format],
        "format": {
            "jax": "jax.export serialized Exported (jax.export.deserialize(bytes).call(x))",
            "saved_model": "TensorFlow SavedModel, signature serving_default(images=x)",
            "onnx": "ONNX opset 23, input images, outputs in the order of 'outputs'",
        }[format],
    }
    if format != "onnx":  # ONNX runtimes take no platform list and no XLA flags
        entry["platforms"] = list(platforms)
    if format == "jax":
        # XLA:CPU sums in an order that depends on its flags and on the batch: with these
        # flags (what aejax sets) and the same batch, the artifact gives aejax.score's
        # float32 bits exactly; under XLA's defaults, within a few ulps (tests/test_score.py).
        entry["xla_flags"] = " ".join(xla.CPU_FLAGS)
    return entry


def metadata(detector, platforms: tuple[str, ...], format: str = "jax") -> dict:
    """What ``metadata.json`` says: everything needed to use the detector's artifacts
    correctly, each under ``artifacts[format]`` (:func:`artifact_entry`)."""
    h, w, c = detector.image_shape
    return {
        "artifacts": {format: artifact_entry(format, platforms)},
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
    }


def merged(old: dict | None, new: dict) -> dict:
    """``new`` metadata, keeping the entries of ``old``'s other artifacts when both describe
    one detector (the same input, training, score and threshold): the formats of one
    detector written to one folder share its ``metadata.json``. Another detector's
    replaces it whole."""
    same = ("input", "training", "score", "threshold")
    if isinstance(old, dict) and all(old.get(k) == new[k] for k in same):
        return {**new, "artifacts": {**old.get("artifacts", {}), **new["artifacts"]}}
    return new


def write(
    detector, out_dir: Path, platforms: tuple[str, ...] = PLATFORMS, format: str = "jax"
) -> list[Path]:
    """Writes the artifact (``format``: one of :data:`FORMATS`) and ``metadata.json`` to
    ``out_dir`` (each atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if format == "saved_model":
        artifact = out_dir / SAVED_MODEL
        check_replaceable(artifact)  # before the conversion, which takes a while
        write_saved_model(detector, artifact, platforms)
    elif format == "onnx":
        artifact = out_dir / ONNX
        write_onnx(detector, artifact)
    else:
        artifact = out_dir / ARTIFACT
        blob = exported(detector, platforms).serialize()
        with files.atomic_path(artifact) as tmp:
            tmp.write_bytes(blob)
    path = out_dir / "metadata.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    # Through JSON: the new entry compares equal to what a file read back holds.
    new = json.loads(json.dumps(metadata(detector, platforms, format)))
    files.write_json(path, merged(old, new))
    return [artifact, path]


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """What ``python -m aejax.export`` asks for: checkpoint ``step`` (default latest) of the
    run in ``workdir`` (default the most recent one), on score ``score`` with threshold
    ``policy`` (default: the run's), lowered for ``platforms``, written to ``out`` as
    ``format`` (:data:`FORMATS`)."""

    out: Path
    workdir: Path | None = None
    step: int | None = None
    score: str | None = None
    policy: thresholds.Policy | None = None
    platforms: tuple[str, ...] = PLATFORMS
    format: str = "jax"


@dataclasses.dataclass(frozen=True)
class Exported:
    detector: Detector  # what was exported
    runs: Detector  # the run's detector (the same, unless another score or threshold was asked)
    fitted_now: bool  # the run had no detector, and its default one was fitted and saved now
    written: list[Path]


def export(request: ExportRequest) -> Exported:
    """Exports the run's detector (fitted now with the defaults where it has none), or the
    run's checkpoint with another score or threshold where asked."""

    unknown = set(request.platforms) - set(PLATFORMS)
    if not request.platforms or unknown:
        raise AejaxError(
            f"--platforms {','.join(request.platforms)!r}: choose among {', '.join(PLATFORMS)}"
        )
    workdir = request.workdir or run.latest_workdir()
    if request.format not in FORMATS:
        raise AejaxError(f"--format {request.format!r}: choose among {', '.join(FORMATS)}")
    runs, fitted_now = evaluation.run_detector(workdir, request.step)  # one device: the artifact's
    detector = runs
    if request.score or request.policy:
        detector = runs.with_threshold(request.policy, request.score)
    written = write(detector, request.out, request.platforms, request.format)
    return Exported(detector, runs, fitted_now, written)
