"""orbax checkpoints: round trip, keep-last-k, optional items, NaN refusal, load_params paths."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jflow import checkpoint


def _state(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"conv": {"kernel": jax.random.normal(k1, (3, 3, 2, 4))},
              "head": {"bias": jax.random.normal(k2, (4,))}}
    batch_stats = {"bn": {"mean": jnp.arange(4.0), "var": jnp.ones(4)}}
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, opt_state, params)
    return params, batch_stats, opt_state


def _assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_optimizer_state_and_keep_last(tmp_path):
    params, batch_stats, opt_state = _state()
    ck = checkpoint.Checkpointer(tmp_path / "checkpoints", max_to_keep=2)
    for step in (1, 2, 3):
        scaled = jax.tree.map(lambda x: x * step, params)
        ck.save(step, scaled, batch_stats, opt_state, {"note": "x"})
    ck.wait()
    assert ck.all_steps() == [2, 3]
    abstract = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}
    out = ck.restore_latest(abstract)
    ck.close()
    _assert_tree_equal(out["params"], jax.tree.map(lambda x: x * 3, params))
    _assert_tree_equal(out["batch_stats"], batch_stats)
    _assert_tree_equal(out["opt_state"], opt_state)  # optax NamedTuples restored exactly
    assert isinstance(out["opt_state"][0], optax.ScaleByAdamState)
    assert out["meta"] == {"step": 3, "note": "x"}


def test_restore_latest_on_empty_directory_is_none(tmp_path):
    ck = checkpoint.Checkpointer(tmp_path / "c")
    assert ck.restore_latest({"params": {}}) is None
    ck.close()


def test_refuses_non_finite_state(tmp_path):
    params, batch_stats, opt_state = _state()
    params["head"]["bias"] = params["head"]["bias"].at[0].set(jnp.nan)
    ck = checkpoint.Checkpointer(tmp_path / "c")
    with pytest.raises(checkpoint.CheckpointError, match="step 7.*NaN"):
        ck.save(7, params, batch_stats, opt_state)
    ck.close()
    assert not os.path.exists(tmp_path / "c" / "7")


@pytest.mark.parametrize("which", ["workdir", "checkpoints", "step"])
def test_load_params_from_convert_layout(tmp_path, which):
    params, _, _ = _state(1)
    path = checkpoint.save_checkpoint(tmp_path / "checkpoints", 5, params, meta={"source": "t"})
    assert {"meta", "params"} <= set(os.listdir(path)) and "opt_state" not in os.listdir(path)
    arg = {"workdir": tmp_path, "checkpoints": tmp_path / "checkpoints", "step": path}[which]
    out = checkpoint.load_params(arg)
    _assert_tree_equal(out["params"], params)
    assert out["batch_stats"] == {}
    assert out["meta"]["step"] == 5 and out["meta"]["source"] == "t"


def test_load_params_errors_name_the_path(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load_params(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="empty.*no checkpoint"):
        checkpoint.load_params(tmp_path / "empty")


def test_full_disk_stops_at_the_first_save_with_one_clear_error(tmp_path, monkeypatch):
    params, batch_stats, opt_state = _state()
    ck = checkpoint.Checkpointer(tmp_path / "checkpoints", max_to_keep=3)
    assert ck.save(1, params, batch_stats, opt_state)
    ck.wait()
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda path: type("Usage", (), {"free": 1024})())
    with pytest.raises(checkpoint.CheckpointError, match=r"1.0 KiB free.*step 2 needs about .*KiB") as e:
        ck.save(2, params, batch_stats, opt_state)
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    ck.wait()
    assert ck.all_steps() == [1]  # the earlier checkpoint is intact and nothing half-written
    out = ck.restore(1, {"params": params, "batch_stats": batch_stats, "opt_state": opt_state})
    _assert_tree_equal(out["params"], params)
    ck.close()


def test_a_failed_background_save_is_reported_at_the_next_save(tmp_path, monkeypatch):
    params, batch_stats, opt_state = _state()
    ck = checkpoint.Checkpointer(tmp_path / "checkpoints", max_to_keep=3)

    def failed():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck._manager, "check_for_errors", failed)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device"):
        ck.save(1, params, batch_stats, opt_state)
    monkeypatch.undo()
    ck.close()
