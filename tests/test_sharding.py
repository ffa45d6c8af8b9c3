"""Data parallelism: one update on 1 device, on 8 (simulated CPU) devices and on 2 processes.

The device and process counts must be fixed before JAX initialises, so the 8-device update
(DEQ-RAFT smoke config) and the two-process update (``jax.distributed`` on 127.0.0.1, one CPU
device each, gloo collectives; the smoke config with the tiny BatchNorm model of
``fake_flow_model``, as the DEQ model compiled twice more would cost over a minute) run in
subprocesses of :data:`SCRIPT`. They start from the initial weights this process writes (no
second init compile), load their batch with the trainer's loader and compile while this
process computes the 1-device reference on the same global batch.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import flax.serialization
import jax
import numpy as np
import pytest

import configs_for_tests as cft
from jflow import sharding, train

TESTS = pathlib.Path(__file__).resolve().parent
BATCH = 8
TIMEOUT_S = 240
# stderr of a JAX whose CPU backend cannot run collectives across processes
NO_CPU_COLLECTIVES = ("aren't implemented on the CPU backend", "make_gloo_tcp_collectives",
                      "gloo is not", "Unknown CPU collectives")

SCRIPT = r"""
import json, os, sys
import flax.serialization, jax, numpy as np
from jflow import sharding, train
import configs_for_tests as cft

if os.environ.get("JAX_NUM_PROCESSES"):
    sharding.initialize_multihost()
config = cft.smoke_config()
config.train.batch_size = int(sys.argv[2])
model = cft.fake_model(config) if sys.argv[3] == "fake" else cft.model(config)
mesh = sharding.make_mesh()
with open(sys.argv[1], "rb") as f:
    weights = flax.serialization.msgpack_restore(f.read())
state = train.state_from_weights(weights["params"], weights["batch_stats"], config, mesh)
local = next(train.build_loader(config, mesh, 0))
gbatch = sharding.global_batch(local, mesh)
compiled = train.make_update_fn(model, config, mesh).lower(state, gbatch).compile()
state, metrics = compiled(state, gbatch)
image1 = gbatch["image1"]
print("RESULT" + json.dumps({
    "devices": jax.device_count(), "processes": jax.process_count(),
    "process": jax.process_index(), "metrics": {k: float(v) for k, v in metrics.items()},
    "local_row_sums": local["image1"].reshape(len(local["image1"]), -1).sum(1).tolist(),
    "global_shape": list(image1.shape),
    "addressable_rows": sorted(s.index[0].start or 0 for s in image1.addressable_shards),
    "batch_spec": str(image1.sharding.spec),
    "all_reduce": "all-reduce" in compiled.as_text()}))
"""


def _row_sums(images: np.ndarray) -> list[int]:
    return images.reshape(len(images), -1).sum(1).tolist()


class Setup:
    """Smoke config with a global batch of BATCH, a model (``kind``: 'deq' or 'fake') and its
    initial weights, also written to ``path``."""

    def __init__(self, kind: str, directory: pathlib.Path):
        self.kind, self.config = kind, cft.smoke_config()
        self.config.train.batch_size = BATCH
        self.model = cft.fake_model(self.config) if kind == "fake" else cft.model(self.config)
        variables = jax.device_get(
            train.init_variables(self.model, self.config, sharding.make_mesh(1)))
        self.weights = {"params": variables["params"],
                        "batch_stats": variables.get("batch_stats", {})}
        self.path = directory / "weights.msgpack"
        self.path.write_bytes(flax.serialization.msgpack_serialize(self.weights))

    def reference(self) -> dict:
        """One update on 1 device and the full global batch of the trainer's loader."""
        mesh = sharding.make_mesh(1)
        state = train.state_from_weights(self.weights["params"], self.weights["batch_stats"],
                                         self.config, mesh)
        local = next(train.build_loader(self.config, mesh, 0))
        update = train.make_update_fn(self.model, self.config, mesh)
        _, metrics = update(state, sharding.global_batch(local, mesh))
        return {"metrics": {k: float(v) for k, v in metrics.items()},
                "row_sums": _row_sums(local["image1"])}


