"""torchvision ResNet ImageNet checkpoints -> SEA-RAFT encoders (``config.model.init_encoder_from``),
on seeded fake checkpoints in torchvision's key layout and pickle format."""
import jax
import numpy as np
import pytest

from jflow import sharding, train
from jflow.convert import ConversionError
from jflow.models import build_model, random_variables
from jflow.torch_pickle import save_torch_state_dict
from jflow.torchvision_resnet import init_encoders, init_encoders_from

WIDTHS = (64, 128, 256, 512)


def torchvision_resnet(blocks=(2, 2, 2, 2), seed=0, bottleneck=False) -> dict:
    """A state_dict with the keys, order, shapes and dtypes of ``torchvision.models.resnet18/34``
    (BasicBlock; ``bottleneck`` adds ``conv3``/``bn3`` as ResNet-50 blocks have), seeded values."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, o, i, k):
        state[name + ".weight"] = rng.standard_normal((o, i, k, k)).astype(np.float32)

    def bn(name, c):
        state[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[name + ".bias"] = rng.standard_normal(c).astype(np.float32)
        state[name + ".running_mean"] = rng.standard_normal(c).astype(np.float32)
        state[name + ".running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        state[name + ".num_batches_tracked"] = np.array(0, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for i, (n, width) in enumerate(zip(blocks, WIDTHS), start=1):
        for j in range(n):
            p = f"layer{i}.{j}."
            conv(p + "conv1", width, inplanes, 3)
            bn(p + "bn1", width)
            conv(p + "conv2", width, width, 3)
            bn(p + "bn2", width)
            if bottleneck:
                conv(p + "conv3", width, width, 1)
                bn(p + "bn3", width)
            if j == 0 and (i > 1 or inplanes != width):
                conv(p + "downsample.0", width, inplanes, 1)
                bn(p + "downsample.1", width)
            inplanes = width
    state["fc.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
    state["fc.bias"] = rng.standard_normal(1000).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def s_variables():
    model = build_model({"name": "sea_raft", "size": "S"})
    return jax.tree.map(np.asarray, random_variables(model, seed=1))


def test_resnet18_into_sea_raft_s_encoders(s_variables, tmp_path):
    tv = torchvision_resnet()
    path = tmp_path / "resnet18-f37072fd.pth"
    save_torch_state_dict(tv, path)
    out = init_encoders_from(path, s_variables)
    p, bs = out["params"], out["batch_stats"]
    w = tv["conv1.weight"]
    hwio = np.transpose(w, (2, 3, 1, 0))
    np.testing.assert_array_equal(p["fnet"]["conv1"]["kernel"], hwio)
    # cnet sees both images: the kernel twice along the input channels, not halved
    np.testing.assert_array_equal(p["cnet"]["conv1"]["kernel"], np.concatenate([hwio, hwio], 2))
    for net in ("cnet", "fnet"):
        blk = p[net]["layer2_0"]
        np.testing.assert_array_equal(blk["conv2"]["kernel"][1, 2, 5, 7],
                                      tv["layer2.0.conv2.weight"][7, 5, 1, 2])
        np.testing.assert_array_equal(blk["downsample_0"]["kernel"][0, 0],
                                      tv["layer2.0.downsample.0.weight"][:, :, 0, 0].T)
        np.testing.assert_array_equal(blk["bn3"]["scale"], tv["layer2.0.downsample.1.weight"])
        np.testing.assert_array_equal(bs[net]["layer3_1"]["bn2"]["var"],
                                      tv["layer3.1.bn2.running_var"])
        np.testing.assert_array_equal(bs[net]["bn1"]["mean"], tv["bn1.running_mean"])
        np.testing.assert_array_equal(p[net]["layer1_1"]["bn1"]["bias"], tv["layer1.1.bn1.bias"])
        # official init: every encoder conv bias 0; final_conv keeps its kernel
        assert all(not np.any(m["bias"]) for k, m in p[net].items() if k in ("conv1",
                                                                               "final_conv"))
        assert not np.any(blk["conv1"]["bias"]) and not np.any(blk["downsample_0"]["bias"])
        np.testing.assert_array_equal(p[net]["final_conv"]["kernel"],
                                      s_variables["params"][net]["final_conv"]["kernel"])
    # nothing outside the encoders changes
    np.testing.assert_array_equal(p["init_conv"]["kernel"],
                                  s_variables["params"]["init_conv"]["kernel"])
    assert s_variables["params"]["fnet"]["conv1"]["kernel"].shape == hwio.shape  # input intact
    assert not np.array_equal(s_variables["params"]["fnet"]["conv1"]["kernel"], hwio)


def test_training_state_takes_the_encoders(s_variables, tmp_path):
    path = tmp_path / "resnet18.pth"
    save_torch_state_dict(torchvision_resnet(seed=3), path)
    c = train_config = _sea_raft_config()
    mesh = sharding.make_mesh(1)
    state = train.state_from_weights(s_variables["params"], s_variables["batch_stats"], c, mesh)
    assert train.init_encoders(state, train_config, mesh) is state  # not set: unchanged
    c.model.init_encoder_from = str(path)
    new = train.init_encoders(state, c, mesh)
    expected = init_encoders_from(path, s_variables)
    np.testing.assert_array_equal(np.asarray(new.params["cnet"]["layer3_1"]["conv1"]["kernel"]),
                                  expected["params"]["cnet"]["layer3_1"]["conv1"]["kernel"])
    np.testing.assert_array_equal(np.asarray(new.batch_stats["fnet"]["bn1"]["var"]),
                                  expected["batch_stats"]["fnet"]["bn1"]["var"])


def _sea_raft_config():
    from configs_for_tests import load_config_module
    c = load_config_module("sea_raft").get_config("S,smoke")
    assert c.model.init_encoder_from == ""
    return c


def test_wrong_depth_bottleneck_other_files_and_models_are_one_error(s_variables, tmp_path):
    with pytest.raises(ConversionError, match=r"ResNet-34 .*resnet18 \(SEA-RAFT S\)"):
        init_encoders(s_variables, torchvision_resnet((3, 4, 6, 3)), "resnet34.pth")
    with pytest.raises(ConversionError, match="Bottleneck"):
        init_encoders(s_variables, torchvision_resnet((3, 4, 6, 3), bottleneck=True), "r50.pth")
    with pytest.raises(ConversionError, match="not a torchvision ResNet"):
        init_encoders(s_variables, {"fnet.conv1.weight": np.zeros((64, 3, 7, 7))}, "sea.pth")
    bad = torchvision_resnet()
    bad["layer1.0.conv2.weight"] = bad["layer1.0.conv2.weight"][:, :32]
    with pytest.raises(ConversionError, match=r"layer1.0.conv2.weight has shape \(64, 32, 3, 3\)"):
        init_encoders(s_variables, bad, "bad.pth")
    del bad["layer2.0.downsample.1.running_var"]
    bad["layer1.0.conv2.weight"] = torchvision_resnet()["layer1.0.conv2.weight"]
    with pytest.raises(ConversionError, match="downsample.1.running_var is missing"):
        init_encoders(s_variables, bad, "bad.pth")
    raft = build_model({"name": "raft"})
    with pytest.raises(ConversionError, match="only sea_raft and deq_sea_raft"):
        init_encoders(random_variables(raft), torchvision_resnet(), "resnet18.pth")
    with pytest.raises(ConversionError, match="is not a file"):
        init_encoders_from(tmp_path / "missing.pth", s_variables)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception) as e:
        init_encoders_from(junk, s_variables)
    from jflow.errors import UserError
    assert isinstance(e.value, UserError) and "junk.pth" in str(e.value)


def test_bad_encoder_file_fails_before_the_model_is_initialised(tmp_path, monkeypatch):
    """A missing, unreadable or wrong-depth ``init_encoder_from`` is one user error raised by
    the trainer before any parameter is created (nothing compiled, nothing written)."""
    from jflow.errors import UserError

    def no_init(*a, **k):
        raise AssertionError("the model was initialised before the file was checked")

    monkeypatch.setattr(train, "create_train_state", no_init)
    r34, junk = tmp_path / "resnet34.pth", tmp_path / "junk.pth"
    save_torch_state_dict(torchvision_resnet((3, 4, 6, 3)), r34)
    junk.write_bytes(b"not a checkpoint")
    cases = [(tmp_path / "missing.pth", "is not a file"), (junk, str(junk)),
             (r34, r"ResNet-34 .*resnet18 \(SEA-RAFT S\)")]
    for i, (path, match) in enumerate(cases):
        c = _sea_raft_config()
        c.model.init_encoder_from = str(path)
        with pytest.raises(UserError, match=match):
            train.train_and_evaluate(c, str(tmp_path / f"run{i}"))
        assert not (tmp_path / f"run{i}" / "checkpoints").exists() or not any(
            (tmp_path / f"run{i}" / "checkpoints").iterdir())
    from configs_for_tests import load_config_module
    c = load_config_module("raft").get_config("smoke")
    c.model.init_encoder_from = str(r34)
    with pytest.raises(ConversionError, match="only sea_raft and deq_sea_raft"):
        train.train_and_evaluate(c, str(tmp_path / "raft"))
