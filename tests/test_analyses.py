"""Filter modulation and filter locations: endpoints, caching, per-layer counts, files."""

import csv

import numpy as np
import pytest
import torch
from helpers import make_pair
from test_attribution_faig import make_eval_set

from faig_lightning.attribution import FilterIndex, FilterMasker, run_attribution, write_results
from faig_lightning.attribution.filters import ranking
from faig_lightning.attribution.locations import filter_locations
from faig_lightning.attribution.masking import filter_set_key
from faig_lightning.attribution.metrics import Evaluator
from faig_lightning.attribution.modulation import modulation_curves, strip_lambdas
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet

pytestmark = pytest.mark.usefixtures("single_thread")


def _setup():
    baseline, target = make_pair(MSRResNet(num_feat=8, num_block=1))
    eval_set = make_eval_set([(8, 10), (8, 10)])
    index = FilterIndex.from_model(target)
    gen = torch.Generator().manual_seed(3)
    rankings = {d: torch.randperm(len(index), generator=gen).numpy() for d in ("blur", "noise")}
    masker = FilterMasker(baseline, target)
    evaluator = Evaluator(eval_set, scale=2, degradations=["clean", "blur", "noise"], device=torch.device("cpu"))
    evaluator.set_reference(masker.net)
    return baseline, target, eval_set, index, rankings, masker, evaluator


def test_modulation_endpoints_are_the_target_and_the_masked_net_exactly():
    _, target, eval_set, index, rankings, masker, evaluator = _setup()
    rows = modulation_curves(masker, evaluator, rankings, method="faig", proportion=10, lambdas=[0.0, 0.5, 1.0, 1.5])
    unmasked = evaluator.evaluate(target.eval())
    for deg in ("blur", "noise"):
        top = rankings[deg][: index.top_k(10)]
        with masker.masked(top) as net:
            masked = evaluator.evaluate(net)
            weights = {k: v.clone() for k, v in net.state_dict().items()}
        with masker.masked(top, 0.0) as net:
            assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
        with masker.masked(top, 1.0) as net:
            assert all(torch.equal(target.state_dict()[k], v) for k, v in net.state_dict().items())
        got = {(r.lam, r.input_degradation): (r.psnr, r.ssim) for r in rows if r.degradation == deg}
        for inp in ("clean", "blur", "noise"):
            assert got[1.0, inp] == (unmasked[inp]["psnr"], unmasked[inp]["ssim"])
            assert got[0.0, inp] == (masked[inp]["psnr"], masked[inp]["ssim"])
        x = eval_set[0]["lq"]["blur"][None]
        with masker.masked(top, 0.5) as net, torch.no_grad():
            half = net(x)
        with masker.masked(top, 1.5) as net, torch.no_grad():
            beyond = net(x)
        assert not torch.equal(half, target(x).detach()) and not torch.equal(beyond, half)  # lambda moves the net


def test_modulation_reuses_known_points_instead_of_evaluating():
    _, _, _, index, rankings, masker, evaluator = _setup()
    top = rankings["blur"][: index.top_k(10)]
    sentinel = {inp: {"psnr": -1.0, "ssim": -1.0} for inp in ("clean", "blur", "noise")}
    rows = modulation_curves(masker, evaluator, {"blur": rankings["blur"]}, method="faig", proportion=10,
                             lambdas=[0.0, 1.0], known={(filter_set_key(top), 0.0): sentinel}, unmasked=sentinel)
    assert {r.psnr for r in rows} == {-1.0}


def test_locations_count_the_top_filters_per_layer():
    _, _, _, index, rankings, _, _ = _setup()
    rows = filter_locations(index, {"faig": rankings}, [1, 10])
    assert len(rows) == 2 * 2 * len(index.layers)
    for deg in ("blur", "noise"):
        for p in (1, 10):
            top = rankings[deg][: index.top_k(p)]
            mine = [r for r in rows if r.degradation == deg and r.proportion == p]
            assert sum(r.selected for r in mine) == len(top)
            for r in mine:
                layer = index.layers[r.layer_index]
                naive = int(np.sum((top >= layer.offset) & (top < layer.offset + layer.count)))
                assert r.selected == naive and r.filters_in_layer == layer.count
                assert r.share == naive / layer.count and r.layer_name == layer.name.removesuffix(".weight")


def test_strip_lambdas_keep_the_ends():
    assert strip_lambdas([0, 0.5, 1]) == (0.0, 0.5, 1.0)
    assert strip_lambdas([round(0.1 * k, 1) for k in range(16)]) == (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)


