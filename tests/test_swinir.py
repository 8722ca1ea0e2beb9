"""SwinIR: the official checkpoint layout (names, shapes, buffers) in closed form, strict loading, window
masks and position indices against naive definitions, padding, and FAIG through window attention."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, make_pair, run_cli
from test_attribution_faig import make_eval_set
from test_units import naive_faig64

from faig_lightning.attribution import FilterIndex, compute_faig
from faig_lightning.checkpoints import load_weights
from faig_lightning.nets import SwinIR

LIGHT = dict(upscale=2, img_size=64, embed_dim=60, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6], window_size=8,
             mlp_ratio=2.0, upsampler="pixelshuffledirect", resi_connection="1conv")
"""The released lightweight x2 net (``conf/model/swinir_light.yaml``)."""


def official_light_layout(scale: int = 2) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released lightweight SwinIR checkpoints, written out from the architecture:
    60 channels, 4 RSTBs of 6 blocks, 6 heads, 8x8 windows on 64x64 training patches, MLP ratio 2."""
    c, w, heads, hidden, tokens = 60, 8, 6, 120, 64
    layout = {"conv_first.weight": (c, 3, 3, 3), "conv_first.bias": (c,),
              "patch_embed.norm.weight": (c,), "patch_embed.norm.bias": (c,)}
    for r in range(4):
        for b in range(6):
            p = f"layers.{r}.residual_group.blocks.{b}."
            if b % 2:  # shifted blocks keep the 64x64 patch's mask: (64/8)^2 windows of 64 tokens
                layout[p + "attn_mask"] = (tokens, w * w, w * w)
            layout.update({p + "norm1.weight": (c,), p + "norm1.bias": (c,),
                           p + "attn.relative_position_bias_table": ((2 * w - 1) ** 2, heads),
                           p + "attn.relative_position_index": (w * w, w * w),
                           p + "attn.qkv.weight": (3 * c, c), p + "attn.qkv.bias": (3 * c,),
                           p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
                           p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                           p + "mlp.fc1.weight": (hidden, c), p + "mlp.fc1.bias": (hidden,),
                           p + "mlp.fc2.weight": (c, hidden), p + "mlp.fc2.bias": (c,)})
        layout.update({f"layers.{r}.conv.weight": (c, c, 3, 3), f"layers.{r}.conv.bias": (c,)})
    layout.update({"norm.weight": (c,), "norm.bias": (c,),
                   "conv_after_body.weight": (c, c, 3, 3), "conv_after_body.bias": (c,),
                   "upsample.0.weight": (3 * scale * scale, c, 3, 3), "upsample.0.bias": (3 * scale * scale,)})
    return layout


def naive_relative_index(w: int) -> torch.Tensor:
    """Index of the (dy, dx) offset between every pair of tokens of a w x w window, row-major in (dy, dx)."""
    out = torch.empty(w * w, w * w, dtype=torch.long)
    for p in range(w * w):
        for q in range(w * w):
            dy, dx = p // w - q // w, p % w - q % w
            out[p, q] = (dy + w - 1) * (2 * w - 1) + (dx + w - 1)
    return out


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lightweight_net_has_the_released_checkpoint_layout(scale):
    net = SwinIR(**{**LIGHT, "upscale": scale})
    state = net.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == official_light_layout(scale)
    assert net.upscale == scale
    if scale == 2:
        assert sum(p.numel() for p in net.parameters()) == 910_152
        index = FilterIndex.from_model(net)
        # units: per block qkv 180x60 + proj 60x60 + fc1 120x60 + fc2 60x120; convs out x in
        assert len(index) == 24 * (180 * 60 + 3600 + 7200 + 7200) + 4 * 3600 + 60 * 3 + 3600 + 12 * 60 == 710_100
        excluded = set(index.describe()["excluded"])
        assert "layers.0.residual_group.blocks.0.attn.relative_position_bias_table" in excluded
        assert "patch_embed.norm.weight" in excluded and "layers.3.residual_group.blocks.5.norm2.weight" in excluded


