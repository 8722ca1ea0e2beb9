"""FAIG against a naive implementation of eqs. 6-7, completeness, batching, DDP sums, and the baselines."""

import copy
import warnings

import numpy as np
import pytest
import torch
from helpers import make_pair
from torch import nn

from faig_lightning.attribution import (
    FilterIndex,
    abs_filter_change,
    compute_faig,
    compute_ig,
    discriminative_scores,
    random_scores,
)
from faig_lightning.attribution.faig import FLOAT32_EPS, Completeness, _stop_reason, step_levels
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet, SRCNNStyle

pytestmark = pytest.mark.usefixtures("single_thread")


def make_eval_set(sizes, degradations=("clean", "blur", "noise"), scale=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    items = []
    for n, (h, w) in enumerate(sizes):
        items.append(
            {
                "name": f"img{n}",
                "gt": torch.rand(3, h * scale, w * scale, generator=gen),
                "lq": {d: torch.rand(3, h, w, generator=gen) for d in degradations},
            }
        )
    return items


def naive_faig(baseline, target, eval_set, degradation, steps):
    """Eqs. 6-7 as the official code does them: one image and one step at a time, load_state_dict, .backward()."""
    net = copy.deepcopy(target).eval()
    b_sd, t_sd = baseline.state_dict(), target.state_dict()
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    total = None
    for item in eval_set:
        grads = {name: torch.zeros_like(m.weight) for name, m in convs}
        for s in range(steps):
            a = s / steps  # official alpha: 0 is the target
            net.load_state_dict({k: a * b_sd[k] + (1 - a) * t_sd[k] for k in t_sd})
            net.zero_grad()
            out = net(item["lq"][degradation].unsqueeze(0))
            loss = torch.nn.MSELoss(reduction="sum")(item["gt"].unsqueeze(0), out)
            loss.backward()
            for name, m in convs:
                grads[name] += m.weight.grad
        per_image = torch.cat(
            [
                (grads[name] * (b_sd[f"{name}.weight"] - t_sd[f"{name}.weight"]) / steps)
                .abs()
                .sum(dim=(2, 3))
                .flatten()
                for name, _ in convs
            ]
        )
        total = per_image if total is None else total + per_image
    return (total / len(eval_set)).numpy()


def assert_scores_close(ours: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def top1(scores: np.ndarray) -> set:
    k = int(len(scores) / 100)
    return set(np.argsort(scores)[::-1][:k].tolist())


NETS = {
    "srcnn": lambda: SRCNNStyle(cfg=(8, 16, 16)),
    "msrresnet": lambda: MSRResNet(num_feat=8, num_block=2),
}


@pytest.mark.parametrize("arch", list(NETS))
def test_faig_matches_naive_official_with_mixed_sizes(arch):
    baseline, target = make_pair(NETS[arch]())
    eval_set = make_eval_set([(8, 10), (12, 8), (8, 10)], degradations=("blur", "noise"))
    steps = 6
    result = compute_faig(baseline, target, eval_set, scale=2, steps=steps, rule="official")
    naive = {d: naive_faig(baseline, target, eval_set, d, steps) for d in ("blur", "noise")}
    for d in ("blur", "noise"):
        assert_scores_close(result.per_degradation[d], naive[d])
        assert result.per_degradation[d].dtype == np.float64
        assert len(result.per_degradation[d]) == len(FilterIndex.from_model(target))
    naive_blur = naive["blur"].astype(np.float64) - naive["noise"]  # eq. 7, blur direction
    np.testing.assert_allclose(result.discriminative["blur"], naive_blur, rtol=1e-4, atol=1e-6 * naive["blur"].max())
    np.testing.assert_allclose(result.discriminative["noise"], -naive_blur, rtol=1e-4, atol=1e-6 * naive["blur"].max())
    assert top1(result.discriminative["blur"]) == top1(naive_blur)
    assert top1(result.discriminative["noise"]) == top1(-naive_blur)
    assert result.gradient_evaluations == 3 * 2 * steps  # each gradient once, not once per direction


def test_vmap_batches_equal_the_loop():
    baseline, target = make_pair(MSRResNet(num_feat=8, num_block=1))
    eval_set = make_eval_set([(8, 8), (6, 10)], degradations=("blur", "noise"))
    loop = compute_faig(baseline, target, eval_set, scale=2, steps=4, rule="gauss_legendre", max_batch=1)
    batched = compute_faig(baseline, target, eval_set, scale=2, steps=4, rule="gauss_legendre", max_batch=5)
    for d in ("blur", "noise"):
        assert_scores_close(batched.per_degradation[d], loop.per_degradation[d])
        assert batched.completeness[d].estimate == pytest.approx(loop.completeness[d].estimate, rel=1e-5)


def _fitted_eval_set(baseline, target, n=2):
    """GT = the target's output (+ a little noise): the loss change along the path is large."""
    eval_set = make_eval_set([(6, 6)] * n, degradations=("blur", "noise"))
    with torch.no_grad():
        for item in eval_set:
            item["gt"] = target(item["lq"]["blur"][None])[0] + 0.01 * torch.randn_like(item["gt"])
    return eval_set


def test_completeness_and_its_convergence():
    baseline, target = make_pair(SRCNNStyle(cfg=(8, 8)), strength=0.5)
    eval_set = _fitted_eval_set(baseline, target)
    fine = compute_faig(baseline, target, eval_set, scale=2, steps=200, rule="trapezoid")
    for c in fine.completeness.values():
        assert c.gap < 1e-3
    # the exact side is L(theta) - L(theta_bar), checked with plain forward passes
    with torch.no_grad():
        exact_blur = sum(
            float(((net(item["lq"]["blur"][None]) - item["gt"]) ** 2).sum()) * sign
            for item in eval_set
            for net, sign in ((target, 1), (baseline, -1))
        )
    assert fine.completeness["blur"].exact == pytest.approx(exact_blur, rel=1e-5)
    gaps = [
        max(c.gap for c in compute_faig(baseline, target, eval_set, scale=2, steps=n, rule=rule).completeness.values())
        for rule, n in (("official", 4), ("official", 16), ("trapezoid", 16), ("trapezoid", 64))
    ]
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] > fine.completeness["blur"].gap / 10


def test_gauss_legendre_converges_fast_on_a_smooth_net():
    """Any Conv2d net works; with smooth activations Gauss-Legendre is far more accurate per node."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))
    baseline, target = make_pair(net, strength=0.5)
    eval_set = _fitted_eval_set(baseline, target, n=1)
    gap = {
        rule: max(
            c.gap for c in compute_faig(baseline, target, eval_set, scale=2, steps=6, rule=rule).completeness.values()
        )
        for rule in ("trapezoid", "gauss_legendre")
    }
    assert gap["gauss_legendre"] < 1e-5 < gap["trapezoid"]


def test_auto_steps_stop_at_the_first_level_below_tol():
    baseline, target = make_pair(SRCNNStyle(cfg=(8, 8)), strength=0.5)
    eval_set = _fitted_eval_set(baseline, target, n=1)
    tol = 1e-3
    auto = compute_faig(baseline, target, eval_set, scale=2, steps="auto", rule="trapezoid", tol=tol, budget=500)
    assert auto.converged and auto.steps > 8 and auto.stop_reason == "converged"
    assert max(c.gap for c in auto.completeness.values()) < tol
    before = compute_faig(baseline, target, eval_set, scale=2, steps=auto.steps // 2, rule="trapezoid")
    assert max(c.gap for c in before.completeness.values()) >= tol
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capped = compute_faig(baseline, target, eval_set, scale=2, steps="auto", rule="official", budget=8)
    assert capped.steps == 8 and not capped.converged and capped.stop_reason == "budget"
    assert capped.gradient_evaluations == 8 * 2  # one image, two degradations, 8 nodes: never over the budget
    assert any("stopped at 8 steps (budget)" in str(w.message) for w in caught)


def test_auto_budget_bounds_the_nodes_evaluated_in_all():
    assert step_levels("auto") == [8, 16, 32]  # 56 nodes; 64 more would exceed the paper's 100
    assert step_levels("auto", 120) == [8, 16, 32, 64] and step_levels(12) == [12]
    with pytest.raises(FaigError, match="budget"):
        step_levels("auto", 4)


@pytest.mark.parametrize(
    ("gaps", "floors", "earlier", "reason"),
    [
        ((1e-3, 5e-3), (1e-9, 1e-9), [], "converged"),
        ((0.2, 0.05), (0.25, 0.06), [], "noise floor"),  # both within their floor
        ((0.2, 0.05), (0.25, 0.03), [], None),  # one above its floor: go on
        ((0.2, 0.05), (0.05, 0.03), [0.19, 0.21], "not shrinking"),  # two levels in a row no better than 0.19
        ((0.2, 0.05), (0.05, 0.03), [0.3, 0.21], None),  # the last two beat 0.3 by more than 10 %: go on
        ((0.2, 0.05), (0.05, 0.03), [0.3], None),  # a single bad level is not enough (kinks make it noisy)
    ],
)
def test_auto_stop_rule(gaps, floors, earlier, reason):
    def comp(gap: float, floor: float) -> Completeness:
        # exact = 1: gap = |estimate - 1|, floor = eps32 * magnitude
        return Completeness(estimate=1 + gap, exact=1.0, magnitude=floor / FLOAT32_EPS)

    now = {d: comp(g, f) for d, g, f in zip(("blur", "noise"), gaps, floors, strict=True)}
    assert _stop_reason(now, [*earlier, max(gaps)], tol=1e-2) == reason


def test_auto_steps_stop_at_the_noise_floor_of_a_tiny_change():
    """A target a hair away from the baseline: the loss difference drowns in float32 rounding, so doubling the
    nodes cannot close the gap; auto stops early instead of spending the whole budget."""
    baseline, target = make_pair(SRCNNStyle(cfg=(8, 8)), strength=1e-6)
    eval_set = _fitted_eval_set(baseline, target, n=1)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        auto = compute_faig(baseline, target, eval_set, scale=2, steps="auto", budget=500, tol=1e-9)
    assert auto.stop_reason in ("noise floor", "not shrinking") and auto.steps <= 32
    assert all(c.gap < 50 * c.floor for c in auto.completeness.values())


def test_reduce_fn_sums_shards_like_the_full_set():
    baseline, target = make_pair(SRCNNStyle(cfg=(8, 8)))
    eval_set = make_eval_set([(6, 6), (8, 6), (6, 6)], degradations=("blur", "noise"))
    full = compute_faig(baseline, target, eval_set, scale=2, steps=3)
    captured = []
    compute_faig(baseline, target, eval_set[:1], scale=2, steps=3, reduce_fn=lambda t: captured.append(t) or t)
    sharded = compute_faig(baseline, target, eval_set[1:], scale=2, steps=3, reduce_fn=lambda t: t + captured[0])
    for d in ("blur", "noise"):
        assert_scores_close(sharded.per_degradation[d], full.per_degradation[d])
        assert sharded.completeness[d].exact == pytest.approx(full.completeness[d].exact, rel=1e-6)


def test_discriminative_one_vs_rest():
    s = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([1.0, 2.0], np.float32)}
    np.testing.assert_allclose(discriminative_scores(s)["a"], [2.0, -2.0])
    s["c"] = np.array([5.0, 4.0], np.float32)
    np.testing.assert_allclose(discriminative_scores(s)["a"], [3.0 - 3.0, 0.0 - 3.0])
    np.testing.assert_allclose(discriminative_scores({"a": s["a"]})["a"], s["a"])
    close = {"blur": np.array([1.0 + 2**-40]), "noise": np.array([1.0])}  # equal in float32
    assert discriminative_scores(close)["blur"][0] == 2**-40


def test_faig_bad_input():
    baseline, target = make_pair(SRCNNStyle(cfg=(4,)))
    eval_set = make_eval_set([(4, 4)])
    with pytest.raises(FaigError, match="steps must be >= 1"):
        compute_faig(baseline, target, eval_set, scale=2, steps=0)
    with pytest.raises(FaigError, match="'auto'"):
        compute_faig(baseline, target, eval_set, scale=2, steps="many")
    with pytest.raises(FaigError, match="unknown quadrature rule"):
        compute_faig(baseline, target, eval_set, scale=2, rule="midpoint")
    with pytest.raises(FaigError, match="not in the eval set"):
        compute_faig(baseline, target, eval_set, scale=2, degradations=["jpeg"])


# ---------------------------------------------------------------------------------------------- baselines


def naive_ig(target, eval_set, degradation, nodes, divisor, weights=None):
    net = copy.deepcopy(target).eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    total = 0
    for item in eval_set:
        base, final = item["lq"]["clean"][None], item["lq"][degradation][None]
        acc = [torch.zeros_like(m.weight) for m in convs]
        for k, a in enumerate(nodes):
            net.zero_grad()
            net(base + a * (final - base)).sum().backward()
            for slot, m in zip(acc, convs, strict=True):
                slot += m.weight.grad * (1.0 if weights is None else float(weights[k]))
        total = total + torch.cat([(g / divisor).abs().sum(dim=(2, 3)).flatten() for g in acc])
    return total.numpy()


@pytest.mark.parametrize("arch", list(NETS))
@pytest.mark.parametrize("variant", ["srresnet", "srcnn"])
def test_ig_matches_naive_loop(arch, variant):
    _, target = make_pair(NETS[arch]())
    eval_set = make_eval_set([(6, 8), (8, 6)])
    steps = 5
    nodes = [s / steps for s in range(steps)] if variant == "srresnet" else [s / steps for s in range(steps + 1)]
    divisor = steps if variant == "srresnet" else 1
    ours = compute_ig(target, eval_set, scale=2, variant=variant, steps=steps, max_batch=4)
    assert sorted(ours) == ["blur", "noise"]
    for d in ("blur", "noise"):
        assert_scores_close(ours[d], naive_ig(target, eval_set, d, nodes, divisor))


def test_ig_gauss_legendre_is_the_weighted_node_sum_and_approaches_the_fine_official_sum():
    _, target = make_pair(NETS["msrresnet"]())
    eval_set = make_eval_set([(6, 8), (8, 6)])
    nodes, weights = np.polynomial.legendre.leggauss(4)
    ours = compute_ig(target, eval_set, scale=2, variant="gauss_legendre", steps=4, max_batch=3)
    fine = compute_ig(target, eval_set, scale=2, variant="srresnet", steps=400, max_batch=50)
    coarse = compute_ig(target, eval_set, scale=2, variant="srresnet", steps=4, max_batch=4)
    for d in ("blur", "noise"):
        assert_scores_close(ours[d], naive_ig(target, eval_set, d, (nodes + 1) / 2, 1, weights / 2))
        # 4 Gauss-Legendre nodes are closer to the integral than the 4-point official sum (only ~2x here: the
        # LeakyReLU kinks along the path make the integrand piecewise smooth)
        assert np.abs(ours[d] - fine[d]).sum() < 0.6 * np.abs(coarse[d] - fine[d]).sum()


def test_ig_needs_clean_inputs():
    _, target = make_pair(SRCNNStyle(cfg=(4,)))
    with pytest.raises(FaigError, match="clean LR"):
        compute_ig(target, make_eval_set([(4, 4)], degradations=("blur",)), scale=2)


def test_abs_filter_change_matches_numpy():
    baseline, target = make_pair(SRCNNStyle(cfg=(4, 8)))
    with torch.no_grad():
        baseline.features[0].weight[1, 2].zero_()
        target.features[0].weight[1, 2].zero_()  # 0/0 -> 0
    ours = abs_filter_change(baseline, target)
    parts = []
    for name in FilterIndex.from_model(target).weight_names:
        b, t = baseline.state_dict()[name].numpy(), target.state_dict()[name].numpy()
        with np.errstate(invalid="ignore"):
            parts.append((np.abs(t - b).sum(axis=(2, 3)) / np.abs(b).sum(axis=(2, 3))).ravel())
    ref = np.nan_to_num(np.concatenate(parts), nan=0.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert ours[1 * 3 + 2] == 0 and ours.dtype == np.float64


def test_random_scores_are_seeded_permutations():
    a = random_scores(1000, ["blur", "noise"], seed=3)
    b = random_scores(1000, ["noise"], seed=3)
    np.testing.assert_array_equal(a["noise"], b["noise"])  # reproducible, independent of the other degradations
    order = np.argsort(-a["blur"])
    assert sorted(order.tolist()) == list(range(1000))
    assert len(np.unique(a["blur"])) == 1000
    assert not np.array_equal(a["blur"], a["noise"])
    assert not np.array_equal(a["blur"], random_scores(1000, ["blur"], seed=4)["blur"])
