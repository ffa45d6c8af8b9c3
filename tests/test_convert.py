"""Torch-free .pth reading/writing, refusal of pickled code, and the official key map."""
import io
import logging
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jflow import convert
from jflow.models.layers import Conv2d
from jflow.models import RAFT, variable_shapes
from jflow.torch_pickle import load_torch_state_dict, save_torch_state_dict

RAFT_PARAMS = 5_257_536  # official RAFT parameter count (raft_family.md)
GMA_PARAMS = 5_879_873  # official GMA count, position tables included
GMA_USED_PARAMS = 5_798_209  # without the position tables (unused by content-only attention)


# ------------------------------------------------------------------ official key layout (synthetic)

def _conv(sd, rng, name, cout, cin, k, *, bias=True, wnorm=False):
    kh, kw = (k, k) if isinstance(k, int) else k
    bound = 1 / np.sqrt(cin * kh * kw)  # torch's default init scale keeps the flow tame
    w = rng.uniform(-bound, bound, (cout, cin, kh, kw)).astype(np.float32)
    if wnorm:
        sd[f"{name}.weight_g"] = rng.uniform(0.5, 1.5, (cout, 1, 1, 1)).astype(np.float32)
        sd[f"{name}.weight_v"] = w
    else:
        sd[f"{name}.weight"] = w
    if bias:
        sd[f"{name}.bias"] = rng.uniform(-bound, bound, cout).astype(np.float32)


def _bn(sd, rng, name, c):
    for leaf, value in (("weight", 1 + 0.1 * rng.standard_normal(c)),
                        ("bias", 0.1 * rng.standard_normal(c)),
                        ("running_mean", 0.1 * rng.standard_normal(c)),
                        ("running_var", rng.uniform(0.5, 1.5, c))):
        sd[f"{name}.{leaf}"] = value.astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)


def _encoder(sd, rng, prefix, out_dim, batch_norm):
    _conv(sd, rng, f"{prefix}.conv1", 64, 3, 7)
    if batch_norm:
        _bn(sd, rng, f"{prefix}.norm1", 64)
    cin = 64
    for i, (width, stride) in enumerate(zip((64, 96, 128), (1, 2, 2)), start=1):
        for j, s in enumerate((stride, 1)):
            block = f"{prefix}.layer{i}.{j}"
            _conv(sd, rng, f"{block}.conv1", width, cin, 3)
            _conv(sd, rng, f"{block}.conv2", width, width, 3)
            if batch_norm:
                _bn(sd, rng, f"{block}.norm1", width)
                _bn(sd, rng, f"{block}.norm2", width)
            if s != 1:
                _conv(sd, rng, f"{block}.downsample.0", width, cin, 1)
                if batch_norm:  # one module registered twice: equal tensors under two names
                    _bn(sd, rng, f"{block}.norm3", width)
                    for leaf in ("weight", "bias", "running_mean", "running_var",
                                 "num_batches_tracked"):
                        sd[f"{block}.downsample.1.{leaf}"] = sd[f"{block}.norm3.{leaf}"].copy()
            cin = width
    _conv(sd, rng, f"{prefix}.conv2", out_dim, 128, 1)


def official_raft_state_dict(seed=0, *, gma=False, prefix="module."):
    """RAFT (or GMA) state_dict with the official names and OIHW shapes, random values."""
    rng = np.random.default_rng(seed)
    sd = {}
    _encoder(sd, rng, "fnet", 256, batch_norm=False)
    _encoder(sd, rng, "cnet", 256, batch_norm=True)
    ub = "update_block"
    for name, cout, cin, k in (("convc1", 256, 324, 1), ("convc2", 192, 256, 3),
                               ("convf1", 128, 2, 7), ("convf2", 64, 128, 3),
                               ("conv", 126, 256, 3)):
        _conv(sd, rng, f"{ub}.encoder.{name}", cout, cin, k)
    gru_in = 128 + (128 + 128 + 128 if gma else 128 + 128)
    for n in ("z", "r", "q"):
        _conv(sd, rng, f"{ub}.gru.conv{n}1", 128, gru_in, (1, 5))
        _conv(sd, rng, f"{ub}.gru.conv{n}2", 128, gru_in, (5, 1))
    _conv(sd, rng, f"{ub}.flow_head.conv1", 256, 128, 3)
    _conv(sd, rng, f"{ub}.flow_head.conv2", 2, 256, 3)
    _conv(sd, rng, f"{ub}.mask.0", 256, 128, 3)
    _conv(sd, rng, f"{ub}.mask.2", 576, 256, 1)
    if gma:
        _conv(sd, rng, "att.to_qk", 256, 128, 1, bias=False)
        sd["att.pos_emb.rel_height.weight"] = rng.standard_normal((319, 128)).astype(np.float32)
        sd["att.pos_emb.rel_width.weight"] = rng.standard_normal((319, 128)).astype(np.float32)
        sd["att.pos_emb.rel_ind"] = np.zeros((160, 160), np.int64)
        _conv(sd, rng, f"{ub}.aggregator.to_v", 128, 128, 1, bias=False)
        sd[f"{ub}.aggregator.gamma"] = np.array([0.3], np.float32)
    return {prefix + k: v for k, v in sd.items()}


