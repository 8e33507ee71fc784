"""Benchmark: does tlkit.advisor's "how many layer groups to fine-tune" rule pick the best number? A check of heuristics.

For each dataset (animal silhouettes, a domain near ImageNet's shapes; ELPV solar cells, a far one) and each training
size (labelled images per class), the advisor sees what lesson 06 gives it: a layer-wise linear probe of pretrained
EfficientNet-Lite0, the number of labels per class and the domain similarity (pretrained vs random-weight probes).
It recommends N of the backbone's 9 layer groups. We then fine-tune the top N-1, N and N+1 groups (plus a new head)
with the same recipe and budget: the same optimizer steps, AdamW with the recommendation's discriminative learning
rates, BatchNorm frozen (its pretrained statistics kept, whatever is unfrozen: the advice of lessons 03 and 06), the
frozen lower groups computed once and cached. The recommendation "hits" when its mean test accuracy over seeds is the
best of the three or within one point of the best. The rules are heuristics; this measures how often they are right
on two datasets, not whether they are right for yours.

    .venv/bin/python -m bench.advisor_validation --threads 1                 # CPU sizes (what the results report)
    .venv/bin/python -m bench.advisor_validation --seeds 0 1 2 --steps 150 --image-size 96   # a GPU, or a quiet CPU with time
    .venv/bin/python -m bench.advisor_validation --datasets animals --sizes 10 --steps 10 --image-size 48   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import add_common_args, command_line, machine_info, resolve_device, save_result

NAME = "advisor_validation"
MODEL_NAME = "efficientnet_lite0"
DEFAULT_SIZES = {"animals": [10, 50, 200], "elpv": [20, 100, 400]}  # labelled training images per class
HIT_MARGIN = 0.01  # "within one point" of the best variant's test accuracy


# ----------------------------------------------------------------------------------------------- data
def _balanced_train(labels: np.ndarray, pool: np.ndarray, k: int, seed: int) -> np.ndarray:
    """`k` indices per class drawn (with `seed`) from the index array `pool`, sorted."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        members = pool[labels[pool] == c]
        if len(members) < k:
            raise ValueError(f"Only {len(members)} training images of class {c}; choose sizes of at most {len(members)} per class.")
        picks.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(picks))


def load_pool(name: str, image_size: int, max_eval_per_class: int) -> dict[str, Any]:
    """Images normalised to [-1, 1] as (N, 3, S, S), labels, and the fixed train pool / val / test index arrays."""
    if name == "animals":
        from tlkit.data.animals import AnimalImages, load_raw_animals, split_indices

        images, labels = load_raw_animals()
        idx = split_indices(labels, max_per_class=None)
        cap = lambda i: np.sort(np.concatenate([i[labels[i] == c][:max_eval_per_class] for c in np.unique(labels)]))
        keep = np.concatenate([idx["train"], cap(idx["val"]), cap(idx["test"])])
        x, _ = AnimalImages(images[keep], labels[keep], image_size=image_size).tensors()
        n_tr, n_va = len(idx["train"]), len(cap(idx["val"]))
        order = np.arange(len(keep))
        return {"x": x, "y": torch.as_tensor(labels[keep]).long(), "classes": 10,
                "train": order[:n_tr], "val": order[n_tr:n_tr + n_va], "test": order[n_tr + n_va:]}
    if name == "elpv":
        from tlkit.data.elpv import elpv_splits, load_elpv_arrays

        images, labels, _ = load_elpv_arrays(image_size=image_size, binary=True)
        idx = elpv_splits(labels, seed=0)
        x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None].repeat(1, 3, 1, 1) * 2 - 1  # grey [0,1] -> Lite0's [-1,1]
        return {"x": x, "y": torch.as_tensor(labels).long(), "classes": int(labels.max()) + 1,
                "train": np.asarray(idx["train"]), "val": np.asarray(idx["val"]), "test": np.asarray(idx["test"])}
    raise ValueError(f"Unknown dataset {name!r}; use 'animals' or 'elpv'.")