def test_a_checkpoint_in_the_released_format_loads_strictly(tmp_path):
    """A ``{"params": ...}`` file with every official key (buffers included) loads strictly and is used as stored."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in official_light_layout().items():
        if key.endswith("relative_position_index"):
            state[key] = naive_relative_index(8)
        elif key.endswith("attn_mask"):
            state[key] = SwinIR(**LIGHT).state_dict()[key].clone()
        else:
            state[key] = 0.02 * torch.randn(shape, generator=gen)
    torch.save({"params": state}, tmp_path / "swinir.pth")  # released files hold "params" only
    net = SwinIR(**LIGHT)
    load_weights(net, tmp_path / "swinir.pth")
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(Exception, match="upsample"):  # another scale's tail does not fit
        load_weights(SwinIR(**{**LIGHT, "upscale": 4}), tmp_path / "swinir.pth")


def test_relative_position_index_and_shift_masks_match_their_definitions():
    w, shift = 4, 2
    net = SwinIR(upscale=2, img_size=8, embed_dim=8, depths=[2], num_heads=[2], window_size=w)
    blocks = net.layers[0].residual_group.blocks
    assert torch.equal(blocks[0].attn.relative_position_index, naive_relative_index(w))
    assert blocks[0].attn_mask is None and blocks[1].shift == shift
    # a rolled window may attend between two tokens iff they were within one window of each other in the image
    # before the roll (no wrap-around); the stored mask is the training size's, others are computed
    for (h, width), mask in [((8, 8), blocks[1].attn_mask), ((8, 12), blocks[1]._mask((8, 12), torch.device("cpu")))]:
        assert mask.shape == (h * width // (w * w), w * w, w * w)
        for win in range(mask.shape[0]):
            wy, wx = divmod(win, width // w)
            for p in range(w * w):
                for q in range(w * w):
                    (py, px), (qy, qx) = [((wy * w + t // w + shift) % h, (wx * w + t % w + shift) % width)
                                          for t in (p, q)]
                    near = abs(py - qy) < w and abs(px - qx) < w
                    assert float(mask[win, p, q]) == (0.0 if near else -100.0), (h, width, win, p, q)


@pytest.mark.parametrize("upsampler,scale", [("pixelshuffledirect", 2), ("pixelshuffledirect", 3),
                                             ("pixelshuffle", 2), ("pixelshuffle", 4)])
def test_any_input_size_is_reflect_padded_to_whole_windows(upsampler, scale):
    torch.manual_seed(0)
    net = SwinIR(upscale=scale, img_size=8, embed_dim=8, depths=[2], num_heads=[2], window_size=4,
                 upsampler=upsampler, num_feat=8).eval()
    x = torch.rand(2, 3, 6, 9)
    padded = F.pad(x, (0, 3, 0, 2), mode="reflect")
    with torch.no_grad():
        out, ref = net(x), net(padded)
    assert out.shape == (2, 3, 6 * scale, 9 * scale)
    torch.testing.assert_close(out, ref[:, :, : 6 * scale, : 9 * scale])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="upsampler"):
        SwinIR(upsampler="nearest+conv")
    with pytest.raises(ValueError, match="num_heads"):
        SwinIR(embed_dim=60, num_heads=[7, 7, 7, 7])
    with pytest.raises(ValueError, match="resi_connection"):
        SwinIR(resi_connection="2conv")


@pytest.mark.usefixtures("single_thread")
def test_faig_through_window_attention_matches_a_float64_naive_reference():
    """Batched (vmap) per-sample gradients through shifted-window attention equal the official loop in float64."""
    torch.manual_seed(0)
    net = SwinIR(upscale=2, img_size=8, embed_dim=8, depths=[2], num_heads=[2], window_size=4)
    baseline, target = make_pair(net)
    eval_set = make_eval_set([(8, 8), (6, 10)], degradations=("blur", "noise"))
    steps = 4
    for max_batch in (1, 8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = compute_faig(baseline, target, eval_set, scale=2, steps=steps, rule="official",
                                  max_batch=max_batch)
        for d in ("blur", "noise"):
            ref = naive_faig64(baseline, target, eval_set, d, steps)
            np.testing.assert_allclose(result.per_degradation[d], ref, rtol=1e-4, atol=1e-6 * ref.max())


@pytest.mark.slow
def test_swinir_experiment_trains_freezes_and_attributes_by_unit_type(tmp_path):
    """``experiment=quickstart_swinir`` on a tiny SwinIR: both stages, the target's first conv and upsampling conv
    frozen, FAIG with the position-bias tables as extra units, a unit-type table with every type."""
    tiny = [o for o in TINY if not o.startswith(("model", "baseline.", "target."))]
    run = tmp_path / "run"
    run_cli(tmp_path, "faig_lightning.train", "experiment=quickstart_swinir", *tiny, "model.embed_dim=8",
            "model.num_heads=[2,2]", "baseline.max_steps=4", "baseline.val_every=2", "target.max_steps=4",
            "target.val_every=2",
            "logger=csv", "attribution.methods=[faig,random]", "attribution.proportions=[5]",
            "attribution.analyses=[locations]", "attribution.extra_units=[*relative_position_bias_table]",
            f"hydra.run.dir={run}")
    base = torch.load(run / "baseline" / "net_g.pth", weights_only=True)["params_ema"]
    target = torch.load(run / "target" / "net_g.pth", weights_only=True)["params_ema"]
    for name in ("conv_first.weight", "conv_first.bias", "upsample.0.weight", "upsample.0.bias"):
        assert torch.equal(base[name], target[name]), name
    assert not torch.equal(base["layers.0.residual_group.blocks.1.attn.qkv.weight"],
                           target["layers.0.residual_group.blocks.1.attn.qkv.weight"])
    units = json.loads((run / "summary.json").read_text())["units"]
    kinds = {layer["name"]: layer["kind"] for layer in units["layers"]}
    assert kinds["layers.1.residual_group.blocks.0.attn.qkv.weight"] == "attention"
    assert kinds["layers.1.residual_group.blocks.0.mlp.fc2.weight"] == "linear"
    assert kinds["layers.0.conv.weight"] == "conv"
    assert sum(k == "tensor" for k in kinds.values()) == 4  # one table per Swin block: 2 RSTBs x 2 blocks
    assert "layers.0.residual_group.blocks.0.norm1.weight" in units["excluded"]
    with open(run / "unit_types.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["kind"] for r in rows} == {"conv", "attention", "linear", "tensor"}
    # per (method, degradation): the types partition the net's units and the top 5 %
    for key in {(r["method"], r["degradation"]) for r in rows}:
        mine = [r for r in rows if (r["method"], r["degradation"]) == key]
        assert sum(int(r["units"]) for r in mine) == sum(layer["filters"] for layer in units["layers"])
