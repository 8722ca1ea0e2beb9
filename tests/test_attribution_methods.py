"""The method contract and registry: a user's method runs end to end, and a run checks its inputs once."""

import sys

import numpy as np
import pytest
import torch
from helpers import make_eval_set, make_pair

from faig_lightning.attribution import (
    METHODS,
    AttributionMethod,
    AttributionSettings,
    FilterIndex,
    MethodScores,
    get_method,
    methods,
    ranking,
    register_method,
    run_attribution,
)
from faig_lightning.attribution.proportions import top_k
from faig_lightning.errors import FaigError
from faig_lightning.nets import SRCNNStyle

pytestmark = pytest.mark.usefixtures("single_thread")


def weight_change(baseline, target, index):
    b, t = baseline.state_dict(), target.state_dict()
    return index.per_filter({n: t[n] - b[n] for n in index.weight_names}).double().numpy()


class WeightChange(AttributionMethod):
    """Sum of |theta - theta_bar| per filter (the module docstring's example), recording what it was given."""

    name = "weight_change"

    def __init__(self):
        self.contexts = []

    def attribute(self, ctx):
        self.contexts.append(ctx)
        change = weight_change(ctx.baseline, ctx.target, ctx.index)
        return MethodScores({d: change * (i + 1) for i, d in enumerate(ctx.degradations)}, detail="mine")


class NeedsJpeg(AttributionMethod):
    name = "needs_jpeg"

    def check_inputs(self, available):
        if "jpeg" not in available:
            raise FaigError("needs_jpeg needs jpeg inputs")

    def attribute(self, ctx):
        raise AssertionError("never reached: the inputs are refused first")


@pytest.fixture
def registry(monkeypatch):
    """The registry, with what a test registers dropped afterwards."""
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))


@pytest.fixture(scope="module")
def pair():
    return make_pair(SRCNNStyle(cfg=(4, 8)))


def test_a_registered_method_runs_end_to_end(registry, pair):
    baseline, target = pair
    method = register_method(WeightChange())
    result = run_attribution(baseline, target, make_eval_set(), scale=2, methods=["weight_change", "random"],
                             proportions=(10, 50), analyses=["locations"], device="cpu")
    index = FilterIndex.from_model(target)
    ctx = method.contexts[0]
    assert len(method.contexts) == 1 and ctx.degradations == ["blur", "noise"] and len(ctx.index) == len(index)
    assert isinstance(ctx.settings, AttributionSettings) and ctx.settings.methods == ("weight_change", "random")
    change = weight_change(baseline, target, index)
    for i, deg in enumerate(["blur", "noise"]):
        np.testing.assert_array_equal(result.rankings["weight_change"][deg], ranking(torch.from_numpy(change)).numpy())
        np.testing.assert_array_equal(result.scores["weight_change"][deg], (change * (i + 1)).astype(np.float32))
    rows = [r for r in result.masking if r.method == "weight_change"]
    assert {(r.masked_degradation, r.proportion) for r in rows} == {(d, p) for d in ("blur", "noise") for p in (10, 50)}
    assert {r.num_masked for r in rows if r.proportion == 50} == {index.top_k(50)}
    assert {r.method for r in result.locations} == {"weight_change", "random"}
    assert result.faig is None and result.settings["methods"] == ["weight_change", "random"]
    assert "weight_change" in result.timings


def test_a_method_refuses_inputs_before_any_method_runs(registry, pair):
    baseline, target = pair
    first = register_method(WeightChange())
    register_method(NeedsJpeg())
    with pytest.raises(FaigError, match="needs jpeg inputs"):
        run_attribution(baseline, target, make_eval_set(), scale=2, methods=["weight_change", "needs_jpeg"])
    assert first.contexts == []


def test_method_scores_are_checked(registry, pair):
    class Short(WeightChange):
        name = "short"

        def attribute(self, ctx):
            return MethodScores({d: np.zeros(3) for d in ctx.degradations})

    register_method(Short())
    with pytest.raises(FaigError, match=r"'short' returned scores of shape \(3,\) for 'blur'"):
        run_attribution(*pair, make_eval_set(), scale=2, methods=["short"])
    with pytest.raises(FaigError, match=r"returned no scores for \['noise'\]"):
        MethodScores({"blur": np.zeros(3)}).checked("partial", ["blur", "noise"], 3)


