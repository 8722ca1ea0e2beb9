"""targeted_other_drops: which inputs are "other", under the sweep summary's and a run's headline convention."""

from __future__ import annotations

import pytest

from faig_lightning.attribution.drops import targeted_other_drops

DROP = {"clean": 0.25, "blur": 4.0, "noise": 1.0, "jpeg": 2.0}


def rows(ranked, inputs=("clean", "blur", "noise", "jpeg"), method="faig", proportion=1.0):
    return [(method, proportion, masked, inp, DROP[inp] + (masked == inp)) for masked in ranked for inp in inputs]


def test_targeted_is_the_masked_inputs_drop_and_other_the_mean_over_the_other_ranked():
    for others in ("ranked", "ranked_else_all"):
        got = targeted_other_drops(rows(["blur", "noise", "jpeg"]), others=others)
        assert list(got) == [("faig", 1.0, "blur"), ("faig", 1.0, "noise"), ("faig", 1.0, "jpeg")]
        assert got["faig", 1.0, "blur"] == (5.0, 1.5)  # noise and jpeg; clean is not a ranked degradation
        assert got["faig", 1.0, "noise"] == (2.0, 3.0)


def test_clean_counts_only_in_the_headline_convention():
    ranked_clean = rows(["clean", "blur"])
    assert targeted_other_drops(ranked_clean, others="ranked")["faig", 1.0, "blur"] == (5.0, None)
    assert targeted_other_drops(ranked_clean, others="ranked_else_all")["faig", 1.0, "blur"] == (5.0, 0.25)
    alone = rows(["blur"])  # one ranked degradation: the headline falls back to every other input
    assert targeted_other_drops(alone, others="ranked")["faig", 1.0, "blur"] == (5.0, None)
    assert targeted_other_drops(alone, others="ranked_else_all")["faig", 1.0, "blur"] == (5.0, pytest.approx(3.25 / 3))


def test_missing_values_give_no_drop_but_keep_the_degradation_ranked():
    table = rows(["blur", "noise"], inputs=("blur", "noise"))
    table[1] = ("faig", 1.0, "blur", "noise", None)  # blur's drop on the noise input is missing
    table += [("faig", None, "jpeg", "blur", 9.0)]  # a row without a proportion: jpeg is still ranked
    got = targeted_other_drops(table, others="ranked")
    assert got == {("faig", 1.0, "blur"): (5.0, None), ("faig", 1.0, "noise"): (2.0, 4.0)}
