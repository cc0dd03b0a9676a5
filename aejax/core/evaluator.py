"""The one per-image evaluator: every score, the test loss and the evaluation report derive
from :func:`per_image`'s terms; reconstructions, codes and decodings beside it."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aejax import losses, models, xla
from aejax.core.state import TrainState, over_members


def to_float(images: jax.Array) -> jax.Array:
    """``images``' uint8 pixels to float32 in [0, 1] (x / 255, as Keras users scale them);
    floats pass."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


# What per_image can compute for each image; "code" is the flattened code [N, D], "features"
# the encoder's pooled activations [N, F] (Autoencoder.encode_with_features).
TERMS = ("bce", "mse", "kl", "entropy", "elbo", "disagreement", "transform", "code", "features")
SIDE_BY_SIDE = ("code", "features")  # an ensemble's: its members' side by side


def per_image(
    state: TrainState,
    images: jax.Array | np.ndarray,
    terms: tuple[str, ...] = TERMS,
    batch_size: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    each_member: bool = False,
) -> dict[str, jax.Array]:
    r"""The one per-image evaluator: ``{term: [N, ...]}`` of the ``state``'s model for each
    of ``terms`` (of TERMS).

    ``bce`` and ``mse``: reconstruction errors (:mod:`aejax.losses`); ``entropy``: the image's
    own mean binary entropy; ``kl``: ``bce - entropy`` (:func:`aejax.losses.kl_per_example`);
    ``elbo``: ``bce`` plus the model's ``prior_term``; ``disagreement``: an ensemble's
    per-pixel variance of its members' reconstructions, averaged over the pixels (0 for one
    model); ``transform``: a self-supervised head's negative log-likelihood of the true
    transformations (:func:`aejax.models.heads.score`; 0 for a model without a head);
    ``code``: the flattened code; ``features``: the encoder's pooled activations,
    layer by layer (:meth:`aejax.models.Autoencoder.encode_with_features`). Every score,
    ``eval_loss`` and the evaluation report derive from it. Runs ``batch_size`` images at a
    time (default: :func:`eval_rows`; see :func:`batched`), so device memory stays bounded
    whatever N and whatever the image size; with ``batch_sharding``, each batch is split
    over the devices. Terms not asked for are not computed (XLA drops them). A NumPy array
    of more than :func:`chunk_rows` images (a memory-mapped split) is sent to the device in
    chunks of that many.
    ``each_member``: an ensemble's terms member by member, ``[N, K, ...]``, instead of
    combined.
    """
    with xla.full_precision():
        rows = chunk_rows(images.shape[1:], itemsize=images.dtype.itemsize)
        if isinstance(images, np.ndarray) and len(images) > rows:
            parts = [
                _per_image(
                    state,
                    images[i : i + rows],
                    terms,
                    batch_size,
                    batch_sharding,
                    each_member,
                )  # fmt: skip
                for i in range(0, len(images), rows)
            ]
            return {k: jnp.concatenate([p[k] for p in parts]) for k in terms}
        return _per_image(state, images, terms, batch_size, batch_sharding, each_member)


@xla.jit(static_argnames=("terms", "batch_size", "batch_sharding", "each_member"))
def _per_image(
    state: TrainState,
    images: jax.Array,
    terms: tuple[str, ...] = TERMS,
    batch_size: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    each_member: bool = False,
) -> dict[str, jax.Array]:
    """See :func:`per_image`."""
    unknown = set(terms) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown terms {sorted(unknown)}; choose from {TERMS}")
    return batched(
        terms_of(state, terms, each_member),
        images,
        batch_size or eval_rows(state.model, images.shape[1:]),
        batch_sharding,
    )


