"""Data parallelism: the same update on 1 and on 8 (simulated CPU) devices gives the same loss.

The device count must be fixed before JAX initialises, so the 8-device update runs in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``. It starts from the
initial weights this process writes (no second init compile) and compiles while this process
computes the 1-device reference on the same batch.
"""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import configs_for_tests as cft
from jflow import checkpoint, sharding, train

TESTS = pathlib.Path(__file__).resolve().parent
BATCH = 8

SCRIPT = r"""
import json, sys
import jax, numpy as np
from jflow import checkpoint, sharding, train
import configs_for_tests as cft

config = cft.smoke_config()
config.train.batch_size = int(sys.argv[2])
model = cft.model(config)
mesh = sharding.make_mesh(8)
loaded = checkpoint.load_params(sys.argv[1])
state = train.state_from_weights(loaded["params"], loaded["batch_stats"], config, mesh)
gbatch = sharding.global_batch(cft.batch(config, config.train.batch_size), mesh)
compiled = train.make_update_fn(model, config, mesh).lower(state, gbatch).compile()
state, metrics = compiled(state, gbatch)
print("RESULT" + json.dumps({
    "devices": jax.device_count(), "metrics": {k: float(v) for k, v in metrics.items()},
    "batch_spec": str(gbatch["image1"].sharding.spec),
    "all_reduce": "all-reduce" in compiled.as_text()}))
"""


@pytest.fixture(scope="module")
def one_vs_eight(tmp_path_factory):
    config = cft.smoke_config()
    config.train.batch_size = BATCH
    model = cft.model(config)
    mesh = sharding.make_mesh(1)
    state = train.create_train_state(model, config, mesh)
    ckpt = tmp_path_factory.mktemp("init") / "checkpoints"
    checkpoint.save_checkpoint(ckpt, 0, state.params, state.batch_stats)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ckpt), str(BATCH)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        gbatch = sharding.global_batch(cft.batch(config, BATCH), mesh)
        state, metrics = train.make_update_fn(model, config, mesh)(state, gbatch)
        one = {"metrics": {k: float(v) for k, v in metrics.items()}}
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    eight = json.loads([l for l in out.splitlines() if l.startswith("RESULT")][-1][6:])
    return one, eight


def test_one_vs_eight_devices_same_loss(one_vs_eight):
    one, eight = one_vs_eight
    assert eight["devices"] == 8
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
