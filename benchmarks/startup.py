"""Start-up cost of each command: the import time of its module next to ``import torch, pytorch_lightning``.

Every command imports only what it needs (W&B, plots and the DataModule load when used); the training and
attribution commands cannot start without torch and, through it, torchmetrics (its PSNR/SSIM), so the reference
is ``import torch, pytorch_lightning`` in a fresh interpreter (1.0x). Each row is the median wall time of
``--repeats`` fresh interpreters, timed inside the interpreter around the import, with the packages it loaded
that the reference does not.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

REFERENCE = "torch, pytorch_lightning"
COMMANDS = [
    ("faig-train", "faig_lightning.train"),
    ("faig-attribute", "faig_lightning.attribute"),
    ("faig-summarize", "faig_lightning.sweeps.cli"),
    ("faig-make-evalset", "faig_lightning.data.make_eval_set"),
    ("faig-extract-subimages", "faig_lightning.data.subimages"),
]
PROBE = """
import json, sys, time
t = time.perf_counter()
import {module}
seconds = time.perf_counter() - t
print(json.dumps({{"seconds": seconds, "packages": sorted({{m.split(".")[0] for m in sys.modules}})}}))
"""


def import_time(module: str, repeats: int) -> tuple[float, set[str]]:
    """Median seconds to import ``module`` in a fresh interpreter, and the top-level packages it loaded."""
    times, packages = [], set()
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                             check=True).stdout
        record = json.loads(out.strip().splitlines()[-1])
        times.append(record["seconds"])
        packages = set(record["packages"])
    return statistics.median(times), packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per row (the median is shown)")
    args = parser.parse_args()
    reference, base = import_time(REFERENCE, args.repeats)
    print(f"| command | module | import (s) | vs import {REFERENCE} | packages beyond the reference |")
    print("|---|---|---|---|---|")
    print(f"| (reference) | `import {REFERENCE}` | {reference:.2f} | 1.00x | |")
    for command, module in COMMANDS:
        seconds, packages = import_time(module, args.repeats)
        extra = sorted(p for p in packages - base if not p.startswith("_") and p != "faig_lightning")
        print(f"| `{command}` | `{module}` | {seconds:.2f} | {seconds / reference:.2f}x | {', '.join(extra)} |")


if __name__ == "__main__":
    main()
