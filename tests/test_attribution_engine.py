"""The high-level entry point, result files, the Figure-2 panel and bad input."""

import copy
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_eval_set, make_pair

from faig_lightning import run_folder
from faig_lightning.attribution import (
    FilterMasker,
    compute_faig,
    figure2_panel,
    psnr,
    quantize,
    run_attribution,
    write_results,
)
from faig_lightning.attribution.tables import MASKING_COLUMNS, masking_markdown
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet, SRCNNStyle

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def setup():
    baseline, target = make_pair(MSRResNet(num_feat=4, num_block=1))
    target.train()  # the engine must evaluate in eval mode and leave the flag alone
    eval_set = make_eval_set()
    before = copy.deepcopy(target.state_dict())
    calls = []
    result = run_attribution(
        baseline,
        target,
        eval_set,
        scale=2,
        steps=3,
        rule="official",
        proportions=(5, 50),
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    return baseline, target, eval_set, before, calls, result


def test_rankings_scores_and_untouched_inputs(setup):
    baseline, target, eval_set, before, calls, result = setup
    n = len(result.index)
    assert set(result.rankings) == {"faig", "ig", "abs_filter_change", "random"}
    for method, per in result.rankings.items():
        assert set(per) == {"blur", "noise"}
        for deg, order in per.items():
            assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(n))
            scores = result.scores[method][deg]
            assert scores.dtype == np.float32 and np.all(np.diff(scores[order]) <= 0)
    direct = compute_faig(baseline, target, eval_set, scale=2, steps=3, rule="official")
    np.testing.assert_allclose(result.scores["faig"]["blur"], direct.discriminative["blur"], rtol=1e-6)
    assert result.steps == 3 and set(result.completeness) == {"blur", "noise"}
    assert target.training and all(m.training for m in target.modules())
    assert all(torch.equal(t, before[k]) for k, t in target.state_dict().items())
    for stage in ("faig", "ig", "masking"):
        last = [c for c in calls if c[0] == stage][-1]
        assert last[1] == last[2]


def test_masking_table(setup):
    baseline, target, eval_set, _, _, result = setup
    assert len(result.masking) == 4 * 2 * 2 * 3  # methods x ranked degradations x proportions x inputs
    assert {r.input_degradation for r in result.masking} == {"clean", "blur", "noise"}
    assert result.unmasked["target"]["blur"]["grad_mse_x1000"] == 0
    row = next(
        r
        for r in result.masking
        if (r.method, r.masked_degradation, r.proportion, r.input_degradation) == ("faig", "noise", 50, "blur")
    )
    assert row.num_masked == result.index.top_k(50)
    assert row.psnr_drop == pytest.approx(result.unmasked["target"]["blur"]["psnr"] - row.psnr)
    masker = FilterMasker(baseline, target)  # recompute that row by hand
    with masker.masked(result.top("faig", "noise", 50)) as net, torch.no_grad():
        values = [float(psnr(quantize(net(it["lq"]["blur"][None])), it["gt"][None], 2)[0]) for it in eval_set]
    assert row.psnr == pytest.approx(np.mean(values), rel=1e-6)
    with torch.no_grad():
        base = [float(psnr(quantize(baseline(it["lq"]["noise"][None])), it["gt"][None], 2)[0]) for it in eval_set]
    assert result.unmasked["baseline"]["noise"]["psnr"] == pytest.approx(np.mean(base), rel=1e-6)
    same = [(r.psnr, r.grad_mse_x1000) for r in result.masking if r.method == "abs_filter_change"]
    assert same[:6] == same[6:]  # |dtheta| ranks blur and noise alike