@pytest.fixture(scope="module")
def raft_target():
    return variable_shapes(RAFT())


@pytest.fixture(scope="module")
def raft_pth(tmp_path_factory):
    sd = official_raft_state_dict()
    path = tmp_path_factory.mktemp("pth") / "raft-synthetic.pth"
    save_torch_state_dict(sd, path)
    return sd, path


def _n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# -------------------------------------------------------------------------------- torch_pickle

def test_pth_round_trip_keeps_values_and_dtypes(tmp_path):
    rng = np.random.default_rng(1)
    state = {
        "a.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "half": rng.standard_normal((2, 5)).astype(np.float16).T,  # non-contiguous input
        "bf16": rng.standard_normal(3).astype(ml_dtypes.bfloat16),
        "count": np.array(12345678901, np.int64),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
    }
    save_torch_state_dict(state, tmp_path / "x.pth")
    assert zipfile.is_zipfile(tmp_path / "x.pth")
    back = load_torch_state_dict(tmp_path / "x.pth")
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)


def _legacy_pth(state):
    """Pre-1.6 torch.save layout: magic, protocol, sys info, state pickle, key list, storages."""
    out = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, out, protocol=2)
    body = [b"\x80\x02ccollections\nOrderedDict\n)R("]
    for i, (key, arr) in enumerate(state.items()):
        pid = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n" + _pstr(str(i)) + _pstr("cpu")
               + b"J" + struct.pack("<i", arr.size) + b"Ntq")
        shape = b"(" + b"".join(b"J" + struct.pack("<i", s) for s in arr.shape) + b"t"
        stride = b"(" + b"".join(b"J" + struct.pack("<i", s // 4) for s in arr.strides) + b"t"
        body += [_pstr(key), b"ctorch._utils\n_rebuild_tensor_v2\n(", pid[:-1], b"Q",
                 b"J\x00\x00\x00\x00", shape, stride, b"\x89ccollections\nOrderedDict\n)Rt", b"R"]
    out.write(b"".join(body) + b"u.")
    pickle.dump([str(i) for i in range(len(state))], out, protocol=2)
    for arr in state.values():
        out.write(struct.pack("<q", arr.size) + arr.astype("<f4").tobytes())
    return out.getvalue()


def _pstr(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def test_legacy_non_zip_format(tmp_path):
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5], np.float32)}
    (tmp_path / "old.pth").write_bytes(_legacy_pth(state))
    back = load_torch_state_dict(tmp_path / "old.pth")
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v)


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        import os
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, layout):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Evil(f"touch {marker}")}, protocol=2)
    path = tmp_path / "evil.pth"
    if layout == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("evil/data.pkl", payload)
    else:
        path.write_bytes(payload)
    refused = r"refusing to load the global '(posix|os|nt)\.system'"
    with pytest.raises(ValueError, match=refused) as e:
        load_torch_state_dict(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_eval_global_is_refused(tmp_path):
    path = tmp_path / "eval.pth"
    path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x06\x00\x00\x00print1\x85R.")
    with pytest.raises(ValueError, match="builtins.eval"):
        load_torch_state_dict(path)


def test_non_checkpoint_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_torch_state_dict(path)


# -------------------------------------------------------------------------------- key mapping

def test_raft_official_layout_converts(raft_pth, raft_target, caplog):
    sd, path = raft_pth
    assert len(sd) == 179  # official RAFT state_dict size, duplicated BatchNorm included
    variables = convert.torch_to_flax(load_torch_state_dict(path), raft_target, source=str(path))
    assert _n_params(variables["params"]) == RAFT_PARAMS
    p, bs = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(p["fnet"]["layer2_0"]["downsample_0"]["kernel"],
                                  np.transpose(sd["module.fnet.layer2.0.downsample.0.weight"],
                                               (2, 3, 1, 0)))
    np.testing.assert_array_equal(p["cnet"]["layer3_0"]["norm3"]["scale"],
                                  sd["module.cnet.layer3.0.norm3.weight"])
    np.testing.assert_array_equal(bs["cnet"]["layer3_0"]["norm3"]["var"],
                                  sd["module.cnet.layer3.0.downsample.1.running_var"])
    np.testing.assert_array_equal(bs["cnet"]["norm1"]["mean"], sd["module.cnet.norm1.running_mean"])
    np.testing.assert_array_equal(p["update_block"]["mask_2"]["bias"],
                                  sd["module.update_block.mask.2.bias"])


def test_converted_kernel_computes_torch_conv(raft_pth, raft_target):
    """A converted asymmetric (1x5) GRU kernel gives what torch's NCHW/OIHW conv gives."""
    sd, _ = raft_pth
    variables = convert.torch_to_flax(sd, raft_target)
    w = sd["module.update_block.gru.convz1.weight"]
    b = sd["module.update_block.gru.convz1.bias"]
    x = np.random.default_rng(2).standard_normal((1, w.shape[1], 6, 9)).astype(np.float32)
    ref = jax.lax.conv_general_dilated(x, w, (1, 1), ((0, 0), (2, 2)),
                                       dimension_numbers=("NCHW", "OIHW", "NCHW"))
    ref = np.asarray(ref) + b[None, :, None, None]
    conv = Conv2d(128, (1, 5), padding=(0, 2))
    got = conv.apply({"params": variables["params"]["update_block"]["gru"]["convz1"]},
                     jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), ref, atol=1e-4, rtol=1e-5)


