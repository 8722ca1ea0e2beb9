"""Eq. 7 where S_blur and S_noise nearly cancel: the engine against a float64 re-computation of the official loop.

The official code works in float32 throughout (gradient sums, products, kernel sums, per-image differences, the sum
over images). The engine's gradients are float32 too, but every later sum, product and difference is float64, so
its discriminative scores must be at least as close to the float64 reference as the official float32 loop is.
"""

import copy

import numpy as np
import pytest
import torch
from helpers import make_pair
from torch import nn

from faig_lightning.attribution import compute_faig
from faig_lightning.data.builtin import load_builtin
from faig_lightning.data.images import to_tensor
from faig_lightning.degradations import DegradationPipeline
from faig_lightning.nets import MSRResNet, SRCNNStyle

STEPS = 6
PAPER_NETS = {
    "msrresnet_64x16": lambda: MSRResNet(num_feat=64, num_block=16),
    "srcnn_style": lambda: SRCNNStyle(),
}


def photo_eval_set(n: int = 2, size: int = 32) -> list[dict]:
    """``n`` HR crops of a photo with two LR versions that differ little (blur; blur plus weak noise), so that
    S_blur and S_noise cancel to a few digits, as they do for filters that serve both restorations."""
    hr = to_tensor(load_builtin(["astronaut"])["astronaut"])
    blur = DegradationPipeline(scale=2, blur={"sigma": 2.0})
    noise = DegradationPipeline(scale=2, blur={"sigma": 2.0}, noise={"sigma": 0.02})
    items = []
    for i in range(n):
        gt = hr[:, 100 + 40 * i : 100 + 40 * i + size, 200 : 200 + size].contiguous()
        items.append({"name": f"crop{i}", "gt": gt,
                      "lq": {"blur": blur.deterministic(gt, seed=i), "noise": noise.deterministic(gt, seed=i)}})
    return items


def official_loop(baseline: nn.Module, target: nn.Module, eval_set: list[dict], dtype: torch.dtype) -> np.ndarray:
    """The official eqs. 6-7 in ``dtype``: per image, sum the gradients of the ``STEPS`` official points, multiply
    by ``theta_bar - theta``, divide by the steps, abs-sum each kernel, subtract noise from blur; sum over images
    (then the mean, as the SRCNN script reports it)."""
    net = copy.deepcopy(target).to(dtype).eval()
    b_sd = {k: v.to(dtype) for k, v in baseline.state_dict().items()}
    t_sd = {k: v.to(dtype) for k, v in target.state_dict().items()}
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]

    def faig(x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        total = {name: torch.zeros_like(m.weight) for name, m in convs}
        for s in range(STEPS):
            a = s / STEPS
            net.load_state_dict({k: a * b_sd[k] + (1 - a) * t_sd[k] for k in t_sd})
            net.zero_grad()
            torch.nn.MSELoss(reduction="sum")(gt[None].to(dtype), net(x[None].to(dtype))).backward()
            for name, m in convs:
                total[name] += m.weight.grad
        return torch.cat([(total[n] * (b_sd[f"{n}.weight"] - t_sd[f"{n}.weight"]) / STEPS).abs().sum(dim=(2, 3))
                          .flatten() for n, _ in convs])

    score = None
    for item in eval_set:
        diff = faig(item["lq"]["blur"], item["gt"]) - faig(item["lq"]["noise"], item["gt"])
        score = diff if score is None else score + diff
    return (score / len(eval_set)).double().numpy()


def relative_error(scores: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(scores - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("arch", list(PAPER_NETS))
def test_eq7_is_as_close_to_float64_as_the_official_float32_loop(arch, threads):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        baseline, target = make_pair(PAPER_NETS[arch](), strength=0.05)
        eval_set = photo_eval_set()
        reference = official_loop(baseline, target, eval_set, torch.float64)
        official = official_loop(baseline, target, eval_set, torch.float32)
        result = compute_faig(baseline, target, eval_set, scale=2, steps=STEPS, rule="official")
    finally:
        torch.set_num_threads(saved)
    ours = result.discriminative
    assert ours["blur"].dtype == np.float64 and result.per_degradation["blur"].dtype == np.float64
    s = result.per_degradation
    np.testing.assert_array_equal(ours["blur"], s["blur"] - s["noise"])  # differenced in float64, not rounded first
    np.testing.assert_array_equal(ours["noise"], -ours["blur"])
    # the cancellation this is about: D_blur is a small fraction of S_blur
    assert np.median(np.abs(reference) / np.maximum(result.per_degradation["blur"], 1e-30)) < 0.2
    official_error = relative_error(official, reference)
    assert 0 < relative_error(ours["blur"], reference) <= 2 * official_error
