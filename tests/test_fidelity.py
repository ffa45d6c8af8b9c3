"""Fidelity: converted official weights give the official code's flow (golden files).

Every ``tests/data/golden/*.npz`` holds the output of an official implementation (run in float64
by ``tools/fidelity/make_golden.py``, outside this repository) on seeded official-layout weights
that ``tests/golden_weights.py`` regenerates. Each file is checked here through ``jflow.convert``'s
code path: ``torch_to_flax`` on the state_dict, and the ``.pth`` reader + ``convert_checkpoint`` +
``load_params`` path, which must give the same variables. The criterion is the project's: jflow in
float32 within ``atol`` (1e-3 px) of the float64 official flow, max over the image.
"""
import functools
import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golden_weights import (DEFAULT_ATOL, GOLDEN_DIR, golden_files, load_golden,
                            seeded_state_dict, state_dict_sha256)
from jflow import convert
from jflow.checkpoint import load_params
from jflow.models import build_model, variable_shapes
from jflow.torch_pickle import save_torch_state_dict

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDENS = golden_files()
# Models with an official implementation in jflow; each must have a golden file.
REQUIRED = ("raft", "raft_small", "gma", "deq_flow_b", "deq_flow_h", "sea_raft_s", "sea_raft_m")
# Each model runs once: XLA:CPU compiles about twice as fast with these (same flow within
# float32 rounding).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _name(path):
    return os.path.splitext(os.path.basename(path))[0]


