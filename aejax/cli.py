"""What the command-line tools share: device options, and turning errors into one line."""

from __future__ import annotations

import argparse
import sys

import jax

from aejax import parallel
from aejax.errors import AejaxError


def add_device_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("devices (see README, 'Scaling out')")
    group.add_argument("--devices", type=int, help="use the first N devices (default: all)")
    group.add_argument("--cpu-devices", type=int, help="split the CPU into N host devices "
                       "(default: one per core where the model gains from it, else 1)")
    group.add_argument("--coordinator-address", help="host:port of process 0 of a "
                       "multi-process job")
    group.add_argument("--num-processes", type=int, help="processes in the job")
    group.add_argument("--process-id", type=int, help="this process's index in the job")
    group.add_argument("--distributed", action="store_true", help="join a multi-process job "
                       "that jax.distributed.initialize() detects (TPU pods, SLURM, ...)")


def setup_devices(args, *, splits_well: bool, batch_size: int) -> parallel.Placement:
    """Configures JAX from the device options (before anything starts a backend)."""
    cpu_devices = args.cpu_devices or parallel.default_cpu_devices(splits_well, batch_size)
    if args.cpu_devices and parallel.started() and jax.devices()[0].platform == "cpu" \
            and jax.local_device_count() != args.cpu_devices:
        raise AejaxError(f"--cpu-devices {args.cpu_devices}: JAX already started with "
                         f"{jax.local_device_count()} CPU devices in this process")
    parallel.configure(cpu_devices=cpu_devices, coordinator_address=args.coordinator_address,
                       num_processes=args.num_processes, process_id=args.process_id,
                       distributed=args.distributed)
    return parallel.Placement.create(args.devices)


def describe(placement: parallel.Placement) -> str:
    """E.g. '2 CPU devices' or '16 TPU devices in 4 processes'."""
    platform = placement.mesh.devices.flat[0].platform.upper()
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    return f"{placement.size} {platform} device{'s' if placement.size > 1 else ''}{processes}"


def fail(error: Exception) -> int:
    # One write, flushed: Orbax's background threads may print to stderr at the same moment
    # (print() writes the text and its newline separately, and theirs landed in between).
    sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    return 2
