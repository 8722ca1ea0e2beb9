"""Masking / modulation of filters, and the metrics of masked models."""

import copy

import numpy as np
import pytest
import torch
from helpers import make_pair

from faig_lightning.attribution import FilterMasker, gradient_map, gradient_mse_x1000, psnr, quantize
from faig_lightning.attribution.metrics import Evaluator
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet, SRCNNStyle

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("net", [SRCNNStyle(cfg=(4, 8)), MSRResNet(num_feat=4, num_block=1)], ids=["srcnn", "msr"])
def test_mask_all_and_none(net):
    baseline, target = make_pair(net)
    masker = FilterMasker(baseline, target)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected_target, expected_baseline = target(x), baseline(x)
        with masker.masked([]) as m:
            assert torch.equal(m(x), expected_target)
        with masker.masked(np.arange(len(masker.index))) as m:
            # every filter is the baseline's now; copying the biases as well gives the baseline exactly
            work = copy.deepcopy(m)
            for name, p in work.named_parameters():
                if name.endswith("bias"):
                    p.copy_(baseline.get_parameter(name))
            assert torch.equal(work(x), expected_baseline)
            assert not torch.equal(m(x), expected_baseline)  # biases untouched: still the target's
        assert torch.equal(masker.net(x), expected_target)  # restored


def test_chosen_filters_only_and_modulation():
    baseline, target = make_pair(SRCNNStyle(cfg=(4, 8)))
    masker = FilterMasker(baseline, target)
    index = masker.index
    chosen = [index.flat("features.2", 3, 1), index.flat("features.0", 0, 2), index.flat("features.4", 5, 7)]
    w_t = {n: target.state_dict()[n] for n in index.weight_names}
    w_b = {n: baseline.state_dict()[n] for n in index.weight_names}
    for lam in (0.0, 0.5, 1.0, 1.5):
        with masker.masked(chosen, lam=lam) as m:
            state = m.state_dict()
            for n in index.weight_names:
                expected = w_t[n].clone()
                for flat in chosen:
                    layer, o, i = index.locate(flat)
                    if layer == n:
                        expected[o, i] = lam * w_t[n][o, i] + (1 - lam) * w_b[n][o, i]
                torch.testing.assert_close(state[n], expected, rtol=0, atol=1e-7)
                if lam in (0.0, 1.0):  # masking and the target are exact
                    assert torch.equal(state[n], expected)
    assert all(torch.equal(masker.net.state_dict()[n], w_t[n]) for n in index.weight_names)


def test_restores_after_an_exception_and_never_touches_the_target():
    baseline, target = make_pair(SRCNNStyle(cfg=(4,)))
    before = copy.deepcopy(target.state_dict())
    masker = FilterMasker(baseline, target)
    with pytest.raises(RuntimeError), masker.masked([0, 5, 7]):
        raise RuntimeError("boom")
    for n, t in masker.net.state_dict().items():
        assert torch.equal(t, before[n])
    assert all(torch.equal(t, before[n]) for n, t in target.state_dict().items())
    with pytest.raises(FaigError, match="filter indices"), masker.masked([len(masker.index)]):
        pass


# ---------------------------------------------------------------------------------------------- metrics


def numpy_gradient_map(plane: np.ndarray) -> np.ndarray:
    """Central differences with zero padding, magnitude sqrt(gx^2 + gy^2 + 1e-6) (digest §4.2)."""
    p = np.pad(plane, 1)
    gx = p[1:-1, 2:] - p[1:-1, :-2]
    gy = p[2:, 1:-1] - p[:-2, 1:-1]
    return np.sqrt(gx**2 + gy**2 + 1e-6)


def test_gradient_map_grey_and_blue_match_numpy():
    img = quantize(torch.rand(2, 3, 9, 7, dtype=torch.float64))
    arr = img.numpy()
    for b in range(2):
        np.testing.assert_allclose(
            gradient_map(img, "grey")[b, 0].numpy(), numpy_gradient_map(grey(arr[b])), atol=1e-12
        )
        np.testing.assert_allclose(gradient_map(img, "blue")[b, 0].numpy(), numpy_gradient_map(arr[b, 2]), atol=1e-12)
    other = img.clone()
    other[:, :2] = torch.rand(2, 2, 9, 7, dtype=torch.float64)  # red and green do not matter for "blue"
    assert torch.equal(gradient_map(other, "blue"), gradient_map(img, "blue"))
    with pytest.raises(FaigError, match="grey, blue"):
        gradient_map(img, "green")


def grey(rgb: np.ndarray) -> np.ndarray:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def test_gradient_mse_and_psnr_match_numpy():
    a, b = torch.rand(2, 3, 10, 12, dtype=torch.float64), torch.rand(2, 3, 10, 12, dtype=torch.float64)
    for n in range(2):
        diff = numpy_gradient_map(grey(a[n].numpy())) - numpy_gradient_map(grey(b[n].numpy()))
        assert float(gradient_mse_x1000(a, b)[n]) == pytest.approx(1000 * np.mean(diff**2), rel=1e-10)
        qa, qb = (np.round(np.clip(x[n, :, 2:-2, 2:-2].numpy(), 0, 1) * 255) / 255 for x in (a, b))
        mse = np.mean((qa - qb) ** 2)  # PSNR is measured on 8-bit outputs, as saved PNGs are
        assert float(psnr(a, b, crop_border=2)[n]) == pytest.approx(10 * np.log10(1 / mse), rel=1e-6)
    assert torch.equal(gradient_mse_x1000(a, a), torch.zeros(2, dtype=torch.float64))


def test_evaluator_batches_mixed_sizes_and_quantises():
    _, target = make_pair(SRCNNStyle(cfg=(4,)))
    gen = torch.Generator().manual_seed(0)
    sizes = [(8, 8), (6, 10), (8, 8)]
    eval_set = [
        {"name": f"i{n}", "gt": torch.rand(3, 2 * h, 2 * w, generator=gen), "lq": {"blur": torch.rand(3, h, w)}}
        for n, (h, w) in enumerate(sizes)
    ]
    ev = Evaluator(eval_set, scale=2, degradations=["blur"], device=torch.device("cpu"), max_batch=2)
    ev.set_reference(target)
    got = ev.evaluate(target)["blur"]
    assert got["grad_mse_x1000"] == 0
    with torch.no_grad():
        per_image = [
            float(psnr(quantize(target(item["lq"]["blur"][None])), item["gt"][None], 2)[0]) for item in eval_set
        ]
    assert got["psnr"] == pytest.approx(np.mean(per_image), rel=1e-6)