# ----------------------------------------------------------------------------------------------- model
def backbone_groups(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """Lite0's 9 backbone layer groups, input to output, named as tlkit.advisor.probe_layers names them."""
    return [("conv_stem+bn1", nn.Sequential(backbone.conv_stem, backbone.bn1)),
            *[(f"blocks.{i}", block) for i, block in enumerate(backbone.blocks)],
            ("conv_head+bn2", nn.Sequential(backbone.conv_head, backbone.bn2))]


class TopGroups(nn.Module):
    """Copies of the top `n` backbone groups plus a new linear head, trained on the cached output of the groups below."""

    def __init__(self, groups: list[tuple[str, nn.Module]], n: int, num_classes: int, width: int = 1280) -> None:
        super().__init__()
        chosen = groups[len(groups) - n:] if n else []
        self.names = [name for name, _ in chosen]
        self.stages = nn.ModuleList(copy.deepcopy(module) for _, module in chosen)
        self.head = nn.Linear(width, num_classes)

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """One tlkit layer group per copied backbone group, then the head (for tlkit.freeze.param_groups)."""
        return [*zip(self.names, self.stages), ("head", self.head)]

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            maps = stage(maps)
        return self.head(maps.mean(dim=(2, 3)) if maps.ndim == 4 else maps)


@torch.no_grad()
def lower_output(groups: list[tuple[str, nn.Module]], n: int, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """What the frozen groups below the top `n` output for images `x` (pooled when nothing above is trained)."""
    lower = nn.Sequential(*[m for _, m in groups[:len(groups) - n]]).eval().to(device)
    out = torch.cat([lower(xb.to(device)).cpu() for xb in x.split(128)])
    return out.mean(dim=(2, 3)) if n == 0 else out


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean recall over classes: plain accuracy on balanced sets, honest on ELPV's imbalanced test set."""
    pred = logits.argmax(1)
    return float(np.mean([(pred[labels == c] == c).float().mean().item() for c in labels.unique()]))


def fine_tune_top(groups: list, n: int, cached: dict[str, tuple], num_classes: int, lr: float | slice, args: argparse.Namespace,
                  device: torch.device, seed: int) -> dict[str, float]:
    """Train the top `n` groups + a head for `args.steps` steps (BatchNorm frozen); return val/test accuracy and seconds."""
    from tlkit.freeze import freeze_batchnorm, param_groups
    from tlkit.train import fit

    torch.manual_seed(seed)
    model = TopGroups(groups, n, num_classes)
    if n:
        freeze_batchnorm(model)  # keep the pretrained statistics whatever we unfreeze
    x_tr, y_tr = cached["train"]
    batch_size = min(args.batch_size, len(y_tr))  # tiny test runs: one batch of everything
    steps_per_epoch = len(y_tr) // batch_size
    epochs = max(1, round(args.steps / steps_per_epoch))
    train_loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=batch_size, shuffle=True, drop_last=True)
    start = time.perf_counter()
    groups_lr = param_groups(model, lr) if isinstance(lr, slice) else None
    fit(model, train_loader, num_epochs=epochs, lr=lr.stop if groups_lr else lr, param_groups=groups_lr, device=device,
        seed=seed, progress=False)
    seconds = time.perf_counter() - start
    out = {"train_s": round(seconds, 2), "epochs": epochs}
    for split in ("val", "test"):
        x, y = cached[split]
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(xb.to(device)).cpu() for xb in x.split(256)])
        out[f"{split}_acc"] = round(balanced_accuracy(logits, y), 4)
    return out