def test_registry(registry):
    assert METHODS == ("faig", "ig", "abs_filter_change", "random") == AttributionSettings().methods
    assert [get_method(m).name for m in METHODS] == list(METHODS)
    with pytest.raises(FaigError, match=r"unknown attribution method 'shap'; choose among \['faig', 'ig', "):
        get_method("shap")
    with pytest.raises(FaigError, match="'faig' is already registered"):
        register_method(type("Faig2", (WeightChange,), {"name": "faig"})())
    with pytest.raises(FaigError, match="AttributionMethod instance"):
        register_method(object())
    with pytest.raises(FaigError, match="unknown attribution method 'weight_change'"):
        AttributionSettings(methods=["weight_change"])
    register_method(WeightChange())
    assert AttributionSettings(methods=["weight_change"]).methods == ("weight_change",)


def test_a_run_checks_its_inputs_once(pair, monkeypatch):
    """The pair and the eval set are checked by the engine only, not again by FAIG, IG, |dtheta| or masking."""
    from faig_lightning.attribution import baselines, engine, faig, masking, validation

    calls = {"check_pair": 0, "check_eval_set": 0}
    for name in calls:
        original = getattr(validation, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        for module in (engine, faig, baselines, masking):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted)
    run_attribution(*pair, make_eval_set(), scale=2, steps=2, proportions=(10,), device="cpu")
    assert calls == {"check_pair": 1, "check_eval_set": 1}


def test_top_k_is_one_rule():
    index = FilterIndex.from_model(SRCNNStyle(cfg=(4, 8)))
    assert [index.top_k(p) for p in (1, 10, 50, 100)] == [top_k(len(index), p) for p in (1, 10, 50, 100)]
    assert top_k(151_939, 1) == 1519 and top_k(99, 1) == 0
    with pytest.raises(FaigError, match=r"\(0, 100\]"):
        top_k(100, 0)
    with pytest.raises(FaigError, match="selects none"):
        AttributionSettings(proportions=[1]).check_filters(99)


def _install_plugin(root, entry_point: str, monkeypatch) -> None:
    """A package installed on ``sys.path`` (module + dist-info) declaring ``entry_point`` in the methods group."""
    (root / "toy_plugin.py").write_text(
        "import numpy as np\n"
        "from faig_lightning.attribution.methods import AttributionMethod, MethodScores\n"
        "class Ones(AttributionMethod):\n"
        "    name = 'ones'\n"
        "    def attribute(self, ctx):\n"
        "        return MethodScores({d: np.arange(len(ctx.index), dtype=float) for d in ctx.degradations})\n"
        "class Misnamed(Ones):\n"
        "    name = 'other'\n"
    )
    info = root / "toy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{methods.ENTRY_POINT_GROUP}]\n{entry_point}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "toy_plugin", raising=False)


def test_an_installed_packages_method_is_chosen_by_name(registry, pair, tmp_path, monkeypatch):
    """What ``faig-attribute attribution.methods=[ones]`` does: the settings look the name up, the entry point of
    an installed package supplies it, and the run ranks with it."""
    _install_plugin(tmp_path, "ones = toy_plugin:Ones", monkeypatch)
    assert "ones" not in METHODS
    settings = AttributionSettings(methods=["ones", "random"], proportions=(50,))
    baseline, target = pair
    result = run_attribution(baseline, target, make_eval_set(), scale=2, settings=settings, device="cpu")
    n = len(FilterIndex.from_model(target))
    np.testing.assert_array_equal(result.rankings["ones"]["blur"], np.arange(n)[::-1])
    assert get_method("ones") is get_method("ones")  # loaded once, then registered


def test_a_misnamed_entry_point_is_refused(registry, tmp_path, monkeypatch):
    _install_plugin(tmp_path, "ones = toy_plugin:Misnamed", monkeypatch)
    with pytest.raises(FaigError, match="must be the method's name"):
        AttributionSettings(methods=["ones"])
    with pytest.raises(FaigError, match="unknown attribution method 'twos'"):
        AttributionSettings(methods=["twos"])