def test_mismatches_are_all_listed_in_one_error(raft_target):
    sd = official_raft_state_dict(prefix="")
    del sd["fnet.conv1.bias"]
    sd["update_block.extra.weight"] = np.zeros((3, 3, 1, 1), np.float32)
    sd["update_block.flow_head.conv2.weight"] = np.zeros((3, 256, 3, 3), np.float32)
    with pytest.raises(convert.ConversionError) as e:
        convert.torch_to_flax(sd, raft_target, source="bad.pth")
    msg = str(e.value)
    assert "bad.pth" in msg
    assert "params/fnet/conv1/bias" in msg
    assert "update_block.extra.weight" in msg
    assert "(3, 3, 256, 3)" in msg and "(3, 3, 256, 2)" in msg


def test_differing_duplicate_batchnorm_is_an_error(raft_target):
    sd = official_raft_state_dict(prefix="")
    sd["cnet.layer2.0.downsample.1.running_mean"] = sd["cnet.layer2.0.norm3.running_mean"] + 1
    with pytest.raises(convert.ConversionError, match="both map to .*norm3/mean but differ"):
        convert.torch_to_flax(sd, raft_target)


def test_gma_converts_and_notes_what_it_ignores(caplog):
    target = variable_shapes(RAFT(gma=True))
    sd = official_raft_state_dict(gma=True)
    with caplog.at_level(logging.INFO, logger="jflow.convert"):
        variables = convert.torch_to_flax(sd, target)
    # The position tables are unused in content-only mode; a model may or may not keep them.
    has_tables = "pos_emb" in target["params"]["att"]
    assert _n_params(variables["params"]) == (GMA_PARAMS if has_tables else GMA_USED_PARAMS)
    assert "att.pos_emb.rel_ind" in caplog.text  # a constant buffer, never a variable
    assert ("att.pos_emb.rel_height.weight" in caplog.text) != has_tables
    np.testing.assert_array_equal(variables["params"]["update_block"]["aggregator"]["gamma"],
                                  np.float32([0.3]))


def test_weight_norm_kept_folded_and_created():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = Conv2d(4, 3, padding=1, wnorm=True, name="keep")(x)
            x = Conv2d(4, 3, padding=1, wnorm=False, name="fold")(x)
            return Conv2d(4, 3, padding=1, wnorm=True, name="create")(x)

    target = jax.eval_shape(lambda: Net().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 4))))
    rng = np.random.default_rng(3)
    sd = {}
    _conv(sd, rng, "keep", 4, 4, 3, wnorm=True)
    _conv(sd, rng, "fold", 4, 4, 3, wnorm=True)
    _conv(sd, rng, "create", 4, 4, 3, wnorm=False)
    p = convert.torch_to_flax(sd, target)["params"]

    def torch_wn(name):  # torch weight_norm(dim=0), in float64, as HWIO
        v, g = sd[f"{name}.weight_v"].astype(np.float64), sd[f"{name}.weight_g"]
        w = g * v / np.sqrt((v ** 2).sum(axis=(1, 2, 3), keepdims=True))
        return w.transpose(2, 3, 1, 0)

    np.testing.assert_array_equal(p["keep"]["kernel_g"], sd["keep.weight_g"].reshape(-1))
    np.testing.assert_allclose(p["fold"]["kernel"], torch_wn("fold"), rtol=1e-6, atol=1e-7)
    from jflow.deq.weight_norm import weight_norm_kernel
    np.testing.assert_allclose(weight_norm_kernel(p["create"]["kernel_v"], p["create"]["kernel_g"]),
                               sd["create.weight"].transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-6)