# ----------------------------------------------------------------------------------------------- one cell
def recommend(pool: dict[str, Any], train: np.ndarray, k: int, pretrained: nn.Module, random_init: nn.Module,
              device: torch.device) -> tuple[Any, float]:
    """The advisor's recommendation from a layer-wise probe on (train, val), as lesson 06 computes it."""
    from tlkit import advisor

    fit_idx = np.concatenate([train, pool["val"]])
    loader = DataLoader(TensorDataset(pool["x"][fit_idx], pool["y"][fit_idx]), batch_size=128)
    n = len(train)
    split = lambda f: (f[:n], pool["y"][train], f[n:], pool["y"][pool["val"]])
    blocks_pre, _ = advisor.block_features(pretrained, loader, device=device, progress=False)
    blocks_rand, _ = advisor.block_features(random_init, loader, device=device, progress=False)
    probe = advisor.layerwise_probe({name: split(f) for name, f in blocks_pre.items()})
    last = list(blocks_pre)[-1]
    sim = advisor.domain_similarity(float(probe.val_acc.iloc[-1]), advisor.linear_probe_accuracy(*split(blocks_rand[last]))[1])
    return advisor.recommend_finetuning(probe, k, sim, verbose=False), sim


def variant_lr(rec: Any, n: int) -> float | slice:
    """The recommendation's learning rates for `n` groups: its slice (or the advisor's close-domain 100x spread)."""
    from tlkit.advisor import HEAD_LR

    if n == 0:
        return HEAD_LR
    return rec.lr if isinstance(rec.lr, slice) else slice(HEAD_LR / 100, HEAD_LR)


def run_cell(pool: dict[str, Any], name: str, k: int, args: argparse.Namespace, device: torch.device,
             pretrained: nn.Module, random_init: nn.Module) -> dict[str, Any]:
    """Recommendation for (dataset, k), then fine-tunes of N-1, N, N+1 groups over the seeds; the verdict."""
    groups = backbone_groups(pretrained)
    first_train = _balanced_train(pool["y"].numpy(), pool["train"], k, args.seeds[0])
    rec, sim = recommend(pool, first_train, k, pretrained, random_init, device)
    n_rec = rec.n_unfreeze
    variants = [n for n in (n_rec - 1, n_rec, n_rec + 1) if 0 <= n <= len(groups)]
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in variants}
    for seed in args.seeds:
        train = _balanced_train(pool["y"].numpy(), pool["train"], k, seed)
        for n in variants:
            cached = {split: (lower_output(groups, n, pool["x"][idx], device), pool["y"][idx])
                      for split, idx in (("train", train), ("val", pool["val"]), ("test", pool["test"]))}
            r = fine_tune_top(groups, n, cached, pool["classes"], variant_lr(rec, n), args, device, seed)
            runs[n].append(r)
            print(f"{name} k={k} seed {seed}: {n} groups -> test {r['test_acc']:.3f} ({r['train_s']:.0f} s)", flush=True)
    mean_test = {n: float(np.mean([r["test_acc"] for r in rs])) for n, rs in runs.items()}
    best = max(mean_test, key=mean_test.get)
    return {
        "dataset": name, "per_class": k, "domain_similarity": round(sim, 3), "recommended": n_rec,
        "strategy": rec.strategy, "lr": str(rec.lr), "variants": variants,
        "mean_test_acc": {str(n): round(v, 4) for n, v in mean_test.items()}, "best": best,
        "gap_to_best_points": round(100 * (mean_test[best] - mean_test[n_rec]), 2),
        "is_best": best == n_rec, "hit": mean_test[best] - mean_test[n_rec] <= HIT_MARGIN + 1e-9,
        "runs": {str(n): rs for n, rs in runs.items()},
    }


