"""Parameter counts equal the official ones; Flax paths follow the PyTorch module names."""
import ml_collections as mlc
import pytest
from flax.traverse_util import flatten_dict

from jflow.models import build_model, count_params, variable_shapes
from jflow.models.deq_raft import DEQRAFT

# Official counts (reference/raft_family.md; DEQ models counted with --wnorm).
COUNTS = [
    ("raft", None, {}, 5_257_536),
    ("raft_small", None, {}, 990_162),
    ("gma", None, {}, 5_879_873),
    ("deq_raft", "T", {}, 2_490_976),
    ("deq_raft", "B", {}, 5_242_816),
    ("deq_raft", "L", {}, 8_673_664),
    ("deq_raft", "H", {}, 13_394_752),
    ("deq_raft", "G", {}, 23_248_960),
    ("deq_raft", "H", {"old_version": True}, 12_799_808),
    ("deq_raft", "B", {"wnorm": False}, 5_241_024),
    ("deq_raft", "H", {"wnorm": False}, 13_391_168),
    ("deq_gma", "T", {}, 2_524_801),
    ("deq_gma", "B", {}, 5_783_617),
    ("deq_gma", "L", {}, 9_890_369),
    ("deq_gma", "H", {}, 15_557_697),
    ("deq_gma", "G", {}, 27_332_993),
    ("liteflownet2", None, {}, 6_429_208),  # Caffe counts (reference liteflownet2.md)
    ("liteflownet2", None, {"variant": "kitti"}, 6_493_241),
    ("dip", None, {}, 5_371_968),  # dip.md; ptlflow 5.372M
    ("sea_raft", "S", {}, 8_883_460),  # sea_raft.md (official code instantiated)
    ("sea_raft", "M", {}, 19_663_876),
]


def shapes_of(name, size=None, **extra):
    cfg = mlc.ConfigDict({"name": name, "size": size, **extra})
    return variable_shapes(build_model(cfg, {"f_max_steps": 2}))


@pytest.mark.parametrize("name,size,extra,expected", COUNTS)
def test_parameter_count_equals_official(name, size, extra, expected):
    assert count_params(shapes_of(name, size, **extra)) == expected


def paths(variables, collection="params"):
    return {"/".join(k): v.shape for k, v in flatten_dict(variables[collection]).items()}


def test_raft_paths_follow_torch_names():
    v = shapes_of("raft")
    p = paths(v)
    assert p["fnet/layer1_0/conv1/kernel"] == (3, 3, 64, 64)       # fnet.layer1.0.conv1.weight
    assert p["fnet/layer2_0/downsample_0/kernel"] == (1, 1, 64, 96)
    assert p["update_block/gru/convz1/kernel"] == (1, 5, 384, 128)
    assert p["update_block/encoder/convc1/kernel"] == (1, 1, 324, 256)
    assert p["update_block/mask_2/kernel"] == (1, 1, 256, 576)      # update_block.mask.2
    assert p["cnet/layer2_0/norm3/scale"] == (96,)
    assert "fnet/norm1/scale" not in p                              # instance norm: no params
    stats = paths(v, "batch_stats")
    assert stats["cnet/norm1/mean"] == (64,) and stats["cnet/layer3_1/norm2/var"] == (128,)


def test_gma_and_deq_paths():
    g = paths(shapes_of("gma"))
    assert g["att/to_qk/kernel"] == (1, 1, 128, 256)
    assert g["att/pos_emb/rel_height/embedding"] == (319, 128)
    assert g["update_block/aggregator/to_v/kernel"] == (1, 1, 128, 128)
    assert g["update_block/aggregator/gamma"] == (1,)
    d = paths(shapes_of("deq_gma", "B"))
    assert d["mask_0/kernel"] == (3, 3, 128, 256)                   # v2: mask at top level
    assert d["update_block/gru/convq2/kernel_v"] == (5, 1, 512, 128)
    assert d["update_block/gru/convq2/kernel_g"] == (128,)
    assert d["update_block/gma/to_v/kernel_v"] == (1, 1, 128, 128)
    assert d["attn/to_qk/kernel"] == (1, 1, 128, 256)
    assert not any(k.startswith("attn/pos_emb") for k in d)
    assert d["update_block/flow_head/conv1/kernel_v"] == (3, 3, 128, 256)