def test_v1_deq_mask_layout_moves_to_top_level():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = Conv2d(4, 3, padding=1, name="update_block_conv")(x)
            return Conv2d(2, 1, name="mask_0")(x)

    target = jax.eval_shape(lambda: Net().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
    rng = np.random.default_rng(4)
    sd = {}
    _conv(sd, rng, "update_block_conv", 4, 3, 3)
    _conv(sd, rng, "update_block.mask.0", 2, 4, 1)
    p = convert.torch_to_flax({"module." + k: v for k, v in sd.items()}, target)["params"]
    np.testing.assert_array_equal(p["mask_0"]["bias"], sd["update_block.mask.0.bias"])


def official_raft_small_state_dict(seed=0, prefix="module."):
    """RAFT-small state_dict with the official names and shapes (no norm parameters)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for enc, out_dim in (("fnet", 128), ("cnet", 160)):
        _conv(sd, rng, f"{enc}.conv1", 32, 3, 7)
        cin = 32
        for i, (width, stride) in enumerate(zip((32, 64, 96), (1, 2, 2)), start=1):
            for j, s in enumerate((stride, 1)):
                block, q = f"{enc}.layer{i}.{j}", width // 4
                _conv(sd, rng, f"{block}.conv1", q, cin, 1)
                _conv(sd, rng, f"{block}.conv2", q, q, 3)
                _conv(sd, rng, f"{block}.conv3", width, q, 1)
                if s != 1:
                    _conv(sd, rng, f"{block}.downsample.0", width, cin, 1)
                cin = width
        _conv(sd, rng, f"{enc}.conv2", out_dim, 96, 1)
    ub = "update_block"
    for name, cout, cin, k in (("convc1", 96, 196, 1), ("convf1", 64, 2, 7),
                               ("convf2", 32, 64, 3), ("conv", 80, 128, 3)):
        _conv(sd, rng, f"{ub}.encoder.{name}", cout, cin, k)
    for n in ("z", "r", "q"):
        _conv(sd, rng, f"{ub}.gru.conv{n}", 96, 96 + 146, 3)
    _conv(sd, rng, f"{ub}.flow_head.conv1", 128, 96, 3)
    _conv(sd, rng, f"{ub}.flow_head.conv2", 2, 128, 3)
    return {prefix + k: v for k, v in sd.items()}


def test_raft_small_official_layout_converts():
    target = variable_shapes(RAFT(small=True))
    variables = convert.torch_to_flax(official_raft_small_state_dict(), target)
    assert _n_params(variables["params"]) == 990_162  # official RAFT-small count
    assert not variables["batch_stats"]


DEQ_DIMS = {  # size: (hdim = cdim, convc1, convc2, convf1, convf2, cat_dim, flow head)
    "B": (128, 256, 192, 128, 64, 128, 256),
    "H": (256, 512, 384, 256, 128, 256, 512),
}
DEQ_PARAMS = {"B": 5_242_816, "H": 13_394_752}  # deq-flow README counts, with weight norm


def official_deq_state_dict(size="B", *, v1_layout=False, seed=0):
    """deq-flow v2 state_dict (``--wnorm``) with official names and shapes; ``v1_layout`` keeps
    the mask head inside the update block as v1 checkpoints do."""
    rng = np.random.default_rng(seed)
    hdim, c1, c2, f1, f2, cat, head = DEQ_DIMS[size]
    sd = {}
    _encoder(sd, rng, "fnet", 256, batch_norm=False)
    _encoder(sd, rng, "cnet", hdim, batch_norm=True)
    ub = "update_block"
    for name, cout, cin, k in (("convc1", c1, 324, 1), ("convc2", c2, c1, 3),
                               ("convf1", f1, 2, 7), ("convf2", f2, f1, 3),
                               ("conv", cat - 2, c2 + f2, 3)):
        _conv(sd, rng, f"{ub}.encoder.{name}", cout, cin, k, wnorm=True)
    for n in ("z", "r", "q"):
        _conv(sd, rng, f"{ub}.gru.conv{n}1", hdim, hdim + hdim + cat, (1, 5), wnorm=True)
        _conv(sd, rng, f"{ub}.gru.conv{n}2", hdim, hdim + hdim + cat, (5, 1), wnorm=True)
    _conv(sd, rng, f"{ub}.flow_head.conv1", head, hdim, 3, wnorm=True)
    _conv(sd, rng, f"{ub}.flow_head.conv2", 2, head, 3, wnorm=True)
    mask = f"{ub}.mask" if v1_layout else "mask"
    _conv(sd, rng, f"{mask}.0", 256, hdim, 3)
    _conv(sd, rng, f"{mask}.2", 576, 256, 1)
    return {"module." + k: v for k, v in sd.items()}


@pytest.mark.parametrize("v1_layout", [False, True])
def test_deq_b_v1_and_v2_layouts_convert_exactly(v1_layout):
    from jflow.models import DEQRAFT
    from jflow.deq import DEQConfig

    target = variable_shapes(DEQRAFT(size="B", deq=DEQConfig(solver="naive")))
    sd = official_deq_state_dict("B", v1_layout=v1_layout)
    p = convert.torch_to_flax(sd, target)["params"]
    assert _n_params(p) == DEQ_PARAMS["B"]
    mask = "module.update_block.mask" if v1_layout else "module.mask"
    np.testing.assert_array_equal(p["mask_2"]["kernel"],
                                  sd[f"{mask}.2.weight"].transpose(2, 3, 1, 0))
    g = p["update_block"]["gru"]["convq2"]["kernel_g"]  # weight norm kept as g, v (exact)
    np.testing.assert_array_equal(g, sd["module.update_block.gru.convq2.weight_g"].reshape(-1))


# ------------------------------------------------------------------- forged sizes and strides

def _forged_zip(path, numel, size, stride, blob_bytes, legacy=False):
    """A checkpoint with one float32 tensor whose storage declares ``numel`` elements and whose
    view has ``size``/``stride``; ``blob_bytes`` bytes of storage data are actually present."""
    from jflow.torch_pickle import _op_int, _op_str, _op_tuple

    od = b"ccollections\nOrderedDict\n"
    pid = _op_tuple([_op_str("storage"), b"ctorch\nFloatStorage\n", _op_str("0"), _op_str("cpu"),
                     _op_int(numel)]) + b"Q"
    args = _op_tuple([pid, _op_int(0), _op_tuple([_op_int(s) for s in size]),
                      _op_tuple([_op_int(s) for s in stride]), b"\x89", od + b")R"])
    pkl = b"".join([b"\x80\x02", od, b")R(", _op_str("w"),
                    b"ctorch._utils\n_rebuild_tensor_v2\n", args, b"Ru."])
    if legacy:
        path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
                         + pickle.dumps(1001, protocol=2) + pickle.dumps({}, protocol=2) + pkl
                         + pickle.dumps(["0"], protocol=2) + struct.pack("<q", numel)
                         + b"\0" * blob_bytes)
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("f/data.pkl", pkl)
        zf.writestr("f/data/0", b"\0" * blob_bytes)


@pytest.mark.parametrize("case,numel,size,stride,blob", [
    ("stride_0", 1, (1 << 28,), (0,), 4),                  # 1 GiB from one float
    ("overlapping", 16, (1 << 14, 1 << 14), (1, 1), 64),    # 1 GiB from 16 floats
    ("past_storage", 4, (8,), (1,), 16),
    ("storage_beyond_file", 1 << 32, (4,), (1,), 16),      # declares 16 GiB
])
@pytest.mark.parametrize("legacy", [False, True])
def test_forged_tensors_are_refused_before_allocating(tmp_path, case, numel, size, stride, blob,
                                                       legacy):
    import tracemalloc

    path = tmp_path / f"{case}.pth"
    _forged_zip(path, numel, size, stride, blob, legacy=legacy)
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=str(path)):
            load_torch_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{case}: {peak} bytes allocated"


def test_a_well_formed_forged_file_still_loads(tmp_path):
    """The forgery helper itself writes loadable files when nothing is wrong (so the refusals
    above are about the forged fields, not the helper)."""
    for legacy in (False, True):
        path = tmp_path / f"ok{legacy}.pth"
        _forged_zip(path, 4, (2, 2), (2, 1), 16, legacy=legacy)
        np.testing.assert_array_equal(load_torch_state_dict(path)["w"], np.zeros((2, 2)))
