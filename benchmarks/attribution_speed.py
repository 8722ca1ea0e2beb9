"""Speed and accuracy of the FAIG engine against a naive re-run of the official pipeline.

(a) naive: what the official code does — per direction (blur-vs-noise, then noise-vs-blur), per image, per
    degradation, per step: ``load_state_dict`` of the interpolated weights, forward, ``.backward()``; every
    gradient is computed twice;
(b) the engine with ``rule="official"`` and the same steps (each gradient once);
(c) the engine with ``rule="gauss_legendre"`` at a few node counts.

Printed per run: wall and CPU time, speed-up over (a), max |score - naive| / max |naive| (eq. 7 scores, both
directions), top-1 % overlap with the naive 100-step official ranking and with the converged integral
(Gauss-Legendre with many nodes), and the completeness gap.

Default: a random MSRResNet pair (num_feat 32, 4 blocks; target = baseline + 10 % noise) and 128x128 centre
crops of 3 photos bundled with scikit-image (blur sigma 2 / noise 0.1 as in the paper), ~2 min on 2 CPU cores.
Random nets say little about ranking agreement on trained ones; rerun on trained models with
``--baseline b.pth --target t.pth --num-feat 64 --num-block 16 [--eval-dir DIR]`` where the checkpoints are
BasicSR-style ``{"params_ema": state_dict}`` (or ``"params"``, or a bare state dict) and DIR holds ``gt/``,
``blur/`` and ``noise/`` PNGs with matching names.

Run from the repository root: ``PYTHONPATH=. python benchmarks/attribution_speed.py``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import kornia
import numpy as np
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from faig_lightning.attribution import compute_faig, ranking
from faig_lightning.attribution.functional import tf32_allowed
from faig_lightning.attribution.proportions import top_k
from faig_lightning.nets import MSRResNet, SRCNNStyle

DIRECTIONS = (("blur", "noise"), ("noise", "blur"))
SAMPLE_IMAGES = ("astronaut", "coffee", "chelsea", "rocket")


def load_state(path: str) -> dict[str, torch.Tensor]:
    """State dict from a BasicSR checkpoint (``params_ema`` preferred, then ``params``) or a bare state dict."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params"):
        if key in ckpt:
            return ckpt[key]
    return ckpt


