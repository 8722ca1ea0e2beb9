"""Degradation prediction from the masking response: conditions, thresholds, and accuracy on a trained pair."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faig_lightning.attribution import FilterMasker, run_attribution, write_results
from faig_lightning.attribution.prediction import class_name, conditions, responses, synthesise, thresholds
from faig_lightning.data.builtin import load_builtin
from faig_lightning.data.images import to_tensor
from faig_lightning.degradations import DegradationPipeline
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet

pytestmark = pytest.mark.usefixtures("single_thread")
PIPELINE = {"scale": 2, "blur": {"prob": 0.5, "kernel_size": 21, "sigma": 2.0}, "noise": {"prob": 0.5, "sigma": 0.1}}


def test_conditions_cover_every_class_and_mark_seen_levels():
    conds = conditions({"blur": [1, 2], "noise": [0.1]}, PIPELINE)
    assert [c.name for c in conds] == ["clean", "noise0.1", "blur1", "blur1+noise0.1", "blur2", "blur2+noise0.1"]
    assert [c.label for c in conds] == ["clean", "noise", "blur", "blur+noise", "blur", "blur+noise"]
    assert [c.seen for c in conds] == [True, True, False, False, True, True]
    ranged = {**PIPELINE, "blur": {"sigma": [0.5, 1.5]}}
    assert [c.seen for c in conditions({"blur": [1, 2]}, ranged)] == [True, True, False]
    assert all(c.seen is None for c in conditions({"noise": [0.1]}))
    assert class_name(["noise", "blur"]) == "blur+noise" and class_name([]) == "clean"


def test_synthesised_inputs_follow_the_training_pipeline():
    gt = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0))
    (cond,) = [c for c in conditions({"blur": [2], "noise": [0.1]}, PIPELINE) if c.name == "blur2+noise0.1"]
    want = DegradationPipeline(scale=2, blur={"kernel_size": 21, "sigma": 2.0}, noise={"sigma": 0.1}).deterministic(
        gt, seed=7)
    assert torch.equal(synthesise(gt, cond, scale=2, pipeline=PIPELINE, seed=7), want)


def test_responses_are_patch_means_of_the_squared_output_change():
    torch.manual_seed(0)
    baseline = MSRResNet(num_feat=4, num_block=1).eval()
    target = copy.deepcopy(baseline)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    masker = FilterMasker(baseline, target)
    lq = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(1))
    filters = {"blur": np.arange(0, 40), "noise": np.arange(40, 80)}
    got = responses(masker, filters, lq, patch=10, scale=2)
    assert got.shape == (2 * 3, 2)
    ref = target(lq[None]).detach()
    for j, top in enumerate(filters.values()):
        with masker.masked(top) as net, torch.no_grad():
            change = (net(lq[None]) - ref).pow(2).mean(dim=1)[0]
        naive = [change[r * 20 : (r + 1) * 20, c * 20 : (c + 1) * 20].mean() for r in range(2) for c in range(3)]
        np.testing.assert_allclose(got[:, j].numpy(), np.log10(torch.stack(naive).double().numpy()), rtol=1e-5)


def test_thresholds_are_midpoints_and_need_both_kinds():
    feats = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], dtype=torch.float64)
    present = torch.tensor([[False, True], [True, False], [True, True]])
    assert thresholds(feats, present).tolist() == [(3.0 + 0.0) / 2, (3.0 + 3.0) / 2]
    with pytest.raises(FaigError, match="with and without each ranked degradation"):
        thresholds(feats, torch.ones(3, 2, dtype=torch.bool))


def _crops(photos: list[str], size: int, count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    images = [to_tensor(img) for img in load_builtin(photos).values()]
    out = []
    for k in range(count):
        img = images[k % len(images)]
        top = int(torch.randint(0, img.shape[1] - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, img.shape[2] - size + 1, (1,), generator=gen))
        out.append(img[:, top : top + size, left : left + size])
    return torch.stack(out)


def _train(net: torch.nn.Module, hr: torch.Tensor, pipeline: DegradationPipeline, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    m = pipeline.margin
    for _ in range(steps):
        batch = hr[torch.randint(0, len(hr), (16,), generator=gen)]
        lq, _ = pipeline(batch, generator=gen, margin=m)
        loss = F.l1_loss(net(lq), batch[..., m : batch.shape[-2] - m, m : batch.shape[-1] - m])
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def trained_pair():
    """A small MSRResNet trained on clean x2 crops of the training photos, then fine-tuned on blur/noise."""
    torch.manual_seed(0)
    hr = _crops(["astronaut", "coffee", "rocket"], 64 + 2 * 10, 256, seed=0)
    baseline = MSRResNet(num_feat=16, num_block=2)
    _train(baseline, hr, DegradationPipeline(scale=2, blur={"prob": 0.0, "sigma": 2.0}), 300, seed=1)
    target = copy.deepcopy(baseline)
    _train(target, hr, DegradationPipeline(**PIPELINE), 300, seed=2)
    eval_photos = load_builtin(["chelsea", "motorcycle_left"])
    eval_set = []
    for name, img in eval_photos.items():
        gt = to_tensor(img)[:, :192, :256]
        lq = {"clean": DegradationPipeline(scale=2).deterministic(gt),
              "blur": DegradationPipeline(scale=2, blur={"sigma": 2.0}).deterministic(gt),
              "noise": DegradationPipeline(scale=2, noise={"sigma": 0.1}).deterministic(gt, seed=3)}
        eval_set.append({"name": name, "gt": gt, "lq": lq})
    return baseline.eval(), target.eval(), eval_set


@pytest.mark.slow
def test_prediction_beats_chance_on_a_trained_pair(trained_pair, tmp_path):
    baseline, target, eval_set = trained_pair
    result = run_attribution(baseline, target, eval_set, scale=2, methods=["faig"], steps=8, proportions=[],
                             analyses=["prediction"], analysis_proportion=5, pipeline=PIPELINE)
    prediction = result.prediction.to_dict()
    accuracy = prediction["accuracy"]
    assert prediction["classes"] == ["clean", "blur", "noise", "blur+noise"]
    assert prediction["calibration"].startswith("leave one image out")
    patches = sum(c["patches"] for c in prediction["conditions"])
    # images x conditions x 48-pixel LR patches of a 96x128 LR image
    assert patches == sum(sum(row.values()) for row in prediction["confusion"].values()) == 2 * 16 * 4
    # chance is 1/4: well above it, and far beyond what guessing could reach (binomial tail < 1e-4)
    assert accuracy["all"] >= 0.4, accuracy
    correct = sum(c["correct"] for c in prediction["conditions"])
    tail = sum(math.comb(patches, k) * 0.25**k * 0.75 ** (patches - k) for k in range(correct, patches + 1))
    assert tail < 1e-4, (correct, patches, tail)
    write_results(result, tmp_path)
    saved = json.loads((tmp_path / "degradation_prediction.json").read_text())
    assert saved["accuracy"] == accuracy and (tmp_path / "degradation_prediction.png").is_file()
    header = (tmp_path / "degradation_prediction.csv").read_text().splitlines()[0]
    assert header.startswith("method,proportion,condition,class,blur_sigma,noise_sigma,seen,patches,correct")