def conv_count(kh, kw, cin, cout, wnorm=True):
    """kernel (+ weight-norm gain) + bias of one Conv2d."""
    return kh * kw * cin * cout + cout + (cout if wnorm else 0)


def test_size_d_count_is_b_with_two_dilated_grus():
    # B: hidden 128, GRU input [h (128), inp (128), motion (128)] = 384 channels.
    cin, hid = 128 + 128 + 128, 128
    sep_gru = 3 * (conv_count(1, 5, cin, hid) + conv_count(5, 1, cin, hid))
    dilated_gru = 3 * (conv_count(1, 5, cin, hid) + conv_count(5, 1, cin, hid)
                       + conv_count(3, 3, cin, hid))
    b_official = dict(((n, s), c) for n, s, e, c in COUNTS if not e)[("deq_raft", "B")]
    assert count_params(shapes_of("deq_raft", "D")) == b_official - sep_gru + 2 * dilated_gru


def test_size_d_paths():
    p = paths(shapes_of("deq_raft", "D"))
    for gru in ("gru", "gru2"):
        for gate in ("convz", "convr", "convq"):
            assert p[f"update_block/{gru}/{gate}1/kernel_v"] == (1, 5, 384, 128)
            assert p[f"update_block/{gru}/{gate}2/kernel_v"] == (5, 1, 384, 128)
            assert p[f"update_block/{gru}/{gate}3/kernel_v"] == (3, 3, 384, 128)
            assert p[f"update_block/{gru}/{gate}3/kernel_g"] == (128,)
            assert p[f"update_block/{gru}/{gate}3/bias"] == (128,)
    assert not any(k.startswith("update_block/gru3") for k in p)
    assert p["update_block/flow_head/conv1/kernel_v"] == (3, 3, 128, 256)  # B widths
    assert p["cnet/conv2/kernel"][-1] == 128


def test_small_model_paths():
    p = paths(shapes_of("raft_small"))
    assert p["fnet/layer1_0/conv3/kernel"] == (1, 1, 8, 32)
    assert p["update_block/gru/convz/kernel"] == (3, 3, 96 + 146, 96)
    assert "update_block/encoder/convc2/kernel" not in p
    assert not any("mask" in k for k in p)


def test_registry_rejects_bad_configs():
    with pytest.raises(ValueError, match="config.model.name"):
        build_model({"name": "flownet"})
    with pytest.raises(ValueError, match="config.model.size"):
        build_model({"name": "deq_raft", "size": "XL"})
    with pytest.raises(ValueError, match="config.model.corr"):
        build_model({"name": "raft", "corr": "sparse"})
    with pytest.raises(ValueError, match="unknown keys"):
        build_model({"name": "deq_raft"}, {"solverr": "naive"})


def test_registry_passes_options():
    m = build_model(mlc.ConfigDict({"name": "deq_gma", "size": "huge", "corr": "on_the_fly",
                                    "all_grad": True, "freeze_bn": True}),
                    mlc.ConfigDict({"solver": "broyden", "f_max_steps": 36, "n_states": 6}))
    assert isinstance(m, DEQRAFT) and m.gma and m.size == "H" and m.corr == "on_the_fly"
    assert m.all_grad and m.freeze_bn and m.deq.solver == "broyden" and m.deq.n_states == 6
    assert m.eval_iters == 54  # int(1.5 * f_max_steps), deq-flow's eval_factor
    r = build_model({"name": "raft_small", "iters": 3, "eval_iters": 5, "mixed_precision": True})
    assert r.small and r.iters == 3 and r.eval_iters == 5 and r.mixed_precision
    assert r.scope is None  # unbound: ready for init/apply


def test_dip_paths_follow_torch_names():
    v = shapes_of("dip")
    p = paths(v)
    assert p["fnet/layer1_0/downsample_0/kernel"] == (1, 1, 64, 64)  # fnet.layer1.0.downsample.0
    assert p["update_block_s/encoder/convc1/kernel"] == (1, 1, 10, 96)
    assert p["update_block_s/gru/convz/kernel"] == (3, 3, 352, 128)
    assert p["update_block/gru/convq2/kernel"] == (5, 1, 384, 128)
    assert p["update_block/mask_2/kernel"] == (1, 1, 256, 144)
    assert "batch_stats" not in v or not v["batch_stats"]          # instance norms only