def _run_script(setup: Setup, envs: list[dict[str, str]]) -> tuple[dict, list[dict]]:
    """Runs SCRIPT once per entry of ``envs`` (extra environment), concurrently, while this
    process computes ``setup.reference()``; returns the reference and each run's RESULT. Every
    run is killed after TIMEOUT_S, and all are killed when one fails (a process left alone would
    wait for its peer)."""
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    base.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
        [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in envs]
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(setup.path), str(BATCH),
                               setup.kind],
                              env=dict(base, **env), stdout=out, stderr=err, text=True)
             for env, (out, err) in zip(envs, logs)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        reference = setup.reference()
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    results = []
    for p, (out, err) in zip(procs, logs):
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
        out.close(), err.close()
        results.append((p.returncode, stdout, stderr))
    for rc, _, stderr in results:
        if rc and any(s in stderr for s in NO_CPU_COLLECTIVES) and len(envs) > 1:
            pytest.skip(f"jax {jax.__version__}: this CPU backend cannot run collectives across "
                        f"processes:\n{stderr[-1500:]}")
    failed = sorted(((rc == -9, i, rc, e) for i, (rc, _, e) in enumerate(results) if rc))
    if failed:  # report a run that failed by itself before those killed (-9) after it
        _, i, rc, stderr = failed[0]
        pytest.fail(f"run {i} of {len(envs)}: exit status {rc} (-9: killed after {TIMEOUT_S} s "
                    f"or when another run failed)\n{stderr[-3000:]}")
    return reference, [json.loads([ln for ln in o.splitlines() if ln.startswith("RESULT")][-1][6:])
                       for _, o, _ in results]


@pytest.fixture(scope="module")
def one_vs_eight(tmp_path_factory):
    """DEQ-RAFT: the 1-device reference and the update on 1 process with 8 CPU devices."""
    setup = Setup("deq", tmp_path_factory.mktemp("deq"))
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    reference, (eight,) = _run_script(setup, [env])
    return reference, eight


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_vs_two_processes(tmp_path_factory):
    """Tiny model: the 1-device reference and the update on 2 processes (1 CPU device each)
    joined by ``jax.distributed`` (settings as environment variables, as on a real cluster)."""
    setup = Setup("fake", tmp_path_factory.mktemp("fake"))
    address = f"127.0.0.1:{_free_port()}"
    envs = [{"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2",
             "JAX_PROCESS_ID": str(i)} for i in range(2)]
    return _run_script(setup, envs)


def test_one_vs_eight_devices_same_loss(one_vs_eight):
    one, eight = one_vs_eight
    assert eight["devices"] == 8 and eight["processes"] == 1
    assert np.isfinite(one["metrics"]["loss"]) and one["metrics"]["loss"] > 0
    np.testing.assert_allclose(eight["metrics"]["loss"], one["metrics"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(eight["metrics"]["epe"], one["metrics"]["epe"], rtol=1e-5)
    # the gradient (summed in another order across devices) and BatchNorm statistics agree
    np.testing.assert_allclose(eight["metrics"]["grad_norm"], one["metrics"]["grad_norm"],
                               rtol=1e-4)


def test_batch_is_split_and_gradients_all_reduced(one_vs_eight):
    _, eight = one_vs_eight
    assert eight["batch_spec"] in ("P('data',)", "PartitionSpec('data',)")
    assert eight["all_reduce"]
    assert eight["addressable_rows"] == list(range(BATCH))


def test_two_processes_same_update_as_one(one_vs_two_processes):
    reference, two_processes = one_vs_two_processes
    one = reference["metrics"]
    assert np.isfinite(one["loss"]) and one["loss"] > 0 and one["grad_norm"] > 0
    assert [r["process"] for r in two_processes] == [0, 1]
    for r in two_processes:
        assert r["processes"] == 2 and r["devices"] == 2
        for k in ("loss", "epe", "grad_norm"):
            np.testing.assert_allclose(r["metrics"][k], one[k], rtol=1e-5, err_msg=k)


def test_two_processes_each_load_their_half(one_vs_two_processes):
    reference, two_processes = one_vs_two_processes
    half = BATCH // 2
    assert len(set(reference["row_sums"])) == BATCH  # the samples are distinguishable
    for i, r in enumerate(two_processes):
        assert r["global_shape"][0] == BATCH
        assert r["local_row_sums"] == reference["row_sums"][i * half:(i + 1) * half]
        assert r["addressable_rows"] == [i * half]  # its one device holds only its half
        assert r["all_reduce"]


def test_mesh_and_global_batch_on_this_machine():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    with pytest.raises(ValueError, match="num_devices"):
        sharding.make_mesh(jax.device_count() + 1)
    n = jax.device_count()
    assert sharding.local_batch_size(4 * n, mesh) == 4 * n
    local = {"image1": np.arange(4 * n * 6, dtype=np.uint8).reshape(4 * n, 2, 3),
             "meta": [{"frame": i} for i in range(4 * n)]}
    out = sharding.global_batch(local, mesh)
    assert set(out) == {"image1"}  # non-arrays (meta) are dropped
    np.testing.assert_array_equal(np.asarray(out["image1"]), local["image1"])
    assert out["image1"].sharding.spec == jax.sharding.PartitionSpec("data")


def test_batch_size_must_split_over_devices():
    mesh = sharding.make_mesh(1)
    fake = type("M", (), {"size": 3})()  # a 3-device mesh without needing 3 devices
    with pytest.raises(ValueError, match="batch_size=4.*3"):
        sharding.local_batch_size(4, fake)
    assert sharding.local_batch_size(3, mesh) == 3