def test_write_results_formats(setup, tmp_path):
    result = setup[-1]
    out = write_results(result, tmp_path / "run")
    n = len(result.index)
    for method in result.rankings:
        for deg in ("blur", "noise"):
            lines = (out / "attribution" / method / f"{deg}_index.txt").read_text().splitlines()
            assert [int(x) for x in lines] == result.rankings[method][deg].tolist()
            assert sorted(int(x) for x in lines) == list(range(n))
            scores = np.load(out / "attribution" / method / f"{deg}_scores.npy")
            assert scores.dtype == np.float32 and scores.shape == (n,)
    with open(out / "masking.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == MASKING_COLUMNS and len(rows) == len(result.masking)
    assert MASKING_COLUMNS[:3] == ["method", "masked_degradation", "proportion"]
    summary = json.loads((out / "summary.json").read_text())
    assert {"settings", "completeness", "timings_s", "num_filters", "unmasked", "steps_used"} <= set(summary)
    assert summary["num_filters"] == n and set(summary["completeness"]["blur"]) == {"estimate", "exact", "gap", "floor"}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.tmp"))


def test_masking_markdown(setup):
    result = setup[-1]
    lines = masking_markdown(result.masking).splitlines()
    assert len(lines) == 2 + len(result.masking)
    assert [c.strip() for c in lines[0].strip("|").split("|")] == MASKING_COLUMNS
    first = [c.strip() for c in lines[2].strip("|").split("|")]
    assert first[0] == result.masking[0].method
    assert float(first[5]) == pytest.approx(result.masking[0].psnr, rel=1e-3)


def test_a_failed_write_leaves_no_final_file(setup, tmp_path, monkeypatch):
    result = setup[-1]

    def broken_save(fh, array):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(run_folder.np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_results(result, tmp_path)
    folder = tmp_path / "attribution" / "faig"
    assert (folder / "blur_index.txt").exists()  # written before the failure, complete
    assert not (folder / "blur_scores.npy").exists()
    assert not (tmp_path / "summary.json").exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def test_figure2_panel(setup):
    baseline, target, eval_set, _, _, result = setup
    item = eval_set[1]
    panel = figure2_panel(baseline, target, item, result.rankings["faig"], scale=2, proportion=100)
    assert panel.columns[:2] == ["input (nearest)", "target"] and len(panel.columns) == 4
    assert set(panel.rows) == {"blur", "noise"}
    row = panel.rows["noise"]
    x = item["lq"]["noise"][None]
    assert row.shape == (4, 3, 12, 20)
    assert torch.equal(row[0], F.interpolate(x, scale_factor=2, mode="nearest")[0])
    masker = FilterMasker(baseline, target)
    with torch.no_grad():
        assert torch.equal(row[1], quantize(masker.net(x))[0])
        with masker.masked(np.arange(len(masker.index))) as net:  # 100 %: every filter masked
            assert torch.equal(row[2], quantize(net(x))[0])
    assert panel.grid().shape == (2 * 12, 4 * 20, 3) and panel.grid().dtype == np.uint8


# ---------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    baseline, target = make_pair(SRCNNStyle(cfg=(4,)))
    return baseline, target, make_eval_set(sizes=((4, 4),))


def run(small, **kwargs):
    baseline, target, eval_set = small
    args = {"baseline": baseline, "target": target, "eval_set": eval_set, "scale": 2, "steps": 1}
    args.update(kwargs)
    return run_attribution(args.pop("baseline"), args.pop("target"), args.pop("eval_set"), **args)


def test_bad_models(small):
    baseline, target, _ = small
    with pytest.raises(FaigError, match=r"same architecture.*features\.0\.weight"):
        run(small, baseline=SRCNNStyle(cfg=(8,)))
    with pytest.raises(FaigError, match="nothing to attribute"):
        run(small, target=copy.deepcopy(baseline))
    broken = copy.deepcopy(target)
    with torch.no_grad():
        broken.features[2].bias[0] = float("nan")
    with pytest.raises(FaigError, match=r"target model's tensor 'features\.2\.bias'"):
        run(small, target=broken)


def test_bad_eval_sets(small):
    with pytest.raises(FaigError, match="no eval images"):
        run(small, eval_set=[])
    bad = make_eval_set(sizes=((4, 4),))
    bad[0]["gt"] = torch.rand(3, 9, 8)
    with pytest.raises(FaigError, match=r"image 'img0'.*does not match the GT size"):
        run(small, eval_set=bad)
    with pytest.raises(FaigError, match="IG needs a clean LR"):
        run(small, eval_set=make_eval_set(sizes=((4, 4),), degradations=("blur", "noise")))
    only_clean = make_eval_set(sizes=((4, 4),), degradations=("clean",))
    with pytest.raises(FaigError, match="add degraded inputs"):
        run(small, eval_set=only_clean)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"proportions": (0,)}, r"\(0, 100\]"),
        ({"proportions": (1, 101)}, r"\(0, 100\]"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"methods": ("faig", "shap")}, "unknown attribution method 'shap'"),
        ({"methods": ()}, "no attribution method"),
        ({"rule": "simpson"}, "unknown quadrature rule"),
        ({"channel": "green"}, "unknown attribution.channel"),
        ({"ig_variant": "edsr"}, "unknown attribution.ig_variant"),
        ({"ig_steps": 0}, "attribution.ig_steps must be an integer >= 1"),
        ({"seed": -1}, "seed"),
        ({"scale": 0}, "scale"),
        ({"per_weight": "yes"}, "attribution.per_weight must be true or false"),
        ({"extra_units": ["*bias", ""]}, r"attribution.extra_units must list parameter-name patterns"),
        ({"extra_units": ["*gamma"]}, r"'\*gamma' matches no parameter outside the weights; those are: features"),
    ],
)
def test_bad_settings(small, kwargs, message):
    with pytest.raises(FaigError, match=message):
        run(small, **kwargs)


