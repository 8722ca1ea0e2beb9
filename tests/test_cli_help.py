"""The commands as people expect: a short ``--help`` with examples and the config groups each command uses,
``--version``, and no traceback when stdout closes early (``--help | head -1``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import cli_env, run_cli

from faig_lightning import __version__

HYDRA_APPS = {"faig-train": "faig_lightning.train", "faig-attribute": "faig_lightning.attribute"}
DATA_TOOLS = {"faig-extract-subimages": "faig_lightning.data.subimages",
              "faig-make-evalset": "faig_lightning.data.make_eval_set", "faig-summarize": "faig_lightning.sweeps.cli"}


@pytest.mark.parametrize(("prog", "used", "unused"), [
    ("faig-train", ["model", "degradation", "stage", "data", "trainer", "logger", "attribution", "experiment"], []),
    ("faig-attribute", ["model", "degradation", "evalset@eval", "attribution", "logger"],
     ["stage", "trainer", "data", "experiment"]),
])
def test_help_is_short_with_examples_and_the_groups_the_command_uses(tmp_path, prog, used, unused):
    proc = run_cli(tmp_path, HYDRA_APPS[prog], "--help")
    lines = proc.stdout.splitlines()
    assert len(lines) < 40 and not proc.stderr.strip(), proc.stdout
    assert lines[0].startswith(f"{prog}: ")
    assert any(line.strip().startswith(f"{prog} ") and "=" in line for line in lines)  # an example command
    groups = {line.split(":")[0] for line in lines if ": " in line and not line.startswith((" ", prog))}
    assert set(used) <= groups and not set(unused) & groups, groups
    assert "model: " in proc.stdout and "srresnet_small" in proc.stdout  # a group's options
    assert "Powered by Hydra" not in proc.stdout and "== Config ==" not in proc.stdout
    assert not (tmp_path / "outputs").exists()  # help writes no run folder


@pytest.mark.parametrize("prog", ["faig-train", "faig-extract-subimages", "faig-summarize"])
def test_version_is_the_package_version(tmp_path, prog):
    proc = run_cli(tmp_path, {**HYDRA_APPS, **DATA_TOOLS}[prog], "--version")
    assert proc.stdout.strip() == f"{prog} {__version__}"


@pytest.mark.parametrize("prog", ["faig-train", "faig-extract-subimages", "faig-summarize"])
def test_help_into_a_closed_pipe_leaves_no_traceback(tmp_path, prog):
    """``prog --help | head -1`` where ``head`` has already gone: the write fails, the command ends quietly."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", {**HYDRA_APPS, **DATA_TOOLS}[prog], "--help"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path), timeout=300)
    finally:
        os.close(write_end)
    # 128 + SIGPIPE, like a Unix tool; argparse's --help (faig-summarize) swallows the failed write and exits 0
    assert proc.stderr == "" and proc.returncode == (0 if prog == "faig-summarize" else 141), proc.stderr
