"""End-to-end training on the smoke config: outputs, resume after a crash, NaN guard."""
import json
import os

import jax
import numpy as np
import pytest

import configs_for_tests as cft
from jflow import checkpoint, train


def _config(**train_overrides):
    c = cft.smoke_config()
    for k, v in train_overrides.items():
        setattr(c.train, k, v)
    return c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    return train.train_and_evaluate(_config(), str(workdir))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_run_writes_checkpoints_events_pictures(full_run):
    s = full_run
    assert s["step"] == 4
    assert sorted(os.listdir(s["checkpoints"])) == ["2", "4"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(s["tensorboard"]))
    assert any(f.endswith(".png") for f in os.listdir(s["pictures"]))
    with open(os.path.join(s["workdir"], "validation.json")) as f:
        history = json.load(f)
    assert [h["step"] for h in history] == [0, 4]
    assert np.isfinite(history[-1]["synthetic"]["epe"])
    log = train.read_train_log(s["workdir"])  # training curves, one row per log step
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["lr"] > 0 for r in log)
    meta = checkpoint.load_params(s["workdir"])["meta"]
    assert meta["step"] == 4 and meta["config"]["model"]["name"] == "deq_raft"


def test_training_changes_the_parameters(full_run):
    at2 = _leaves(checkpoint.load_params(full_run["workdir"], step=2)["params"])
    at4 = _leaves(full_run["state"].params)
    assert len(at2) == len(at4)
    assert any(not np.allclose(a, b) for a, b in zip(at2, at4))


