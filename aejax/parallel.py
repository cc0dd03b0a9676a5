"""Data parallelism over every device, on one host or many, with JAX's own sharding.

One mesh axis, ``data``. Images and each gathered batch are sharded along their batch axis;
parameters and optimizer state are replicated; ``jax.jit`` propagates the rest. The training
step computes each device's gradient under ``shard_map`` and sums them in one all-reduce of
a flat vector (:func:`aejax.core._summed_over_devices`). Several processes (hosts) join through
``jax.distributed``; each loads only the rows of the dataset its own devices hold.

Everything here that configures JAX must run before JAX starts a backend: the CLIs call
:func:`configure` first thing.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aejax.errors import AejaxError

AXIS = "data"


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def configure(
    *,
    cpu_devices: int | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    distributed: bool = False,
) -> None:
    """Sets XLA:CPU's device count, and joins a multi-process job; call before any
    JAX work (the device count cannot change once a backend has started).

    Args:
      cpu_devices: host devices to split the CPU into (XLA's own threading of small
        convolutions is weak; one device per core, each with its slice of the batch, uses the
        cores far better). Has no effect on a GPU/TPU backend.
      coordinator_address, num_processes, process_id: an explicit multi-process job
        (``host:port`` of process 0). ``distributed=True`` without them lets
        ``jax.distributed.initialize()`` detect the cluster (TPU pods, SLURM, ...).
    """
    if cpu_devices:
        try:
            jax.config.update("jax_num_cpu_devices", cpu_devices)
        except RuntimeError:
            # JAX already runs (a notebook, a test session): it keeps the devices it has.
            pass
    if coordinator_address or distributed:
        # CPU processes need a cross-process collectives library; GPU/TPU ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize(
                coordinator_address=coordinator_address,
                num_processes=num_processes,
                process_id=process_id,
            )
        except ValueError as e:  # JAX found no cluster to take the job's shape from
            if coordinator_address:
                raise
            raise AejaxError(
                "--distributed found no cluster to join (JAX detects SLURM, TPU pods and "
                "other clusters from their environment; "
                f"{str(e).strip().splitlines()[0]}): run it under srun or on the pod, or "
                "give --coordinator-address HOST:PORT --num-processes N --process-id I"
            ) from None


@dataclasses.dataclass(frozen=True)
class Devices:
    """Which devices a command uses: the first ``devices`` (default all), the CPU split into
    ``cpu_devices`` host devices (default: :func:`default_cpu_devices`), and the
    multi-process job to join (:func:`configure`)."""

    devices: int | None = None
    cpu_devices: int | None = None
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    distributed: bool = False

    def cpu_count(self, splits_well: bool, batch_size: int) -> int:
        """The host devices this process splits its CPU into: ``cpu_devices``, else
        :func:`default_cpu_devices` for the model and batch."""
        return self.cpu_devices or default_cpu_devices(splits_well, batch_size)


def setup(devices: Devices, *, splits_well: bool, batch_size: int) -> Placement:
    """Configures JAX (before anything starts a backend) and returns the devices to use:
    the CPU split into one host device per core where the model ``splits_well`` for this
    ``batch_size``, unless ``devices`` says otherwise."""
    configure(
        cpu_devices=devices.cpu_count(splits_well, batch_size),
        coordinator_address=devices.coordinator_address,
        num_processes=devices.num_processes,
        process_id=devices.process_id,
        distributed=devices.distributed,
    )
    # A count asked for and not had: JAX had already started with another (configure
    # leaves a started backend's devices as they are).
    if (
        devices.cpu_devices
        and jax.devices()[0].platform == "cpu"
        and jax.local_device_count() != devices.cpu_devices
    ):
        raise AejaxError(
            f"--cpu-devices {devices.cpu_devices}: JAX already started with "
            f"{jax.local_device_count()} CPU devices in this process"
        )
    return Placement.create(devices.devices)


def describe(placement: Placement) -> str:
    """E.g. '2 CPU devices' or '16 TPU devices in 4 processes'."""
    platform = placement.mesh.devices.flat[0].platform.upper()
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{placement.size} {platform} device{'s' if placement.size > 1 else ''}{processes}"


def default_cpu_devices(splits_well: bool, batch_size: int) -> int:
    """One device per core for models whose step splits well (the conv net gains, the dense
    net's step is too small to: experiments/results/cpu_devices.md), else one; always a
    divisor of the batch size."""
    if not splits_well:
        return 1
    return max(d for d in range(1, host_cores() + 1) if batch_size % d == 0)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where arrays live: a 1-D ``data`` mesh over the devices in use."""

    mesh: Mesh

    @classmethod
    def create(cls, num_devices: int | None = None) -> Placement:
        available = jax.device_count()
        num_devices = num_devices or available
        if num_devices > available:
            raise AejaxError(
                f"--devices {num_devices}, but JAX sees {available} "
                f"({jax.devices()[0].platform}); on CPU use --cpu-devices"
            )
        if jax.process_count() > 1 and num_devices != available:
            raise AejaxError("with several processes every device is used: drop --devices")
        # Auto axes: jit propagates shardings (explicit-sharding mode would make every gather
        # spell out its output sharding).
        mesh = jax.make_mesh(
            (num_devices,),
            (AXIS,),
            devices=jax.devices()[:num_devices],
            axis_types=(jax.sharding.AxisType.Auto,),
        )
        return cls(mesh)

    @property
    def size(self) -> int:
        return self.mesh.size

    @property
    def batch(self) -> NamedSharding:
        """Arrays split along their first (batch) axis."""
        return NamedSharding(self.mesh, P(AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise AejaxError(
                f"batch size {batch_size} does not split over {self.size} devices: use a "
                f"multiple of {self.size}, or --devices / --cpu-devices N with N dividing it"
            )

    def padded(self, n: int) -> int:
        """``n`` rounded up to a whole number of rows per device."""
        return math.ceil(n / self.size) * self.size

    def put_rows(
        self,
        n: int,
        load_rows: Callable[[int, int], np.ndarray],
        row_shape: tuple[int, ...],
        dtype=np.uint8,
    ) -> jax.Array:
        """A ``[padded(n), *row_shape]`` array sharded along rows, of which this process loads
        only the rows its own devices hold (``load_rows(start, stop)``, ``stop <= n``); rows
        past ``n`` are zeros, and never sampled or scored."""
        n_pad = self.padded(n)
        shape = (n_pad, *row_shape)
        index_map = self.batch.addressable_devices_indices_map(shape)
        starts = [idx[0].start or 0 for idx in index_map.values()]
        stops = [idx[0].stop if idx[0].stop is not None else n_pad for idx in index_map.values()]
        lo, hi = min(starts), max(stops)
        # This process's rows are read once, as one block; each device's shard is a slice.
        local = np.zeros((hi - lo, *row_shape), dtype)
        if min(hi, n) > lo:
            local[: min(hi, n) - lo] = load_rows(lo, min(hi, n))

        def shard(index: tuple[slice, ...]) -> np.ndarray:
            rows = index[0]
            start = rows.start or 0
            stop = rows.stop if rows.stop is not None else n_pad
            return local[start - lo : stop - lo]

        return jax.make_array_from_callback(shape, self.batch, shard)

    def replicate(self, tree: Any) -> Any:
        """``tree`` (the same on every process) replicated on every device."""
        return jax.device_put(tree, self.replicated)


def to_numpy(array: jax.Array | np.ndarray) -> np.ndarray:
    """A (possibly multi-process) array, whole, as numpy on every process (a host array as
    it is)."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def is_main_process() -> bool:
    """Process 0 writes reports, figures and logs; every process takes part in the compute."""
    return jax.process_index() == 0
