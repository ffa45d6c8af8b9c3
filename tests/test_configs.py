"""Config files: variants, published stage settings, overrides through the absl flag."""
import pathlib

import pytest

from jflow import recipes
from jflow.config_files import config_module
from jflow.models import model_from_config

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
NAMES = ("raft", "gma", "deq_raft", "deq_gma", "dip", "liteflownet2")


def load(name):
    return config_module(str(CONFIGS / f"{name}.py"))


@pytest.mark.parametrize("name", NAMES)
def test_every_config_has_all_sections_and_a_command(name):
    mod = load(name)
    assert f"--config=configs/{name}.py" in mod.__doc__
    for arg in (None, "smoke", "stage=chairs", "stage=sintel"):
        c = mod.get_config(arg)
        for section in ("model", "deq", "data", "train", "eval"):
            assert section in c
        assert c.mode == "train" and c.model.name.startswith(name.split("_")[0][:3])


def test_deq_raft_h_is_the_published_v2_evaluation():
    c = load("deq_raft").get_config("H")
    assert (c.model.size, c.model.wnorm) == ("H", True)
    assert c.deq.solver == "naive" and c.deq.f_max_steps == 40
    assert c.deq.return_rule == "official_naive"
    assert c.model.eval_iters == 60 and c.eval.iters.sintel == 60 and c.eval.iters.kitti == 60


@pytest.mark.parametrize("arg", [None, "smoke", "H", "H,stage=chairs", "B,stage=things",
                                 "H,stage=sintel", "stage=kitti"])
def test_deq_sections_build_a_valid_deq_config(arg):
    from jflow.deq import from_config
    c = load("deq_raft").get_config(arg)
    cfg = from_config(c.deq)
    assert cfg.f_max_steps == c.model.iters and cfg.n_states <= cfg.f_max_steps


def test_deq_stages_follow_train_h():
    mod = load("deq_raft")
    chairs, things = mod.get_config("H,stage=chairs"), mod.get_config("H,stage=things")
    assert (chairs.train.num_steps, chairs.train.batch_size, chairs.train.lr) == (120_000, 12, 4e-4)
    assert (chairs.deq.f_max_steps, chairs.deq.n_states, chairs.deq.phantom_steps) == (36, 6, 1)
    assert tuple(chairs.data.crop) == (368, 496) and not chairs.model.freeze_bn
    assert (things.train.batch_size, things.train.lr, tuple(things.data.crop)) == (6, 1.25e-4,
                                                                                   (400, 720))
    assert (things.deq.n_states, things.deq.phantom_steps, things.model.all_grad) == (2, 3, True)
    assert things.model.freeze_bn and things.eval.iters.sintel == 60


def test_raft_and_gma_stage_tables():
    raft, gma = load("raft"), load("gma")
    s = raft.get_config("stage=sintel")
    assert (s.train.num_steps, s.train.batch_size, s.train.lr, s.train.wd, s.train.gamma) == (
        100_000, 6, 1.25e-4, 1e-5, 0.85)
    assert s.data.train == "100*sintel_clean+100*sintel_final+200*kitti+5*hd1k+things_clean"
    k = raft.get_config("stage=kitti")
    assert (k.train.num_steps, tuple(k.data.crop), k.data.val) == (50_000, (288, 960), ("kitti",))
    g = gma.get_config("stage=chairs")
    assert (g.train.num_steps, g.train.batch_size, g.train.lr) == (120_000, 8, 2.5e-4)
    assert g.eval.iters.sintel == 12 and raft.get_config().eval.iters.sintel == 32
    assert raft.get_config("small").model.name == "raft_small"


def test_smoke_variant_is_tiny_and_default_is_synthetic():
    c = load("deq_raft").get_config("smoke")
    assert c.train.num_steps <= 10 and max(c.data.crop) <= 64 and c.data.train == "synthetic"
    d = load("deq_raft").get_config()
    assert d.data.train == "synthetic" and d.model.size == "T" and d.stage == "synthetic"


@pytest.mark.parametrize("arg,match", [("stage=moon", "stage"), ("foo=1", "unknown key"),
                                       ("Q", "size"), ("smoke=maybe", "true/false")])
def test_bad_arguments_are_reported(arg, match):
    with pytest.raises(ValueError, match=match):
        load("deq_raft").get_config(arg)


def test_parse_arg_types():
    a = recipes.parse_arg("H,stage=things,steps=7,smoke", size="", stage="x", steps=0,
                          smoke=False)
    assert (a.size, a.stage, a.steps, a.smoke) == ("H", "things", 7, True)


def test_command_line_overrides_reach_main():
    """``python -m jflow.main`` applies ``--config.*`` overrides (mode=bogus is then refused)."""
    import subprocess
    import sys
    repo = CONFIGS.parent
    proc = subprocess.run(
        [sys.executable, "-m", "jflow.main", "--config=configs/deq_raft.py:H,stage=things",
         "--config.mode=bogus", "--workdir=unused"],
        cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "--config.mode must be 'train' or 'eval', got 'bogus'" in proc.stderr + proc.stdout


@pytest.mark.parametrize("name,arg", [("raft", None), ("raft", "small"), ("gma", "stage=things"),
                                      ("deq_raft", "H"), ("deq_gma", "smoke")])
def test_configs_build_their_model(name, arg):
    c = load(name).get_config(arg)
    model = model_from_config(c)
    assert type(model).__name__ in ("RAFT", "DEQRAFT")
    assert model.freeze_bn == c.model.freeze_bn
