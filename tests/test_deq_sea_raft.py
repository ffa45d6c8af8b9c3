"""DEQ SEA-RAFT: config and registry, SEA-RAFT's parameters, equivalence of the naive solver with
SEA-RAFT's unrolled loop, warm start from the fixed point, and training through the trainer."""
import jax
import numpy as np
import pytest

from configs_for_tests import host_trainer, load_config_module
from jflow.deq import DEQConfig
from jflow.models import build_model, is_deq, model_from_config, random_variables
from jflow.models import variable_shapes


def get_config(arg=None):
    return load_config_module("deq_sea_raft").get_config(arg)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    im1 = rng.uniform(0, 255, (1, 60, 68, 3)).astype(np.float32)  # not multiples of 8
    return im1, np.roll(im1, (2, 3), axis=(1, 2))


@pytest.fixture(scope="module")
def sea_raft():
    model = build_model({"name": "sea_raft", "size": "S"})
    return model, random_variables(model, seed=0)


def test_config_registry_and_sea_raft_parameters():
    c = get_config("S,smoke")
    assert c.model.name == "deq_sea_raft" and is_deq(c) and c.train.loss == "mixture_laplace"
    assert (c.deq.f_max_steps, c.deq.n_states, c.model.iters) == (3, 2, 3)
    c = get_config("M")
    assert (c.model.size, c.deq.solver, c.deq.f_max_steps, c.model.eval_iters) == ("M", "naive",
                                                                                    12, 18)
    assert set(c.eval.iters.values()) == {18}
    c = get_config("S,stage=chairs")  # SEA-RAFT's stage table, DEQ solver settings
    assert (c.train.lr, c.train.batch_size, tuple(c.data.crop), c.deq.n_states) == (
        2.5e-4, 16, (368, 496), 2)
    model = model_from_config(c)
    assert model.deq == DEQConfig(**{k: v for k, v in c.deq.items()}) and model.eval_iters == 18
    shapes = lambda m: jax.tree.map(lambda s: s.shape, variable_shapes(m))  # noqa: E731
    # the same variables as SEA-RAFT, under the same names: SEA-RAFT weights load as they are
    assert shapes(model) == shapes(build_model({"name": "sea_raft", "size": "S"}))
    with pytest.raises(ValueError, match="size"):
        build_model({"name": "deq_sea_raft", "size": "T"})
    with pytest.raises(ValueError, match="size"):
        get_config("H")


def test_naive_solver_reproduces_sea_raft_iterations(sea_raft, pair):
    """Picard iteration of the DEQ operator from SEA-RAFT's start is SEA-RAFT's loop: ``last``
    returns the iterate evaluated at step n + 1, f^n(z0)."""
    model, variables = sea_raft
    n = 3
    ref = model.apply(variables, *pair, iters=n)
    cfg = DEQConfig(solver="naive", f_max_steps=n + 1, f_tol=0.0, return_rule="last")
    deq = build_model({"name": "deq_sea_raft", "size": "S"}, cfg)
    out = deq.apply(variables, *pair, iters=n + 1)
    assert out["flow"].shape == (1, 60, 68, 2) and out["info"].shape == (1, 60, 68, 4)
    assert out["state"]["h"].shape == (1, 8, 9, 128) and int(out["stats"]["nstep"][0]) == n + 1
    for key in ("flow", "info", "uncertainty", "flow_low"):
        np.testing.assert_allclose(np.asarray(out[key]), np.asarray(ref[key]), atol=2e-4,
                                   rtol=1e-4, err_msg=key)
    # a different number of steps is a different answer (the comparison can fail)
    other = deq.apply(variables, *pair, iters=n)
    assert np.abs(np.asarray(other["flow"]) - np.asarray(ref["flow"])).max() > 1e-3