def test_drop_markdown_pivots_targeted_and_other_inputs():
    from faig_lightning.attribution.engine import MaskingRow
    from faig_lightning.attribution.tables import drop_markdown

    rows = [
        MaskingRow("faig", m, 1.0, 5, i, 30.0, 0.9, drop, 0.1)
        for m, i, drop in [("blur", "blur", 1.5), ("blur", "noise", 0.25), ("noise", "noise", 3.0),
                           ("noise", "blur", 0.125), ("blur", "clean", 9.0)]
    ]
    lines = drop_markdown(rows).splitlines()
    assert lines[0] == ("| method | masked % | mask blur: blur input | mask blur: noise input | "
                        "mask noise: noise input | mask noise: blur input |")
    assert lines[2] == "| faig | 1 | 1.50 | 0.25 | 3.00 | 0.12 |"


def test_extra_units_are_ranked_masked_and_located_by_every_method(small):
    """With attribution.extra_units the biases are units after the weights: every method scores them, masking
    and the location table cover them, and summary units list them as whole tensors."""
    eval_set = make_eval_set(sizes=((12, 12),))  # large enough for SSIM in the masking table
    plain = run(small, eval_set=eval_set, proportions=(50,), analyses=("locations",))
    result = run(small, eval_set=eval_set, proportions=(50,), analyses=("locations",), extra_units=("*bias",))
    n_weights = len(plain.index)
    biases = [layer for layer in result.index.layers if layer.kind == "tensor"]
    names = [n for n, _ in small[1].named_parameters() if n.endswith("bias")]
    assert [b.name for b in biases] == names and len(result.index) == n_weights + len(names)
    for method, per in result.scores.items():
        for deg, scores in per.items():
            assert scores.shape == (n_weights + len(names),), (method, deg)
            if method != "random":  # the weights' scores do not depend on the extra units
                np.testing.assert_allclose(scores[:n_weights], plain.scores[method][deg], rtol=1e-5, atol=1e-12)
    assert {row.layer_name for row in result.locations} >= set(names)
    described = result.index.describe()
    assert [d["kind"] for d in described["layers"][-2:]] == ["tensor", "tensor"] and described["excluded"] == []


def test_per_weight_keeps_the_rankings_of_a_net_whose_units_share_one_size(small):
    """Every unit of an SRCNN-style net is a 3x3 kernel: mean and sum scores rank alike (the paper's setting)."""
    eval_set = make_eval_set(sizes=((12, 12),))
    plain = run(small, eval_set=eval_set, proportions=(50,), analyses=(), methods=("faig", "ig"))
    mean = run(small, eval_set=eval_set, proportions=(50,), analyses=(), methods=("faig", "ig"), per_weight=True)
    for method in ("faig", "ig"):
        for deg, order in plain.rankings[method].items():
            np.testing.assert_array_equal(mean.rankings[method][deg], order)
            np.testing.assert_allclose(mean.scores[method][deg] * 9, plain.scores[method][deg], rtol=1e-6)