def test_run_attribution_writes_the_analyses(tmp_path):
    baseline, target = make_pair(MSRResNet(num_feat=8, num_block=1))
    eval_set = make_eval_set([(8, 10), (8, 10)])
    result = run_attribution(baseline, target, eval_set, scale=2, methods=["faig", "random"], steps=2,
                             proportions=[1, 10], lambdas=[0, 0.5, 1])
    assert {r.lam for r in result.modulation} == {0.0, 0.5, 1.0}
    masked = {(r.masked_degradation, r.input_degradation): r.psnr for r in result.masking
              if r.method == "faig" and r.proportion == 1}
    for r in result.modulation:
        if r.lam == 0:
            assert r.psnr == masked[r.degradation, r.input_degradation]
    assert result.modulation_strip["blur"].shape[0] == 3
    assert np.array_equal(ranking(torch.from_numpy(result.scores["faig"]["blur"])).numpy()[:5],
                          result.rankings["faig"]["blur"][:5])
    write_results(result, tmp_path)
    for name in ("modulation.csv", "modulation.png", "modulation_strip.png", "filter_locations.csv",
                 "filter_locations.png"):
        assert (tmp_path / name).is_file(), name
    with open(tmp_path / "modulation.csv") as fh:
        header = next(csv.reader(fh))
    assert header == ["method", "degradation", "proportion", "lambda", "input_degradation", "psnr", "ssim"]
    none = run_attribution(baseline, target, eval_set, scale=2, methods=["random"], proportions=[10], analyses=[])
    assert none.modulation == [] and none.locations == []
    assert run_attribution(baseline, target, eval_set, scale=2, methods=["random"], proportions=[10],
                           lambdas=[0.5]).modulation[0].method == "random"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"analyses": ["shap"]}, "unknown attribution.analyses"),
        ({"methods": ["random"], "analysis_method": "faig"}, "analysis_method='faig' is not among"),
        ({"lambdas": []}, "attribution.lambdas must list finite numbers"),
        ({"analysis_proportion": 0}, "analysis_proportion value 0"),
    ],
)
def test_analysis_settings_are_checked(changes, message):
    from faig_lightning.attribution import AttributionSettings

    with pytest.raises(FaigError, match=message):
        AttributionSettings(**changes)


def test_mean_depth_is_the_selected_filters_mean_layer_position():
    from faig_lightning.attribution.headline import mean_depths
    from faig_lightning.attribution.locations import LocationRow

    rows = [LocationRow("faig", "blur", 1.0, pos, f"l{pos}", 10, n, n / 10) for pos, n in enumerate([3, 0, 1])]
    rows += [LocationRow("faig", "noise", 1.0, pos, f"l{pos}", 10, 0, 0.0) for pos in range(3)]
    depths = mean_depths(rows)
    assert depths["faig", "blur", 1.0] == (0 * 3 + 2 * 1) / (4 * 2)
    assert np.isnan(depths["faig", "noise", 1.0])


def test_unit_types_sum_the_layers_of_each_type():
    from faig_lightning.attribution.locations import LocationRow, unit_types

    layers = [("a", 10, 3, "conv"), ("b", 20, 0, "attention"), ("c", 10, 0, "attention"), ("d", 60, 1, "linear")]
    rows = [LocationRow("faig", "blur", 1.0, pos, name, n, k, k / n, kind)
            for pos, (name, n, k, kind) in enumerate(layers)]
    got = {r.kind: r for r in unit_types(rows)}
    assert list(got) == ["conv", "attention", "linear"]  # KINDS order, only types the net has
    assert (got["conv"].units, got["conv"].selected, got["conv"].share) == (10, 3, 0.3)
    assert got["conv"].of_selection == 0.75 and got["conv"].enrichment == pytest.approx(0.75 / 0.1)
    assert (got["attention"].units, got["attention"].selected, got["attention"].enrichment) == (30, 0, 0.0)
    assert got["linear"].of_selection == 0.25 and got["linear"].enrichment == pytest.approx(0.25 / 0.6)


def test_location_rows_carry_each_layer_unit_type():
    from helpers import AllLayers

    from faig_lightning.attribution import FilterIndex
    from faig_lightning.attribution.locations import unit_types

    index = FilterIndex.from_model(AllLayers(), ["prompt", "norm.weight"])
    order = np.arange(len(index))[::-1].copy()  # the extra units (last) first, then the tail conv's units, ...
    rows = filter_locations(index, {"faig": {"blur": order}}, [50])
    assert [r.kind for r in rows] == [layer.kind for layer in index.layers]
    assert [r.layer_name for r in rows][-3:] == ["tail", "prompt", "norm.weight"]  # tensors keep their full name
    types = {r.kind: r for r in unit_types(rows)}
    assert sum(r.units for r in types.values()) == len(index) and types["tensor"].selected == 2
    assert sum(r.selected for r in types.values()) == index.top_k(50)