def eval_rows(model: models.Autoencoder, image_shape: tuple[int, ...]) -> int:
    """How many ``image_shape`` images (``H, W, C``) one scoring batch of ``model`` takes:
    its ``eval_batch_size``, at most its ``eval_pixels`` pixels (at least one image): what a
    batch keeps grows with its pixels (every layer's activations), so large images go in
    smaller batches.

    >>> [eval_rows(models.get("conv"), (side, side, 3)) for side in (28, 128, 256, 4096)]
    [256, 16, 4, 1]
    """
    pixels = image_shape[0] * image_shape[1]
    return max(1, min(model.eval_batch_size, model.eval_pixels // pixels))


# One rule sizes every chunk of images held at once: the images of a folder decoded
# together, a memory-mapped split sent to the device, the rows one Detector.detect call
# scores. A chunk's largest per-image buffer stays within CHUNK_BYTES, in a power of two of
# images (few compiled shapes). 16 MiB keeps a kNN score's similarities (20 KB an image) at
# 512 rows: from 1024 on, glibc maps each call's buffers fresh from the OS, and their page
# faults cost a third of scoring's CPU time (experiments/results/score_scale.md).
CHUNK_BYTES = 2**24


def chunk_rows(image_shape: tuple[int, ...], row_bytes: int = 0, itemsize: int = 1) -> int:
    """How many ``image_shape`` images (``H, W, C``) one chunk holds: as many as keep its
    largest per-image buffer, the images themselves (``itemsize`` bytes a value) or
    ``row_bytes`` (what scoring makes per image, :meth:`aejax.ood.Stats.row_bytes`), within
    :data:`CHUNK_BYTES`; a power of two, at least one.

    >>> [chunk_rows((side, side, 3)) for side in (28, 256, 4096)]
    [4096, 64, 1]
    >>> chunk_rows((28, 28, 1), row_bytes=4 * 5000)  # a kNN bank of 5000 codes
    512
    """
    per_image = max(itemsize * math.prod(image_shape), row_bytes, 1)
    return 1 << max(0, (CHUNK_BYTES // per_image).bit_length() - 1)


def chunk_size(n: int, rows: int) -> int:
    """The size of each chunk when ``n`` images go in chunks of at most ``rows``: the fewest
    chunks, evened out (as :func:`batched` evens its batches), the last one padded to it.
    Every chunk then has one shape (one compiled program), and the padding is fewer images
    than there are chunks.

    >>> chunk_size(300, 64), chunk_size(10_000, 512), chunk_size(7, 512), chunk_size(0, 512)
    (60, 500, 7, 1)
    """
    return math.ceil(n / math.ceil(n / rows)) if n else 1


def padded(images_NxHxWxC: np.ndarray, rows: int) -> np.ndarray:
    """``images_NxHxWxC``, a chunk of fewer than ``rows`` images, made up to ``rows`` with
    black ones, whose results the caller drops (:func:`chunk_size`'s last chunk)."""
    missing = rows - len(images_NxHxWxC)
    if missing <= 0:
        return images_NxHxWxC
    black = np.zeros((missing, *images_NxHxWxC.shape[1:]), images_NxHxWxC.dtype)
    return np.concatenate([images_NxHxWxC, black])


def terms_of(
    state: TrainState,
    terms: tuple[str, ...] = TERMS,
    each_member: bool = False,
    members_in_turn: bool = False,
) -> Callable[[jax.Array], dict]:
    """``images -> {term: [B, ...]}``, :func:`image_terms` of the state's model; for an
    ensemble, of every member, then combined: errors averaged over the members (each term is
    a per-image mean, so the ensemble's is the mean of the members'), codes side by side,
    and the members' ``disagreement``. With ``each_member``, an ensemble's terms are
    ``[B, K, ...]``, one per member, not combined. ``members_in_turn``: an ensemble's members
    one after another, not vmapped, for a converter that cannot follow ``vmap`` (jax2onnx's
    layers have no batching rules); vmapped is faster in JAX (13% on 8 dense members)."""
    if not state.members:
        model = state.model
        return lambda x_uint8: image_terms(model, x_uint8, terms)

    def combined(x_uint8):
        def one(params):
            return _terms_and_logits(nnx.merge(state.graphdef, params), x_uint8, terms)

        if members_in_turn:
            members = len(jax.tree.leaves(state.params)[0])
            each, logits_KxBx_ = jax.tree.map(
                lambda *m: jnp.stack(m),
                *[one(jax.tree.map(lambda p, k=k: p[k], state.params)) for k in range(members)],
            )
        else:  # one vmapped pass over the members, all reading the same batch
            each, logits_KxBx_ = jax.vmap(one)(state.params)  # {term: [K, B, ...]}
        if "kl" in terms:
            # The members' kl at once, each pixel's level looked up beside its logits: vmapped,
            # XLA wrote one lookup of the shared images to memory (15 floats a pixel) for the
            # members to read, several times slower (the vmapped kl is then dropped unused).
            images = jnp.broadcast_to(x_uint8, logits_KxBx_.shape)
            kl = losses.kl_per_example(
                logits_KxBx_.reshape(-1, *logits_KxBx_.shape[2:]),
                images.reshape(-1, *images.shape[2:]),
            )
            each["kl"] = kl.reshape(logits_KxBx_.shape[:2])
        if each_member:
            return {k: jnp.moveaxis(v, 0, 1) for k, v in each.items()}
        out = {k: jnp.mean(v, axis=0) for k, v in each.items() if k not in SIDE_BY_SIDE}
        for k in SIDE_BY_SIDE:
            if k in each:  # [K, B, D] -> [B, K * D]
                out[k] = jnp.moveaxis(each[k], 0, 1).reshape(x_uint8.shape[0], -1)
        if "disagreement" in terms:
            p_KxBxP = jax.nn.sigmoid(logits_KxBx_.astype(jnp.float32))
            p_KxBxP = p_KxBxP.reshape(*p_KxBxP.shape[:2], -1)
            out["disagreement"] = jnp.mean(jnp.var(p_KxBxP, axis=0), axis=1)
        return {name: out[name] for name in terms}

    return combined


def image_terms(
    model: models.Autoencoder, images_BxHxWxC: jax.Array, terms: tuple[str, ...] = TERMS
) -> dict[str, jax.Array]:
    """:func:`per_image`'s ``terms`` of ``model`` on one batch of uint8 images
    ``images_BxHxWxC``, all at once (traceable, and shape-polymorphic in the batch: the
    exported detector runs this)."""
    return _terms_and_logits(model, images_BxHxWxC, terms)[0]


def _terms_and_logits(model, images_BxHxWxC, terms):
    x = to_float(images_BxHxWxC)
    features = None
    if "features" in terms:
        code, features = model.encode_with_features(x)
    else:
        code = model.encode(x)
    logits = model.decode(code)
    bce = losses.bce_per_example(logits, x)
    entropy = losses.entropy_per_example(images_BxHxWxC)
    every = {
        "bce": bce,
        "mse": losses.mse_per_example(logits, x),
        "kl": losses.kl_per_example(logits, images_BxHxWxC),
        "entropy": entropy,
        "elbo": bce + model.prior_term(x),
        "disagreement": jnp.zeros_like(bce),  # one model agrees with itself
        "transform": model.transform_term(x),
        "code": code.reshape(x.shape[0], -1),
        "features": features,
    }
    return {name: every[name] for name in terms}, logits


def score(
    state: TrainState,
    images: jax.Array,
    term: str = "bce",
    batch_size: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> jax.Array:
    """Per-image reconstruction error ``[N]`` of the ``state``'s model on ``images``:
    :func:`per_image`'s ``term`` (``bce``, ``mse``, ...), ``batch_size`` at a time, over
    ``batch_sharding``'s devices if given."""
    return per_image(state, images, (term,), batch_size, batch_sharding)[term]


def batched(
    fn,
    images_NxHxWxC: jax.Array,
    batch_size: int,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> jax.Array:
    """``fn`` over ``images_NxHxWxC`` in batches of ``batch_size`` (zero-padded tail, cut
    off again), each batch split over ``batch_sharding``'s devices if given.

    Like big_vision's evaluators: fixed-size batches, so one compiled function serves any N,
    and per-example outputs, so padding never leaks into a mean. ``batch_size`` is an upper
    bound: the batches are evened out, which usually leaves nothing to pad.
    """
    n = images_NxHxWxC.shape[0]
    # As many batches as batch_size asks for, of equal size: 10,000 images in batches of at
    # most 2048 go as 5 x 2000, needing no padding (whose copy of every image is a
    # measurable part of a small net's evaluation).
    # No images: no batch (an empty result of each output's shape).
    batch_size = math.ceil(n / math.ceil(n / batch_size)) if n else 1
    if batch_sharding is not None:  # every batch must split evenly over the devices
        devices = len(batch_sharding.device_set)
        batch_size = math.ceil(batch_size / devices) * devices
    steps = math.ceil(n / batch_size)
    padded = jnp.pad(images_NxHxWxC, [(0, steps * batch_size - n)] + [(0, 0)] * 3)
    batches = padded.reshape(steps, batch_size, *images_NxHxWxC.shape[1:])
    if batch_sharding is not None:
        spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
        batches = jax.lax.with_sharding_constraint(
            batches, jax.sharding.NamedSharding(batch_sharding.mesh, spec)
        )
    out = jax.lax.map(fn, batches)  # any pytree of per-example arrays
    return jax.tree.map(lambda v: v.reshape(steps * batch_size, *v.shape[2:])[:n], out)


def eval_loss(
    state: TrainState,
    images: jax.Array,
    batch_size: int | None = None,
    num_examples: int | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
    each_member: bool = False,
) -> jax.Array:
    """Mean reconstruction BCE of the ``state``'s model over the first ``num_examples``
    (default all) ``images``, ``batch_size`` at a time, split over ``batch_sharding``'s
    devices if given
    (Keras' ``val_loss`` for these models); with ``each_member``, an ensemble's ``[K]``, one
    per member, from one vmapped pass."""
    bce = per_image(state, images, ("bce",), batch_size, batch_sharding, each_member)["bce"]
    return _mean_of_first(bce, num_examples)


@xla.quick_jit(static_argnums=1)
def _mean_of_first(values_NxK, n: int | None):
    # Jitted: eagerly the slice and the mean were programs of their own to compile.
    return jnp.mean(values_NxK[:n], axis=0)


@xla.jit
def reconstruct(state: TrainState, images: jax.Array) -> jax.Array:
    """``images`` reconstructed by the ``state``'s model, float32 in [0, 1], of their shape;
    an ensemble's is the mean of its members'."""
    one = over_members(lambda s: jax.nn.sigmoid(s.model(to_float(images))))(state)
    return jnp.mean(one, axis=0) if state.members else one


@xla.jit
def encode(state: TrainState, images: jax.Array) -> jax.Array:
    """The codes of ``images`` under the ``state``'s model (``[B, latent]`` for dense,
    ``[B, 7, 7, latent]`` for conv)."""
    return state.model.encode(to_float(images))


@xla.jit
def decode(state: TrainState, codes: jax.Array) -> jax.Array:
    """Images, float32 in [0, 1], decoded from ``codes`` by the ``state``'s model."""
    return jax.nn.sigmoid(state.model.decode(codes))
