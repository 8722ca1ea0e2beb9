"""Filter numbering (official index files) and quadrature rules."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from faig_lightning.attribution import FilterIndex, quadrature, ranking
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet, SRCNNStyle


@pytest.fixture(scope="module")
def srcnn_index() -> FilterIndex:
    return FilterIndex.from_model(SRCNNStyle())


@pytest.fixture(scope="module")
def msr_index() -> FilterIndex:
    return FilterIndex.from_model(MSRResNet())


def test_counts_match_official(srcnn_index, msr_index):
    assert len(srcnn_index) == 156_224
    assert len(msr_index) == 151_936
    assert len(srcnn_index.layers) == 9
    assert len(msr_index.layers) == 36


def test_srcnn_numbering_matches_official(srcnn_index):
    assert srcnn_index.flat("features.2.weight", 5, 7) == 192 + 5 * 64 + 7
    assert srcnn_index.flat("features.2", 5, 7) == 519  # module name works too
    # cumulative counts of the official `cumulate_num_neurons`
    offsets = [layer.offset for layer in srcnn_index.layers]
    assert offsets == [0, 192, 8_384, 24_768, 41_152, 57_536, 73_920, 139_456, 155_840]
    assert [layer.name for layer in srcnn_index.layers][-1] == "features.17.weight"


def test_msrresnet_numbering_matches_official(msr_index):
    assert msr_index.flat("body.0.conv1.weight", 3, 11) == 192 + 3 * 64 + 11
    assert msr_index.flat("body.0.conv2.weight", 0, 0) == 192 + 4096
    last = msr_index.layer("conv_last")
    assert last.offset == 151_936 - 192 and last.offset + last.count == 151_936
    assert msr_index.layer("upconv1").offset == 192 + 32 * 4096
    assert msr_index.locate(151_935) == ("conv_last.weight", 2, 63)
    # state-dict order of the conv weights equals module order
    sd_weights = [k for k, v in MSRResNet().state_dict().items() if k.endswith("weight") and v.dim() == 4]
    assert msr_index.weight_names == sd_weights


def test_flat_locate_round_trip(msr_index):
    for flat in [*torch.randint(0, len(msr_index), (200,)).tolist(), 0, len(msr_index) - 1]:
        assert msr_index.flat(*msr_index.locate(flat)) == flat
    with pytest.raises(FaigError, match="out of range"):
        msr_index.locate(len(msr_index))
    with pytest.raises(FaigError, match="out of range"):
        msr_index.flat("conv_first", 64, 0)
    with pytest.raises(FaigError, match="unknown layer"):
        msr_index.flat("nope", 0, 0)


def test_top_k_matches_official_folder_names(srcnn_index, msr_index):
    assert [msr_index.top_k(p) for p in (1, 3, 5, 10)] == [1519, 4558, 7596, 15193]
    assert [srcnn_index.top_k(p) for p in (1, 3, 5, 10)] == [1562, 4686, 7811, 15622]
    for bad in (0, -1, 100.5):
        with pytest.raises(FaigError, match=r"\(0, 100\]"):
            msr_index.top_k(bad)


def test_per_filter_and_top():
    net = SRCNNStyle(cfg=(4, 6))
    index = FilterIndex.from_model(net)
    tensors = {name: torch.randn_like(w) for name, w in net.state_dict().items() if name in index.weight_names}
    scores = index.per_filter(tensors)
    expected = []
    for name in index.weight_names:  # explicit loops over (o, i) in index order
        w = tensors[name]
        expected += [float(w[o, i].abs().sum()) for o in range(w.shape[0]) for i in range(w.shape[1])]
    torch.testing.assert_close(scores, torch.tensor(expected))
    top = index.top(scores, 10)
    assert len(top) == int(len(index) * 10 / 100)
    assert set(top.tolist()) == set(np.argsort(-scores.numpy(), kind="stable")[: len(top)].tolist())


def test_ranking_is_stable_descending():
    order = ranking(torch.tensor([1.0, 3.0, 3.0, 2.0]))
    assert order.tolist() == [1, 2, 3, 0]


def test_grouped_conv_counts_filters_per_group():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 6, 3, groups=2))
    index = FilterIndex.from_model(net)
    assert len(index) == 3 * 4 + 6 * 2
    assert index.flat("1.weight", 5, 1) == 12 + 5 * 2 + 1


def test_net_without_attributable_weights_is_rejected():
    with pytest.raises(FaigError, match="no weight FAIG can attribute"):
        FilterIndex.from_model(nn.Sequential(nn.LayerNorm(4), nn.PixelShuffle(2)))


# ---------------------------------------------------------------------------------------------- quadrature


def test_official_rule_is_the_official_grid():
    alphas, weights = quadrature("official", 100)
    code_alphas = np.arange(100) / 100  # official alpha_code = s/N, measured from the target
    np.testing.assert_allclose(alphas, 1 - code_alphas)
    np.testing.assert_allclose(weights, np.full(100, 0.01))
    assert alphas[0] == 1.0 and alphas.min() > 0  # includes the target, excludes the baseline


def test_trapezoid_rule():
    alphas, weights = quadrature("trapezoid", 4)
    np.testing.assert_allclose(np.sort(alphas), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])
    # exact for linear functions
    assert math.isclose(float(np.sum(weights * (3 * alphas + 1))), 2.5)


@pytest.mark.parametrize("rule", ["official", "trapezoid", "gauss_legendre"])
@pytest.mark.parametrize("steps", [1, 7, 32])
def test_weights_sum_to_one_and_nodes_in_unit_interval(rule, steps):
    alphas, weights = quadrature(rule, steps)
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-12)
    assert alphas.min() >= 0 and alphas.max() <= 1


def test_gauss_legendre_is_exact_for_polynomials():
    alphas, weights = quadrature("gauss_legendre", 5)  # exact up to degree 9
    coeffs = np.array([0.3, -1.0, 2.0, 0.5, -4.0, 1.5, 0.7, -0.2, 3.0, 1.1])  # c_j alpha^j
    approx = sum(weights[k] * np.polyval(coeffs[::-1], alphas[k]) for k in range(5))
    exact = sum(c / (j + 1) for j, c in enumerate(coeffs))
    assert math.isclose(approx, exact, rel_tol=1e-12)
    # and not for degree 10 with 5 nodes: the rule really has 5 nodes
    assert not math.isclose(float(np.sum(weights * alphas**10)), 1 / 11, rel_tol=1e-6)


def test_quadrature_bad_input():
    with pytest.raises(FaigError, match="steps must be >= 1"):
        quadrature("official", 0)
    with pytest.raises(FaigError, match="official, trapezoid, gauss_legendre"):
        quadrature("simpson", 8)