def test_resume_after_crash_matches_uninterrupted_run(full_run, tmp_path, capsys):
    # Crash at step 3 (after the checkpoint of step 2), then restart in the same workdir.
    # Validation every 2 steps: the resume step (2) was validated before the crash and must not
    # be validated again (no duplicate history entry).
    with pytest.raises(train.NonFiniteLossError, match=r"step 3\b.*last checkpoint is step 2"):
        train.train_and_evaluate(_config(debug_inject_nan_at_step=3, eval_every=2),
                                 str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]  # no NaN state saved
    capsys.readouterr()
    resumed = train.train_and_evaluate(_config(eval_every=2), str(tmp_path))
    assert "Resumed from step 2" in capsys.readouterr().out
    assert resumed["step"] == 4
    with open(tmp_path / "validation.json") as f:  # history kept across the restart
        assert [h["step"] for h in json.load(f)] == [0, 2, 4]
    assert [r["step"] for r in train.read_train_log(str(tmp_path))] == [1, 2, 3, 4]
    for a, b in zip(_leaves(resumed["state"].params), _leaves(full_run["state"].params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(_leaves(resumed["state"].opt_state), _leaves(full_run["state"].opt_state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_nan_at_first_step_names_step_and_saves_nothing(tmp_path):
    with pytest.raises(train.NonFiniteLossError, match=r"loss is nan at step 0.*no checkpoint"):
        train.train_and_evaluate(_config(debug_inject_nan_at_step=0), str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints") == []


@pytest.mark.parametrize("freeze_bn", [False, True])
def test_update_keeps_or_freezes_batch_statistics(freeze_bn):
    """The update stores the new BatchNorm statistics, unless BN is frozen (after Chairs)."""
    from jflow import sharding
    c = _config()
    c.model.freeze_bn = freeze_bn
    model = cft.fake_model(c)
    mesh = sharding.make_mesh(1)
    state = train.create_train_state(model, c, mesh)
    before = _leaves(state.batch_stats)
    params_before = _leaves(state.params)
    batch = sharding.global_batch(cft.batch(c, 2), mesh)
    state, metrics = train.make_update_fn(model, c, mesh)(state, batch)
    changed = [not np.allclose(a, b) for a, b in zip(before, _leaves(state.batch_stats))]
    assert any(changed) != freeze_bn
    assert any(not np.allclose(a, b) for a, b in zip(params_before, _leaves(state.params)))
    assert np.isfinite(metrics["loss"]) and metrics["lr"] > 0


def test_mixed_precision_update_close_to_float32():
    """``model.mixed_precision`` (bfloat16 encoders and update block) changes the first update's
    loss only slightly; the float32 update and init are the ones ``full_run`` compiled."""
    from jflow import sharding
    c = _config()
    mesh = sharding.make_mesh()
    fresh = train.create_train_state(cft.model(c), c, mesh)
    weights = jax.device_get((fresh.params, fresh.batch_stats))  # host copies: updates donate
    batch = sharding.global_batch(cft.batch(c, c.train.batch_size), mesh)
    metrics = {}
    for mixed in (False, True):
        c.model.mixed_precision = mixed
        state = train.state_from_weights(*weights, c, mesh)
        _, m = train.make_update_fn(cft.model(c), c, mesh)(state, batch)
        metrics[mixed] = {k: float(v) for k, v in m.items()}
    f32, bf16 = metrics[False], metrics[True]
    assert np.isfinite(bf16["loss"]) and np.isfinite(bf16["grad_norm"])
    assert bf16["loss"] != f32["loss"]  # bfloat16 really was used
    np.testing.assert_allclose(bf16["loss"], f32["loss"], rtol=5e-2)
    print(f"loss float32 {f32['loss']:.6f} bfloat16 {bf16['loss']:.6f}")


def _damage_latest(workdir):
    """Truncates the largest array file of the latest checkpoint (step 4) to half its size."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(workdir, "checkpoints", "4",
                                                                       "params")) for f in fs]
    victim = max(files, key=os.path.getsize)
    with open(victim, "r+b") as fh:
        fh.truncate(os.path.getsize(victim) // 2)
    return victim


def test_damaged_latest_checkpoint_resumes_from_the_newest_intact_one(full_run, tmp_path,
                                                                      capsys):
    import shutil

    from jflow.predict import load_variables
    from jflow.models import model_from_config

    work = tmp_path / "run"
    shutil.copytree(full_run["workdir"], work)
    _damage_latest(work)
    config = _config()
    # predict / eval on the damaged step itself: one error naming it
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/4\b.*damaged"):
        checkpoint.load_params(work / "checkpoints" / "4")
    # ... on the workdir: the newest intact step (2), saying what was skipped
    capsys.readouterr()
    variables = load_variables(work, model_from_config(config), config)
    assert "skipped checkpoint" in capsys.readouterr().out
    at2 = checkpoint.load_params(work / "checkpoints" / "2")["params"]
    for a, b in zip(_leaves(variables["params"]), _leaves(at2)):
        np.testing.assert_array_equal(a, b)
    # training resumes from step 2 and says which checkpoint it skipped
    resumed = train.train_and_evaluate(config, str(work))
    out = capsys.readouterr().out
    assert "skipped checkpoint" in out and "Resumed from step 2" in out
    assert resumed["step"] == 4


def test_workdir_of_another_model_is_one_clear_error(full_run, tmp_path):
    import shutil

    work = tmp_path / "run"
    shutil.copytree(full_run["workdir"], work)
    other = cft.load_config_module("raft").get_config("small,smoke")
    with pytest.raises(checkpoint.CheckpointError, match="holds a deq_raft-T model but the config "
                                                         "builds raft_small"):
        train.train_and_evaluate(other, str(work))
    from jflow import evaluate  # eval of that workdir with the other config: named, not a diff
    with pytest.raises(checkpoint.CheckpointError, match="holds a 'deq_raft' model"):
        evaluate.load_model(other, str(work))
    bigger = _config()
    bigger.model.size = "B"  # same model, another size: the misshapen variables are listed
    with pytest.raises(checkpoint.CheckpointError, match=r"does not fit.*problems\): .*model \("):
        evaluate.load_model(bigger, str(work))


def test_one_workdir_one_trainer_and_a_killed_run_leaves_no_lock(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    held = train.lock_workdir(str(tmp_path))
    with pytest.raises(train.WorkdirBusyError, match=f"{tmp_path}.*in use.*pid {os.getpid()}"):
        train.train_and_evaluate(_config(), str(tmp_path))  # refused before building anything
    held.close()
    # a process killed with SIGKILL while holding the lock does not leave it stuck
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from jflow.train import lock_workdir; "
        f"held = lock_workdir({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(train.WorkdirBusyError):
        train.lock_workdir(str(tmp_path))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    time.sleep(0.1)
    train.lock_workdir(str(tmp_path)).close()


def test_jacobian_regularisation_adds_its_weighted_penalty_to_the_loss():
    """``deq.jac_loss_weight``: the update's loss is the weight-0 loss plus weight x jac_loss,
    the penalty is positive, and it changes the update (the gradient includes it)."""
    from jflow import sharding
    c = _config()
    mesh = sharding.make_mesh(1)
    weights = jax.device_get((lambda s: (s.params, s.batch_stats))(
        train.create_train_state(cft.model(c), c, mesh)))
    batch = sharding.global_batch(cft.batch(c, c.train.batch_size), mesh)
    out = {}
    for w in (0.0, 5.0):
        c.deq.jac_loss_weight = w
        state = train.state_from_weights(*weights, c, mesh)
        new, m = train.make_update_fn(cft.model(c), c, mesh)(state, batch)
        out[w] = ({k: float(v) for k, v in m.items()}, _leaves(new.params))
    (m0, p0), (m5, p5) = out[0.0], out[5.0]
    assert "jac_loss" not in m0 and m5["jac_loss"] > 0
    np.testing.assert_allclose(m5["loss"] - 5.0 * m5["jac_loss"], m0["loss"], rtol=1e-5)
    assert any(not np.allclose(a, b) for a, b in zip(p0, p5))
