"""Data-parallel sharding: a 1-D ``data`` mesh over all devices, batches split along it.

Parameters and optimiser state are replicated; each process loads ``global_batch //
process_count`` samples and :func:`global_batch` assembles the global array with
``jax.make_array_from_process_local_data``. Multi-host runs call :func:`initialize_multihost`
(``jax.distributed.initialize``) before anything touches a device.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

PyTree = Any
DATA_AXIS = "data"


def initialize_multihost() -> None:
    """``jax.distributed.initialize()`` with the cluster settings from the environment.

    Managed clusters (SLURM, Open MPI, Cloud TPU, ...) are detected by JAX. Elsewhere set, on
    every process, ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0; read by JAX),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (``0 .. JAX_NUM_PROCESSES-1``; read here).
    CPU processes exchange data with gloo (``JAX_CPU_COLLECTIVES_IMPLEMENTATION``, default).
    """
    kwargs = {}
    for var, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        value = os.environ.get(var, "").strip()
        if value:
            if not value.isdigit():
                raise ValueError(f"initialize_multihost: ${var} must be an integer, got {value!r}")
            kwargs[arg] = int(value)
    jax.distributed.initialize(**kwargs)


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D ``('data',)`` mesh over ``num_devices`` (default: all) devices.

    The axis is ``Auto`` (sharding propagated by the compiler), not ``Explicit``: with explicit
    axes every reshape that merges the sharded batch axis (RAFT's correlation volume
    ``(B, h, w, h, w)`` pooling, for instance) must name its output sharding, which would leak
    sharding into the model code. Inputs and outputs are still pinned with ``NamedSharding``.
    """
    n = jax.device_count() if num_devices is None else num_devices
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"make_mesh: num_devices={n} but {jax.device_count()} devices exist")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n])


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> int:
    """Samples this process loads; checks that the global batch splits over devices and hosts."""
    n_dev, n_proc = mesh.size, jax.process_count()
    if global_batch_size % n_dev or global_batch_size % n_proc:
        raise ValueError(f"config.train.batch_size={global_batch_size} must be divisible by the "
                         f"number of devices ({n_dev}) and processes ({n_proc})")
    return global_batch_size // n_proc


def global_batch(local: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global arrays sharded over ``data`` (non-arrays are dropped)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local.items() if isinstance(v, np.ndarray)}


def replicate(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    """Places every leaf of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))
