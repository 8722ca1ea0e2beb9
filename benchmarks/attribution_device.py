"""FAIG on a GPU against the CPU: agreement (TF32 off and on), speed, the memory-based batch and ``steps="auto"``.

Rows, on the same random MSRResNet pair and photos (default: the paper's 64 features x 16 blocks, 3 photos with
480 px GT, blur sigma 2 / noise 0.1):

- CPU, Gauss-Legendre 8 nodes, one sample per call: the reference scores;
- GPU, the same rule, TF32 off (the engine's default) and on (PyTorch's default for convolutions), ``max_batch``
  from free memory: time, speed-up over the CPU row, max |score - CPU| / max |CPU| (eq. 7 scores) and top-1 %
  overlap with the CPU ranking;
- GPU, the official 100-step rule (the paper's setting), TF32 off;
- GPU, ``steps="auto"`` (the default): steps used, why it stopped, completeness gaps and their numerical floors.

Needs a CUDA device. Run from the repository root: ``PYTHONPATH=. python benchmarks/attribution_device.py``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from benchmarks.attribution_speed import sample_eval_set, top1
from faig_lightning.attribution import compute_faig
from faig_lightning.attribution.functional import tf32_allowed
from faig_lightning.nets import MSRResNet


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-feat", type=int, default=64)
    parser.add_argument("--num-block", type=int, default=16)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, default=480, help="GT crop size of the bundled sample photos")
    parser.add_argument("--perturbation", type=float, default=0.1)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    gpu = torch.device(args.device)
    torch.manual_seed(0)
    baseline = MSRResNet(scale=2, num_feat=args.num_feat, num_block=args.num_block).eval()
    target = MSRResNet(scale=2, num_feat=args.num_feat, num_block=args.num_block).eval()
    target.load_state_dict({k: v + args.perturbation * v.abs().mean() * torch.randn_like(v)
                            for k, v in baseline.state_dict().items()})
    eval_set = sample_eval_set(args.images, args.size, 2, 0)
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else str(gpu)
    print(f"MSRResNet {args.num_feat}x{args.num_block}, random pair; {len(eval_set)} images of {args.size}px GT; "
          f"{name}; CPU threads {torch.get_num_threads()}")

    def run(device: torch.device, tf32: bool = False, **kw):
        with tf32_allowed(tf32):
            return timed(lambda: compute_faig(baseline, target, eval_set, scale=2, device=device, **kw), device)

    cpu, cpu_s = run(torch.device("cpu"), steps=8, rule="gauss_legendre", max_batch=1)
    ref = cpu.discriminative
    run(gpu, steps=1, rule="gauss_legendre")  # warm-up: CUDA context, cuDNN autotuning
    rows = [("CPU, gauss_legendre 8, max_batch 1", cpu, cpu_s)]
    for tf32 in (False, True):
        res, sec = run(gpu, tf32, steps=8, rule="gauss_legendre")
        rows.append((f"GPU, gauss_legendre 8, TF32 {'on' if tf32 else 'off'}", res, sec))
    res, sec = run(gpu, steps=100, rule="official")
    rows.append(("GPU, official 100, TF32 off", res, sec))
    print(f"{'run':38s} {'max_batch':>9s} {'grads':>6s} {'time s':>7s} {'vs CPU':>7s} {'max rel err':>11s} "
          f"{'top-1 % overlap':>15s}")
    for label, res, sec in rows:
        err = max(np.abs(res.discriminative[d] - ref[d]).max() / np.abs(ref[d]).max() for d in ref)
        overlap = min(len(top1(res.discriminative[d]) & top1(ref[d])) / len(top1(ref[d])) for d in ref)
        note = "" if "official" not in label else "  (error/overlap vs GL 8: the rules differ)"
        print(f"{label:38s} {res.max_batch:9d} {res.gradient_evaluations:6d} {sec:7.2f} {cpu_s / sec:6.1f}x "
              f"{err:11.1e} {overlap:15.3f}{note}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto, sec = run(gpu, steps="auto")
    gaps = ", ".join(f"{d} {c.gap:.1e} (floor {c.floor:.1e})" for d, c in auto.completeness.items())
    print(f"GPU, steps=auto (default): {auto.steps} steps, stopped: {auto.stop_reason}, {sec:.2f} s; gaps {gaps}")
    for w in caught:
        print(f"  warning: {w.message}")


if __name__ == "__main__":
    main()
