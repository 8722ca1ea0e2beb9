"""Filters (units) of every attributable layer type: counts, numbering, masking one unit, FAIG vs a float64 naive
reference and completeness."""

import copy
import warnings

import numpy as np
import pytest
import torch
from helpers import AllLayers, make_pair
from test_attribution_faig import make_eval_set

from faig_lightning.attribution import FilterIndex, abs_filter_change, compute_faig
from faig_lightning.attribution.masking import FilterMasker
from faig_lightning.errors import FaigError

pytestmark = [pytest.mark.usefixtures("single_thread"),
              pytest.mark.filterwarnings("ignore:There is a performance drop")]

# (weight, shape, transposed, closed-form count): conv out * in / groups, transposed in * out / groups,
# matrices out * in
EXPECTED = [
    ("head.weight", (4, 3, 3, 3), False, 4 * 3),
    ("depthwise.weight", (4, 1, 3, 3), False, 4),  # one unit per channel
    ("grouped.weight", (4, 2, 3, 3), False, 4 * 4 // 2),
    ("pointwise.weight", (4, 4, 1, 1), False, 16),
    ("rows.weight", (4, 4, 3), False, 16),
    ("volume.weight", (2, 1, 3, 3, 3), False, 2),
    ("mlp.weight", (8, 4), False, 32),
    ("mlp_out.weight", (4, 8), False, 32),
    ("attn.in_proj_weight", (12, 4), False, 3 * 4 * 4),
    ("attn.out_proj.weight", (4, 4), False, 16),
    ("cross.q_proj_weight", (4, 4), False, 16),
    ("cross.k_proj_weight", (4, 8), False, 32),
    ("cross.v_proj_weight", (4, 4), False, 16),
    ("cross.out_proj.weight", (4, 4), False, 16),
    ("up.weight", (4, 3, 4, 4), True, 4 * 6 // 2),
    ("tail.weight", (3, 6, 3, 3), False, 18),
]


def test_unit_counts_and_numbering_follow_closed_forms():
    index = FilterIndex.from_model(AllLayers())
    got = [(layer.name, layer.shape, layer.transposed, layer.count) for layer in index.layers]
    assert got == EXPECTED
    assert len(index) == sum(e[3] for e in EXPECTED)
    offset = 0
    for layer in index.layers:  # module order, then o * in + i
        assert layer.offset == offset
        assert index.flat(layer.name, layer.out_channels - 1, layer.in_channels - 1) == offset + layer.count - 1
        offset += layer.count
    up = index.layer("up")
    assert (up.out_channels, up.in_channels) == (3, 4)  # filter [o, i] of a transposed conv is W[i, o]
    assert index.locate(index.flat("up", 2, 1)) == ("up.weight", 2, 1)


def _unit(weight: torch.Tensor, layer, o: int, i: int) -> torch.Tensor:
    """Unit [o, i] of ``layer``: a slice of the weight, or the whole tensor for an extra unit."""
    if layer.kind == "tensor":
        return weight
    return weight[i, o] if layer.transposed else weight[o, i]


@pytest.mark.parametrize("extra", [(), ("*",)])
@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_masking_one_unit_changes_exactly_that_slice(lam, extra):
    baseline, target = make_pair(AllLayers())
    masker = FilterMasker(baseline, target, extra_units=extra)
    b_sd, t_sd = baseline.state_dict(), target.state_dict()
    for layer in masker.index.layers:
        o, i = layer.out_channels - 1, layer.in_channels // 2
        with masker.masked([masker.index.flat(layer.name, o, i)], lam) as net:
            state = net.state_dict()
            for name, value in state.items():
                expected = t_sd[name].clone()
                if name == layer.name:
                    want = lam * _unit(t_sd[name], layer, o, i) + (1 - lam) * _unit(
                        b_sd[name], layer, o, i)
                    _unit(expected, layer, o, i).copy_(want)
                torch.testing.assert_close(value, expected, rtol=0, atol=1e-7, msg=f"{layer.name}: {name}")
        assert all(torch.equal(v, t_sd[k]) for k, v in masker.net.state_dict().items())  # restored


def test_weight_masks_follow_the_weight_layout():
    index = FilterIndex.from_model(AllLayers())
    chosen = [index.flat("up", 1, 3), index.flat("rows", 0, 2), index.flat("attn.in_proj_weight", 5, 1)]
    masks = {n: index.layer(n).weight_mask(m) for n, m in index.masks(chosen).items()}
    assert masks["up.weight"].shape == (4, 3, 1, 1) and masks["up.weight"][3, 1].all()
    assert masks["rows.weight"].shape == (4, 4, 1) and masks["rows.weight"][0, 2].all()
    assert masks["attn.in_proj_weight"].shape == (12, 4) and masks["attn.in_proj_weight"][5, 1]
    assert sum(int(m.sum()) for m in masks.values()) == 3


def naive_faig64(baseline, target, eval_set, degradation, steps, extra_units=()):
    """The official loop in float64 on every attributable weight: one image and one step at a time, then a
    Python loop over every unit ``[o, i]`` of every layer."""
    net = copy.deepcopy(target).double().eval()
    b_sd = {k: v.double() for k, v in baseline.state_dict().items()}
    t_sd = {k: v.double() for k, v in target.state_dict().items()}
    index = FilterIndex.from_model(target, extra_units)
    params = dict(net.named_parameters())
    total = np.zeros(len(index))
    for item in eval_set:
        grads = {layer.name: torch.zeros_like(params[layer.name]) for layer in index.layers}
        for s in range(steps):
            a = s / steps
            net.load_state_dict({k: a * b_sd[k] + (1 - a) * t_sd[k] for k in t_sd})
            net.zero_grad()
            out = net(item["lq"][degradation].double().unsqueeze(0))
            ((out - item["gt"].double().unsqueeze(0)) ** 2).sum().backward()
            for layer in index.layers:
                grads[layer.name] += params[layer.name].grad
        for layer in index.layers:
            product = grads[layer.name] * (b_sd[layer.name] - t_sd[layer.name]) / steps
            for o in range(layer.out_channels):
                for i in range(layer.in_channels):
                    total[index.flat(layer.name, o, i)] += float(_unit(product, layer, o, i).abs().sum())
    return total / len(eval_set)


@pytest.mark.parametrize("extra", [(), ("norm.*", "prompt", "*bias")])
def test_faig_on_every_layer_type_matches_a_float64_naive_reference(extra):
    baseline, target = make_pair(AllLayers())
    eval_set = make_eval_set([(6, 6), (5, 7)], degradations=("blur", "noise"))
    steps = 4
    for max_batch in (1, 8):  # attention nets fall back to one sample per call under batching
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = compute_faig(baseline, target, eval_set, scale=2, steps=steps, rule="official",
                                  max_batch=max_batch, extra_units=extra)
        for d in ("blur", "noise"):
            ref = naive_faig64(baseline, target, eval_set, d, steps, extra)
            np.testing.assert_allclose(result.per_degradation[d], ref, rtol=1e-4, atol=1e-6 * ref.max())
    assert abs_filter_change(baseline, target, extra).shape == (len(FilterIndex.from_model(target, extra)),)


@pytest.mark.parametrize("seed", [0, 1])
def test_completeness_holds_on_every_layer_type(seed):
    baseline, target = make_pair(AllLayers(), seed=seed, strength=0.1)
    eval_set = make_eval_set([(6, 6)] * 2, degradations=("blur", "noise"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for item in eval_set:  # GT near the target's output: a clear loss change along the path
            item["gt"] = target(item["lq"]["blur"][None])[0] + 0.05 * torch.randn(item["gt"].shape, generator=gen)
    gaps = [max(c.gap for c in compute_faig(baseline, target, eval_set, scale=2, steps=n,
                                            rule="gauss_legendre").completeness.values()) for n in (4, 32)]
    # sum over every parameter of dtheta . integral of the gradient = L(theta) - L(theta_bar), to the quadrature's
    # error, which shrinks with the nodes
    assert gaps[1] < 2e-3 and gaps[1] < gaps[0] / 3, gaps


def test_describe_lists_the_layers_and_the_parameters_left_out():
    net = AllLayers()
    described = FilterIndex.from_model(net).describe()
    assert [(d["name"], tuple(d["shape"]), d["transposed"], d["filters"]) for d in described["layers"]] == EXPECTED
    assert set(described["excluded"]) == {n for n, _ in net.named_parameters()} - {e[0] for e in EXPECTED}
    assert "attn.in_proj_bias" in described["excluded"]
    assert {n for n in described["excluded"] if not n.endswith("bias")} == {"norm.weight", "prompt"}
    kinds = {d["name"]: d["kind"] for d in described["layers"]}
    assert {n for n, k in kinds.items() if k == "attention"} == {
        "attn.in_proj_weight", "attn.out_proj.weight", "cross.q_proj_weight", "cross.k_proj_weight",
        "cross.v_proj_weight", "cross.out_proj.weight"}
    assert {n for n, k in kinds.items() if k == "linear"} == {"mlp.weight", "mlp_out.weight"}
    assert {k for n, k in kinds.items() if n in {e[0] for e in EXPECTED[:6]} | {"up.weight", "tail.weight"}} == {"conv"}


def test_extra_units_are_whole_tensors_numbered_after_the_weights():
    net = AllLayers()
    plain = FilterIndex.from_model(net)
    index = FilterIndex.from_model(net, ["norm.*", "prompt", "attn.*bias"])
    assert index.layers[: len(plain.layers)] == plain.layers  # the weights keep their numbers
    extra = index.layers[len(plain.layers):]
    # named_parameters order (the root's own parameters first), one unit each, whatever the tensor's shape
    assert [(u.name, u.kind, u.count, u.shape) for u in extra] == [
        ("prompt", "tensor", 1, (4,)), ("norm.weight", "tensor", 1, (4,)), ("norm.bias", "tensor", 1, (4,)),
        ("attn.in_proj_bias", "tensor", 1, (12,)), ("attn.out_proj.bias", "tensor", 1, (4,))]
    assert len(index) == len(plain) + 5 and index.locate(len(plain)) == ("prompt", 0, 0)
    assert set(index.excluded) == set(plain.excluded) - {u.name for u in extra}
    grads = {n: torch.full_like(p, -2.0) for n, p in net.named_parameters() if n in index.weight_names}
    assert index.per_filter(grads)[len(plain):].tolist() == [8.0, 8.0, 8.0, 24.0, 8.0]  # sum |.| of the tensor
    mask = index.layer("prompt").weight_mask(index.masks([len(plain)])["prompt"])
    assert mask.shape == (1,) and bool(mask.all())
    with pytest.raises(FaigError, match=r"'\*gamma' matches no parameter outside the weights; those are: .*prompt"):
        FilterIndex.from_model(net, ["*gamma"])
    with pytest.raises(FaigError, match=r"'head\.weight' matches no parameter outside"):  # weights are units already
        FilterIndex.from_model(net, ["head.weight"])


def test_per_weight_scores_are_sums_divided_by_the_unit_size():
    net = AllLayers()
    index = FilterIndex.from_model(net, ["prompt"])
    grads = {n: torch.full_like(p, -2.0) for n, p in net.named_parameters() if n in index.weight_names}
    summed, mean = index.per_filter(grads), index.per_filter(grads, per_weight=True)
    assert torch.equal(mean, torch.full_like(mean, 2.0))  # every unit: mean |-2| whatever its size
    sizes = torch.cat([torch.full((layer.count,), float(np.prod(layer.shape[2:]) if layer.kind != "tensor"
                                                          else np.prod(layer.shape))) for layer in index.layers])
    assert torch.equal(summed, 2.0 * sizes)
    assert sizes[index.flat("head", 0, 0)] == 9 and sizes[index.flat("volume", 0, 0)] == 27
    assert sizes[index.flat("mlp", 0, 0)] == 1 and sizes[-1] == 4  # a Linear scalar; the whole prompt

    baseline, target = make_pair(net)
    eval_set = make_eval_set([(6, 6)], degradations=("blur", "noise"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [compute_faig(baseline, target, eval_set, scale=2, steps=2, extra_units=["prompt"], per_weight=pw)
                for pw in (False, True)]
    for d in ("blur", "noise"):
        np.testing.assert_allclose(runs[1].per_degradation[d] * sizes.numpy(), runs[0].per_degradation[d],
                                   rtol=1e-12)
