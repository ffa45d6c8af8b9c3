"""DIP's official state_dict layout (zihuazheng/DIP ``nets/``) and deterministic test inputs.

Pure numpy, shared by the DIP tests and the torch harness that recorded
``tests/data/dip_golden.npz`` (the same recipe generates the weights on both sides).
"""
import numpy as np


def official_dip_shapes() -> dict:
    """``{torch key (no module. prefix): OIHW/bias shape}`` of the official ``DIP``."""
    shapes = {}

    def conv(name, cout, cin, kh, kw=None):
        shapes[f"{name}.weight"] = (cout, cin, kh, kh if kw is None else kw)
        shapes[f"{name}.bias"] = (cout,)

    conv("fnet.conv1", 64, 3, 7)
    cin = 64
    for i, width in enumerate((64, 96, 128), start=1):
        for j in range(2):
            block = f"fnet.layer{i}.{j}"
            conv(f"{block}.conv1", width, cin, 3)
            conv(f"{block}.conv2", width, width, 3)
            conv(f"{block}.downsample.0", width, cin, 1)
            cin = width
    conv("fnet.conv2", 256, 128, 1)
    s = "update_block_s"
    conv(f"{s}.encoder.convc1", 96, 10, 1)
    conv(f"{s}.encoder.convf1", 64, 2, 5)
    conv(f"{s}.encoder.convf2", 32, 64, 3)
    conv(f"{s}.encoder.conv", 94, 128, 3)
    for g in "zrq":
        conv(f"{s}.gru.conv{g}", 128, 352, 3)
    conv(f"{s}.flow_head.conv1", 128, 128, 3)
    conv(f"{s}.flow_head.conv2", 2, 128, 3)
    b = "update_block"
    conv(f"{b}.encoder.convc1", 64, 25, 1)
    conv(f"{b}.encoder.convc2", 128, 64, 3)
    conv(f"{b}.encoder.convf1", 64, 2, 5)
    conv(f"{b}.encoder.convf2", 64, 64, 3)
    conv(f"{b}.encoder.conv", 126, 192, 3)
    for g in "zrq":
        conv(f"{b}.gru.conv{g}1", 128, 384, 1, 5)
        conv(f"{b}.gru.conv{g}2", 128, 384, 5, 1)
    conv(f"{b}.flow_head.conv1", 256, 128, 3)
    conv(f"{b}.flow_head.conv2", 2, 256, 3)
    for blk in (s, b):
        conv(f"{blk}.mask.0", 256, 128, 3)
        conv(f"{blk}.mask.2", 144, 256, 1)
    return shapes


def official_dip_state_dict(seed: int = 0, prefix: str = "module.") -> dict:
    """Official-layout float32 weights ~ U(+-1/sqrt(fan_in)), drawn in sorted key order."""
    rng = np.random.default_rng(seed)
    shapes = official_dip_shapes()
    sd = {}
    for key in sorted(shapes):
        shape = shapes[key]
        w_shape = shapes[key.rsplit(".", 1)[0] + ".weight"]
        bound = 1.0 / np.sqrt(np.prod(w_shape[1:]))
        sd[prefix + key] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return sd


def make_pair(h: int, w: int, seed: int = 0) -> tuple:
    """A smooth (H, W, 3) float32 0..255 image pair (sum of sinusoids) with a smooth motion of a few
    pixels: ``image2(p + m(p)) ~ image1(p)``. Channel order as given to the official code."""
    rng = np.random.default_rng(seed)
    k = 6
    freq = rng.uniform(0.02, 0.15, (k, 2)) * rng.choice([-1, 1], (k, 2))
    phase = rng.uniform(0, 2 * np.pi, (k, 3))

    def render(x, y):
        arg = freq[:, 0, None, None] * x + freq[:, 1, None, None] * y  # (k, H, W)
        img = np.sin(arg[..., None] + phase[:, None, None, :]).mean(0)
        return (127.5 + 127.5 * img).astype(np.float32)

    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    mx = 3.0 + 1.5 * np.sin(2 * np.pi * y / h)
    my = -2.0 + 1.0 * np.cos(2 * np.pi * x / w)
    return render(x, y), render(x - mx, y - my)


def make_init_flow(h: int, w: int, magnitude: float) -> np.ndarray:
    """A smooth (H, W, 2) float32 warm-start flow with max |flow| = ``magnitude``."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([magnitude * np.cos(2 * np.pi * y / h) * 0.8,
                     magnitude * 0.6 * np.sin(2 * np.pi * x / w)], -1).astype(np.float32)