def load_config(spec: str, overrides: dict):
    """``configs/x.py:arg`` -> ``get_config(arg)``, then dotted overrides."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(
        f"golden_config_{abs(hash(spec))}", REPO / path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    cfg = module.get_config(arg or None)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


@functools.lru_cache(maxsize=None)
def converted(path):
    """(golden, config, model, variables from ``torch_to_flax``), once per file."""
    g = load_golden(path)
    cfg = load_config(g.config, g.overrides)
    model = build_model(cfg.model, cfg.deq if "deq" in cfg else None)
    state = g.state_dict()
    prep = convert.PREPROCESS.get(str(cfg.model.name))  # as convert_checkpoint does
    if prep is not None:
        state = prep(state, cfg, path)
    variables = convert.torch_to_flax(state, variable_shapes(model), source=path)
    return g, cfg, model, variables


def test_every_official_model_has_a_golden_file():
    names = {_name(p) for p in GOLDENS}
    missing = sorted(set(REQUIRED) - names)
    assert not missing, f"no golden file in {GOLDEN_DIR} for {missing}"


def test_seeded_state_dict_recipe():
    """The documented recipe: scales by key kind, aliases copied, weight norm g = ||v|| * U."""
    keys = {"c.weight": (8, 4, 3, 3), "c.bias": (8,), "n.weight": (8,), "n.bias": (8,),
            "n.running_mean": (8,), "n.running_var": (8,), "n.num_batches_tracked": (),
            "d.1.weight": (8,), "u.weight_g": (8, 1, 1, 1), "u.weight_v": (8, 4, 1, 1),
            "a.gamma": (1,)}
    sd = seeded_state_dict(keys, 3, aliases={"d.1.weight": "n.weight"})
    again = seeded_state_dict(dict(reversed(list(keys.items()))), 3,
                              aliases={"d.1.weight": "n.weight"})
    assert state_dict_sha256(sd) == state_dict_sha256(again)  # order of the input is irrelevant
    assert list(sd) == sorted(keys)
    b = 1 / np.sqrt(4 * 9)
    assert sd["c.weight"].dtype == np.float32 and np.abs(sd["c.weight"]).max() <= b
    assert np.abs(sd["c.bias"]).max() <= b
    assert 0.5 <= sd["n.weight"].min() and sd["n.weight"].max() <= 1.5
    assert 0.5 <= sd["n.running_var"].min() and np.abs(sd["n.running_mean"]).max() <= 0.1
    assert sd["n.num_batches_tracked"].dtype == np.int64 and sd["n.num_batches_tracked"] == 0
    np.testing.assert_array_equal(sd["d.1.weight"], sd["n.weight"])
    ratio = sd["u.weight_g"].reshape(-1) / np.linalg.norm(
        sd["u.weight_v"].astype(np.float64).reshape(8, -1), axis=1)
    assert 0.8 <= ratio.min() and ratio.max() <= 1.2
    assert 0.5 <= sd["a.gamma"][0] <= 1.5


@pytest.mark.parametrize("path", GOLDENS, ids=_name)
def test_golden_weights_regenerate(path):
    """The recipe still gives the weights the official code ran with (else regenerate goldens)."""
    g = load_golden(path)
    assert state_dict_sha256(g.state_dict()) == g.weights_sha256, (
        f"{path}: seeded_state_dict no longer reproduces the golden's weights")
    assert g.image1.dtype == np.uint8 and g.image1.shape == g.image2.shape
    assert g.flow.shape == g.image1.shape[:-1] + (2,)
    assert g.atol <= DEFAULT_ATOL
    # the golden flow is far from zero, so a broken model cannot pass by predicting nothing
    assert np.mean(np.abs(g.flow)) > 100 * g.atol


@pytest.mark.parametrize("path", GOLDENS, ids=_name)
def test_flow_matches_official(path):
    g, cfg, model, variables = converted(path)
    kwargs = {} if g.iters is None else {"iters": g.iters}
    args = (variables, jnp.asarray(g.image1, jnp.float32), jnp.asarray(g.image2, jnp.float32))
    apply = jax.jit(functools.partial(model.apply, **kwargs)).lower(*args).compile(
        compiler_options=FAST_COMPILE)
    out = apply(*args)
    flow = np.asarray(out["flow"], np.float64)
    assert flow.shape == g.flow.shape
    err = float(np.max(np.abs(flow - g.flow)))
    info = (f"{_name(path)}: max |jflow - official| {err:.2e} px (official float32 vs float64: "
            f"{g.official_f32_err:.2e} px), tolerance {g.atol:.0e}")
    print(info)
    assert err <= g.atol, info
    if g.flow_low is not None and "flow_low" in out:  # 1/8-resolution pixels: same tolerance in px
        err_low = float(np.max(np.abs(np.asarray(out["flow_low"], np.float64) - g.flow_low)))
        assert err_low <= g.atol / 8, f"{_name(path)}: flow_low differs by {err_low:.2e}"
    for key, want in g.extras.items():  # further official outputs (SEA-RAFT info, uncertainty)
        assert key in out, f"{_name(path)}: the model has no output {key!r}"
        err_x = float(np.max(np.abs(np.asarray(out[key], np.float64) - want)))
        print(f"{_name(path)}: {key} max diff {err_x:.2e}")
        assert err_x <= g.atol, f"{_name(path)}: {key} differs by {err_x:.2e}"


@pytest.mark.parametrize("path", GOLDENS, ids=_name)
def test_pth_file_converts_to_the_same_variables(path, tmp_path):
    """``.pth`` (as released: ``module.`` prefix) -> ``convert_checkpoint`` -> ``load_params``."""
    g, cfg, _, variables = converted(path)
    pth = tmp_path / f"{_name(path)}.pth"
    save_torch_state_dict({f"module.{k}": v for k, v in g.state_dict().items()}, pth)
    step_dir = convert.convert_checkpoint(cfg, pth, tmp_path / "ckpt")
    loaded = load_params(step_dir)
    assert loaded["meta"]["converted_by"] == "jflow.convert"
    for collection in ("params", "batch_stats"):
        want = jax.tree_util.tree_leaves_with_path(variables.get(collection) or {})
        got = dict(jax.tree_util.tree_leaves_with_path(loaded.get(collection) or {}))
        assert len(got) == len(want), collection
        for key, value in want:
            np.testing.assert_array_equal(np.asarray(got[key]), value,
                                          err_msg=f"{collection}{jax.tree_util.keystr(key)}")