# ----------------------------------------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    """The section for bench/RESULTS.md: one row per (dataset, size), the hit rate, and what it does not show."""
    cells, m, s = result["cells"], result["machine"], result["settings"]
    lines = ["## Advisor validation: how many layer groups to fine-tune", "",
             f"`tlkit.advisor.recommend_finetuning` is a set of heuristics (thresholds on labels per class, the probe's peak and "
             f"the domain similarity). For each dataset and size it recommended N of Lite0's 9 backbone groups; we fine-tuned "
             f"N-1, N and N+1 with the same recipe ({s['steps']} AdamW steps of batch {s['batch_size']}, the recommendation's "
             f"discriminative rates, BatchNorm frozen, {s['image_size']} px) and compared mean test accuracy (balanced: mean "
             f"recall per class) over seeds {s['seeds']}.", "",
             "| dataset | labels/class | similarity | recommended N | test acc N-1 / N / N+1 | best | N best? | within 1 point? |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        verdict = "yes" if c["hit"] else f"no ({c['gap_to_best_points']:.1f} points)"
        accs = " / ".join(f"{c['mean_test_acc'][str(n)]:.3f}" if str(n) in c["mean_test_acc"] else "-"
                          for n in (c["recommended"] - 1, c["recommended"], c["recommended"] + 1))
        lines.append(f"| {c['dataset']} | {c['per_class']} | {c['domain_similarity']:.2f} | {c['recommended']} | {accs} | "
                     f"{c['best']} | {'yes' if c['is_best'] else 'no'} | {verdict} |")
    hits, best = sum(c["hit"] for c in cells), sum(c["is_best"] for c in cells)
    more, fewer = sum(c["best"] > c["recommended"] for c in cells), sum(c["best"] < c["recommended"] for c in cells)
    direction = (f"Where it missed, training more groups was better in {more} case(s) and fewer in {fewer}. " if more + fewer else "")
    lines += ["", f"**The recommendation was the best of its neighbours in {best} of {len(cells)} cases and within one point "
              f"of the best in {hits} of {len(cells)}.** {direction}Where N = 0 there is no N-1: the row compares N and N+1 only. "
              f"Differences of a point or two are within seed noise at these sizes ({len(s['seeds'])} seed(s) here).", "",
              f"Machine: {m['cpu']}, {m['cpu_cores']} cores, torch threads {m['torch_threads']}, load average "
              f"{m['load_average_start']} at the start and {m.get('load_average_end')} at the end (shared with other "
              f"jobs: times are not quiet-machine times), {m['date']}; total {result['total_s'] / 60:.1f} min. "
              f"Reproduce: `{result['command']}`."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--datasets", nargs="+", default=["animals", "elpv"], choices=["animals", "elpv"])
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="labels per class (default: 10 50 200 animals, 20 100 400 ELPV)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="one by default: a shared 2-core CPU affords no more")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--eval-per-class", type=int, default=30, help="animals: val and test images per class")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per fine-tune, the same for every variant")
    p.add_argument("--batch-size", type=int, default=32)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Validate the advisor on every (dataset, size); save the JSON and the markdown section after each cell."""
    from tlkit.models.vision import load_image_backbone

    args = parse_args(argv)
    device = resolve_device(args.device, args.threads)
    result: dict[str, Any] = {"benchmark": NAME, "command": command_line(f"bench.{NAME}", argv), "machine": machine_info(device),
                              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "device", "seed")}, "cells": []}
    start = time.perf_counter()
    pretrained = load_image_backbone(MODEL_NAME, device=device)
    random_init = load_image_backbone(MODEL_NAME, pretrained=False, device=device)
    for name in args.datasets:
        pool = load_pool(name, args.image_size, args.eval_per_class)
        for k in args.sizes or DEFAULT_SIZES[name]:
            result["cells"].append(run_cell(pool, name, k, args, device, pretrained, random_init))
            result["total_s"] = round(time.perf_counter() - start, 1)
            cells = result["cells"]
            result["hit_rate"] = round(sum(c["hit"] for c in cells) / len(cells), 3)
            result["best_rate"] = round(sum(c["is_best"] for c in cells) / len(cells), 3)
            path = save_result(NAME, result, args.out)
            path.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print("saved", path)
    return result


if __name__ == "__main__":
    main()
