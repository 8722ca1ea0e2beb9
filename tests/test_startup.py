"""Import guard: each command loads only what it needs when it starts (``benchmarks/startup.py`` times it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = "import json, sys; import {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
HEAVY = ("wandb", "pytorch_lightning", "torch", "matplotlib", "scipy", "skimage", "kornia", "torchmetrics")


def loaded(module: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1])) & set(HEAVY)


@pytest.mark.parametrize("module, allowed", [
    # training and attribution need torch, and pytorch_lightning brings torchmetrics (and its matplotlib, scipy)
    ("faig_lightning.train", {"torch", "pytorch_lightning", "torchmetrics", "matplotlib", "scipy", "kornia",
                              "skimage"}),
    # attribution is plain torch: Lightning loads only when a W&B logger is built
    ("faig_lightning.attribute", {"torch", "torchmetrics", "matplotlib", "scipy", "kornia", "skimage"}),
    # the eval-set generator degrades with kornia on torch; the sub-image cutter only reads and writes images
    ("faig_lightning.data.make_eval_set", {"torch", "kornia", "skimage"}),
    ("faig_lightning.data.subimages", set()),
    # the sweep summary reads stored results and plots them
    ("faig_lightning.sweeps.cli", {"matplotlib"}),
])
def test_commands_import_only_what_they_need(module: str, allowed: set[str]) -> None:
    """W&B loads when a run logs to it, never at start; faig-attribute, the data tools and the sweep summary start
    without pytorch_lightning, the sub-image cutter and the sweep summary without torch."""
    assert loaded(module) <= allowed, loaded(module) - allowed


@pytest.mark.parametrize("package", ["faig_lightning.data", "faig_lightning.attribution"])
def test_lazy_packages_resolve_every_public_name(package: str) -> None:
    """Each name a package lists is importable from it and is what it names, also after every submodule was
    imported (a submodule sharing a name's spelling would otherwise take its place)."""
    code = (f"import importlib, inspect, pkgutil, {package} as p\n"
            "for m in pkgutil.iter_modules(p.__path__): importlib.import_module(f'{p.__name__}.{m.name}')\n"
            "wrong = [n for n in p.__all__ if getattr(p, n, None) is None or inspect.ismodule(getattr(p, n))]\n"
            "assert not wrong, wrong")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