def test_warm_start_from_the_state_and_training_outputs(sea_raft, pair):
    _, variables = sea_raft
    cfg = DEQConfig(solver="naive", f_max_steps=8, f_tol=0.0, return_rule="last", n_states=2)
    deq = build_model({"name": "deq_sea_raft", "size": "S"}, cfg)
    first = deq.apply(variables, *pair, iters=3)  # returns z_2 = f^2(z0)
    resumed = deq.apply(variables, *pair, iters=3, state_init=first["state"])  # z_4
    straight = deq.apply(variables, *pair, iters=5)  # z_4
    for key in ("flow", "flow_low"):
        np.testing.assert_allclose(np.asarray(resumed[key]), np.asarray(straight[key]),
                                   atol=2e-4, rtol=1e-4, err_msg=key)
    assert not np.allclose(np.asarray(first["flow"]), np.asarray(straight["flow"]), atol=1e-3)
    trace = np.asarray(straight["stats"]["rel_trace"][0])
    assert trace[-1] < trace[0] / 5  # the iteration contracts at this init
    with pytest.raises(ValueError, match="state_init"):
        deq.apply(variables, *pair, state_init=first["state"]["flow"])
    jac = build_model({"name": "deq_sea_raft", "size": "S"}, cfg.replace(jac_loss_weight=1.0))
    tr, _ = jac.apply(variables, *pair, train=True, mutable=["batch_stats"],
                      rngs={"noise": jax.random.PRNGKey(0)})
    # regressed initial flow + 2 correction states, flow and mixture parameters
    assert tr["predictions"].shape == (3, 1, 60, 68, 2)
    assert tr["info_predictions"].shape == (3, 1, 60, 68, 4)
    assert float(tr["stats"]["jac_loss"]) > 0  # the Jacobian penalty (config.deq)


def test_smoke_training_and_validation():
    """``configs/deq_sea_raft.py:S,smoke`` through ``jflow.train`` (``python -m jflow.main``
    calls ``train_and_evaluate``; its init compile is slow on CPU, so the update runs here on
    host-filled weights): the loss on the correction states, solver stats, then validation."""
    from jflow import evaluate

    c = get_config("S,smoke")
    model, state, update, batches = host_trainer(c)
    before = jax.tree.map(np.array, state.params["update_block"])  # copies: donated state
    for _ in range(2):
        state, m = update(state, next(batches))
        assert np.isfinite(float(m["loss"])) and 1 <= float(m["nstep"]) <= 3
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                         state.params["update_block"], before)
    assert max(jax.tree.leaves(moved)) > 0  # the DEQ operator is trained
    res = evaluate.validate_spec(model, {"params": state.params,
                                         "batch_stats": state.batch_stats}, c, "synthetic")
    assert np.isfinite(res.metrics["epe/pooled"])


def test_predict_video_reuses_the_fixed_point_with_uncertainty():
    """``jflow.predict`` on DEQ SEA-RAFT (random weights): per-pair flow, uncertainty and solver
    statistics; from the second pair on the solve starts at the previous fixed point."""
    from jflow.predict import FlowPredictor

    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (72, 80, 3)).astype(np.uint8)
    frames = [np.roll(base, (k, 2 * k), axis=(0, 1)) for k in range(3)]
    with pytest.warns(UserWarning, match="RANDOM weights"):
        pred = FlowPredictor.from_config(get_config("S,smoke"), None, iters=3)
    assert pred.deq and pred.outputs_uncertainty
    reused = list(pred.predict_video(frames))
    cold = list(pred.predict_video(frames, reuse=False))
    assert [r["reset"] for r in reused] == [True, False]
    for out in reused:
        assert out["flow"].shape == (72, 80, 2) and out["uncertainty"].shape == (72, 80)
        assert 1 <= out["stats"]["nstep"] <= 3 and np.isfinite(out["stats"]["rel_lowest"])
    np.testing.assert_allclose(reused[0]["flow"], cold[0]["flow"], atol=1e-5)
    assert np.abs(reused[1]["flow"] - cold[1]["flow"]).max() > 1e-4


def test_official_sea_raft_checkpoint_converts_into_deq_sea_raft(tmp_path):
    """``jflow.convert --config=configs/deq_sea_raft.py:S`` takes an official SEA-RAFT S
    state_dict (the golden file's), and refuses the M one in one line."""
    import pathlib

    from golden_weights import GOLDEN_DIR, load_golden
    from jflow import checkpoint, convert
    from jflow.convert import ConversionError
    from jflow.torch_pickle import save_torch_state_dict

    states = {s: load_golden(pathlib.Path(GOLDEN_DIR) / f"sea_raft_{s}.npz").state_dict()
              for s in "sm"}
    pth = tmp_path / "Tartan-C368x496-S.pth"
    save_torch_state_dict(states["s"], pth)
    convert.convert_checkpoint(get_config("S"), pth, tmp_path / "out")
    loaded = checkpoint.load_params(str(tmp_path / "out"))
    np.testing.assert_array_equal(
        np.asarray(loaded["params"]["update_block"]["refine_1"]["gamma"]),
        states["s"]["update_block.refine.1.gamma"])
    save_torch_state_dict(states["m"], tmp_path / "m.pth")
    with pytest.raises(ConversionError, match="is SEA-RAFT M/L"):
        convert.convert_checkpoint(get_config("S"), tmp_path / "m.pth", tmp_path / "out_m")