def build_nets(args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    """Baseline and target: loaded from checkpoints, or a seeded random pair."""

    def make() -> nn.Module:
        if args.arch == "msrresnet":
            return MSRResNet(scale=args.scale, num_feat=args.num_feat, num_block=args.num_block)
        return SRCNNStyle(scale=args.scale)

    torch.manual_seed(args.seed)
    baseline, target = make(), make()
    if args.baseline:
        baseline.load_state_dict(load_state(args.baseline))
        target.load_state_dict(load_state(args.target))
    else:
        target.load_state_dict(baseline.state_dict())
        with torch.no_grad():
            for p in target.parameters():
                p.add_(args.perturbation * torch.randn_like(p) * p.abs().mean())
    return baseline.eval(), target.eval()


def degrade(gt: torch.Tensor, scale: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The paper's test inputs of a (1, 3, H, W) GT: blur (k 21, sigma 2) or noise (sigma 0.1), bilinear, 8-bit."""

    def down(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)

    blur = down(kornia.filters.gaussian_blur2d(gt, (21, 21), (2.0, 2.0), border_type="reflect"))
    noise = down(gt) + 0.1 * torch.randn(down(gt).shape, generator=gen)
    return {d: torch.round(x.clamp(0, 1) * 255) / 255 for d, x in (("blur", blur), ("noise", noise))}


def sample_eval_set(num: int, size: int, scale: int, seed: int) -> list[dict]:
    """Centre crops of scikit-image's bundled photos (astronaut, coffee, chelsea, rocket) with both degradations."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for name in SAMPLE_IMAGES[:num]:
        photo = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
        top, left = (photo.shape[1] - size) // 2, (photo.shape[2] - size) // 2
        gt = photo[None, :, top : top + size, left : left + size]
        items.append({"name": name, "gt": gt[0], "lq": {d: x[0] for d, x in degrade(gt, scale, gen).items()}})
    return items


def folder_eval_set(root: str, limit: int) -> list[dict]:
    """``root/{gt,blur,noise}/NAME.png`` triples (first ``limit`` names)."""

    def read(path: Path) -> torch.Tensor:
        return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)

    names = sorted(p.name for p in (Path(root) / "gt").glob("*.png"))[:limit]
    return [
        {"name": n, "gt": read(Path(root) / "gt" / n), "lq": {d: read(Path(root) / d / n) for d in ("blur", "noise")}}
        for n in names
    ]


def naive_official(baseline: nn.Module, target: nn.Module, eval_set: list[dict], steps: int) -> dict[str, np.ndarray]:
    """The official pipeline's work: eq. 7 summed over images, one direction at a time."""
    net = copy.deepcopy(target).eval()
    b_sd, t_sd = baseline.state_dict(), target.state_dict()
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    diff = {name: b_sd[f"{name}.weight"] - t_sd[f"{name}.weight"] for name, _ in convs}

    def faig_single(x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        total = {name: torch.zeros_like(m.weight) for name, m in convs}
        for s in range(steps):
            a = s / steps
            net.load_state_dict({k: a * b_sd[k] + (1 - a) * t_sd[k] for k in t_sd})
            net.zero_grad()
            loss = nn.MSELoss(reduction="sum")(gt, net(x))
            loss.backward()
            for name, m in convs:
                total[name] += m.weight.grad
        return torch.cat([(total[n] * diff[n] / steps).abs().sum(dim=(2, 3)).flatten() for n, _ in convs])

    out = {}
    for first, second in DIRECTIONS:
        score = 0
        for item in eval_set:
            gt = item["gt"][None]
            score = score + faig_single(item["lq"][first][None], gt) - faig_single(item["lq"][second][None], gt)
        out[first] = score.numpy()
    return out


def top1(scores: np.ndarray) -> set[int]:
    return set(ranking(torch.from_numpy(np.ascontiguousarray(scores)))[: top_k(len(scores), 1)].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="baseline checkpoint (.pth); default: random nets")
    parser.add_argument("--target", help="target checkpoint (.pth)")
    parser.add_argument("--arch", choices=["msrresnet", "srcnn"], default="msrresnet")
    parser.add_argument("--num-feat", type=int, default=32)
    parser.add_argument("--num-block", type=int, default=4)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--perturbation", type=float, default=0.1, help="random target: relative weight change")
    parser.add_argument("--eval-dir", help="folder with gt/, blur/, noise/ PNGs; default: scikit-image sample photos")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="GT crop size of the bundled sample photos")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--gl-nodes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument(
        "--converged-nodes", type=int, default=64, help="Gauss-Legendre nodes of the 'converged integral' reference"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if bool(args.baseline) != bool(args.target):
        parser.error("give both --baseline and --target, or neither")
    torch.set_num_threads(args.threads)

    baseline, target = build_nets(args)
    eval_set = (
        folder_eval_set(args.eval_dir, args.images)
        if args.eval_dir
        else sample_eval_set(args.images, args.size, args.scale, args.seed)
    )
    n_img = len(eval_set)
    sizes = sorted({tuple(it["gt"].shape[1:]) for it in eval_set})
    print(f"nets: {'checkpoints' if args.baseline else 'random'} {args.arch}; {n_img} images {sizes}")
    print(f"threads {torch.get_num_threads()}; official steps {args.steps}")

    t0, c0 = time.perf_counter(), time.process_time()
    naive = naive_official(baseline, target, eval_set, args.steps)
    naive_wall, naive_cpu = time.perf_counter() - t0, time.process_time() - c0
    reference = {d: naive[d] / n_img for d in naive}  # the engine averages over images; the ranking is the same
    ref_top = {d: top1(s) for d, s in reference.items()}

    converged = compute_faig(
        baseline, target, eval_set, scale=args.scale, steps=args.converged_nodes, rule="gauss_legendre"
    )
    conv_top = {d: top1(s) for d, s in converged.discriminative.items()}

    def overlap(scores: dict[str, np.ndarray], tops: dict[str, set[int]]) -> float:
        return min(len(top1(scores[d]) & tops[d]) / len(tops[d]) for d in tops)

    rows = [
        ("(a) naive official", args.steps, naive_wall, naive_cpu, 0.0, 1.0, overlap(reference, conv_top), float("nan"),
         4 * n_img * args.steps)
    ]  # fmt: skip
    runs = [("official", args.steps)] + [("gauss_legendre", n) for n in args.gl_nodes]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # GPU rows: TF32 off, max_batch from memory
    for device, (rule, steps) in ((d, r) for d in devices for r in runs):
        t0, c0 = time.perf_counter(), time.process_time()
        with tf32_allowed(False):
            res = compute_faig(baseline, target, eval_set, scale=args.scale, steps=steps, rule=rule, device=device,
                               max_batch=1 if device == "cpu" else None)
        if device == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        err = max(np.abs(res.discriminative[d] - reference[d]).max() / np.abs(reference[d]).max() for d in reference)
        gap = max(c.gap for c in res.completeness.values())
        label = "(b) engine official" if rule == "official" else "(c) engine gauss_legendre"
        label = label if device == "cpu" else f"{label.replace('engine', 'GPU')}"
        ov_ref, ov_conv = overlap(res.discriminative, ref_top), overlap(res.discriminative, conv_top)
        rows.append((label, steps, wall, cpu, err, ov_ref, ov_conv, gap, res.gradient_evaluations))

    print(f"top-1 % = {len(next(iter(ref_top.values())))} of {len(reference['blur'])} filters")
    header = f"{'run':26s} {'steps':>5s} {'grads':>5s} {'wall s':>7s} {'cpu s':>7s} {'ms/grad':>7s} {'speed-up':>8s}"
    print(header + f" {'max rel err':>11s} {'top1% vs (a)':>12s} {'vs conv.':>8s} {'compl. gap':>10s}")
    for label, steps, wall, cpu, err, ov_ref, ov_conv, gap, grads in rows:
        print(
            f"{label:26s} {steps:5d} {grads:5d} {wall:7.1f} {cpu:7.1f} {1000 * wall / grads:7.1f} "
            f"{naive_wall / wall:7.1f}x {err:11.1e} "
            f"{ov_ref:12.3f} {ov_conv:8.3f} {gap:10.1e}"
        )
    print(
        "max rel err = max |score - naive| / max |naive| over both directions; top1% overlaps are the minimum over "
        f"both directions, vs (a) and vs the converged integral (Gauss-Legendre, {args.converged_nodes} nodes)."
    )


if __name__ == "__main__":
    main()
