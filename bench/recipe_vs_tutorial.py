"""Benchmark 1: tlkit's recommended recipe against the PyTorch transfer-learning tutorial, in both regimes.

The tutorial ("Transfer Learning for Computer Vision", pytorch.org/tutorials), re-implemented on the course's
default data (animal silhouettes) and backbone (EfficientNet-Lite0): SGD lr 0.001 momentum 0.9, StepLR(7, 0.1),
25 epochs, batch 4, RandomResizedCrop + flip, the backbone recomputed every epoch, a validation pass every epoch
and the best validation epoch kept. (a) fixed feature extractor: only the new head learns; (b) full fine-tuning.

tlkit's recipe on the same split: (a) features computed once (tlkit.features), a head trained on them with fit;
(b) that cached-feature head as a warm start, then every weight unfrozen except BatchNorm, which keeps its pretrained
statistics (the head was trained on features made with them; 20 images per class cannot re-estimate them), with
discriminative learning rates (tlkit.freeze.param_groups), one-cycle and mixed precision on GPUs (fit), a few epochs.
Wall time counts training, feature extraction and per-epoch validation; the test pass is timed separately.
--seeds 0 1 2 repeats everything per seed (a different draw of the training images) and reports the means.

    .venv/bin/python -m bench.recipe_vs_tutorial                       # CPU-sized defaults (documented subset)
    .venv/bin/python -m bench.recipe_vs_tutorial --threads 1 --seeds 0 1 2   # what RESULTS.md reports on CPU
    .venv/bin/python -m bench.recipe_vs_tutorial --images-per-class 100 --image-size 224   # GPU
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from bench.common import add_common_args, command_line, machine_info, resolve_device, save_result, synchronize, timed, warm_up

NAME = "recipe_vs_tutorial"
MODEL_NAME = "efficientnet_lite0"
REGIMES = ("features", "finetune")
BATCHNORM_PARAMS = r"\.bn\d\."  # timm EfficientNet names its BatchNorm layers bn1, bn2, bn3


# ----------------------------------------------------------------------------------------------- data
class Transformed(Dataset):
    """A dataset whose inputs pass through `transform` (the tutorial's torchvision-style augmentation)."""

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[i]
        return self.transform(x), y


def tutorial_transforms(image_size: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The tutorial's transforms at `image_size` (it uses 224): RandomResizedCrop + flip; Resize(x256/224) + CenterCrop."""
    from torchvision.transforms import v2

    return {
        "train": v2.Compose([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]),
        "eval": v2.Compose([v2.Resize(round(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]),
    }


def per_class_subset(dataset: Any, k: int | None, seed: int) -> Dataset:
    """`k` examples of every class of an AnimalImages split (all of them when k is None)."""
    from tlkit.data.splits import k_per_class

    return dataset if k is None else Subset(dataset, k_per_class(dataset.labels, k, seed=seed).tolist())


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    """Train (k per class), val and test splits of the silhouettes at the benchmark's resolution."""
    from tlkit.data.animals import AnimalImages, load_animals

    splits = load_animals(k_per_class=args.images_per_class, image_size=args.image_size, seed=args.seed)
    train = splits.train
    return {
        "train": train,
        "train_augmented": AnimalImages(train.images, train.labels, image_size=args.image_size, augment=True),
        "val": per_class_subset(splits.val, args.val_per_class, seed=1),
        "test": per_class_subset(splits.test, args.test_per_class, seed=2),
        "classes": splits.classes,
    }


def loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, device: torch.device, seed: int = 0) -> DataLoader:
    """A DataLoader; seeded shuffling, pinned memory on GPUs."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=generator,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)


# ----------------------------------------------------------------------------------------------- the tutorial
def tutorial_train_model(model: nn.Module, loaders: dict[str, DataLoader], optimizer: torch.optim.Optimizer,
                         scheduler: Any, num_epochs: int, device: torch.device) -> tuple[nn.Module, list[dict]]:
    """The tutorial's `train_model`: a train and a val phase per epoch, StepLR per epoch, best val weights kept."""
    criterion = nn.CrossEntropyLoss()
    best_acc, best_state, log, start = -1.0, copy.deepcopy(model.state_dict()), [], time.perf_counter()
    for epoch in range(num_epochs):
        row: dict[str, float] = {"epoch": epoch + 1}
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            running_loss, running_corrects, n = 0.0, 0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    preds = outputs.argmax(1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += int((preds == labels).sum())
                n += inputs.size(0)
            if phase == "train":
                scheduler.step()
            row[f"{phase}_loss"], row[f"{phase}_accuracy"] = running_loss / n, running_corrects / n
            if phase == "val" and row["val_accuracy"] > best_acc:
                best_acc, best_state = row["val_accuracy"], copy.deepcopy(model.state_dict())
        synchronize(device)
        row["elapsed"] = time.perf_counter() - start
        log.append(row)
    model.load_state_dict(best_state)
    return model, log


def run_tutorial(regime: str, data: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The tutorial's recipe for `regime` ("features": frozen backbone, "finetune": everything trains)."""
    from tlkit.device import seed_everything
    from tlkit.models.vision import build_classifier

    seed_everything(args.seed)
    tf = tutorial_transforms(args.image_size)
    loaders = {"train": loader(Transformed(data["train"], tf["train"]), 4, True, args.workers, device, args.seed),
               "val": loader(Transformed(data["val"], tf["eval"]), 4, False, args.workers, device)}
    model = build_classifier(MODEL_NAME, num_classes=len(data["classes"]), device=device)
    if regime == "features":
        for p in model.backbone.parameters():  # the tutorial's freezing loop; model.train() still updates BN statistics
            p.requires_grad = False
        params = model.head.parameters()
    else:
        params = model.parameters()
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    times: dict[str, float] = {}
    with timed(times, "train", device):
        model, log = tutorial_train_model(model, loaders, optimizer, scheduler, args.epochs, device)
    test = loader(Transformed(data["test"], tf["eval"]), 64, False, args.workers, device)
    return {**times, **test_accuracy(model, test, device, amp=False), "epochs": args.epochs, "batch_size": 4, "log": log}


# ----------------------------------------------------------------------------------------------- tlkit
def cached_features(backbone: nn.Module, datasets: dict[str, Dataset], args: argparse.Namespace, device: torch.device) -> dict[str, tuple]:
    """Backbone features of each dataset, computed once (no disk cache: the benchmark times a first run)."""
    from tlkit.features import extract_features

    return {name: extract_features(backbone, loader(ds, args.batch_size, False, args.workers, device), device=device, progress=False)
            for name, ds in datasets.items()}


def train_head(head: nn.Module, feats: dict[str, tuple], args: argparse.Namespace, device: torch.device) -> Any:
    """Train `head` on cached (features, labels) with fit: AdamW, one-cycle, a few hundred tiny steps."""
    from tlkit.features import features_loader
    from tlkit.train import fit

    return fit(head, features_loader(*feats["train"], batch_size=args.batch_size, shuffle=True),
               features_loader(*feats["val"], batch_size=256), num_epochs=args.head_epochs, lr=args.head_lr,
               device=device, progress=False, seed=args.seed)


def run_tlkit(regime: str, data: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """tlkit's recipe: cached features + head; for "finetune" then unfreeze, discriminative lrs, one-cycle, amp.

    With --finetune-bn frozen (the default) every weight trains but BatchNorm keeps its pretrained statistics and
    affine parameters (tlkit.freeze.freeze_matching on the BN layers): the head was trained on features computed
    with those statistics, and 20 images per class are too few to re-estimate them.
    """
    from tlkit.device import seed_everything
    from tlkit.freeze import freeze_matching, param_groups, unfreeze
    from tlkit.models.vision import build_classifier
    from tlkit.train import fit

    seed_everything(args.seed)
    model = build_classifier(MODEL_NAME, num_classes=len(data["classes"]), device=device)
    times: dict[str, float] = {}
    history = None
    with timed(times, "train", device):
        feats = cached_features(model.backbone, {"train": data["train"], "val": data["val"]}, args, device)
        head_history = train_head(model.head, feats, args, device)
        if regime == "finetune":
            unfreeze(model)
            if args.finetune_bn == "frozen":
                freeze_matching(model, BATCHNORM_PARAMS)
            groups = param_groups(model, lr=slice(args.lr / args.lr_spread, args.lr))
            history = fit(model, loader(data["train_augmented"], args.batch_size, True, args.workers, device, args.seed),
                          loader(data["val"], 256, False, args.workers, device), num_epochs=args.tlkit_epochs, lr=args.lr,
                          param_groups=groups, schedule="onecycle", amp=None, channels_last=device.type == "cuda",
                          loss_fn=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
                          device=device, progress=False, seed=args.seed)
    test = loader(data["test"], 256, False, args.workers, device)
    out = {**times, **test_accuracy(model, test, device, amp=None), "batch_size": args.batch_size,
           "head_epochs": args.head_epochs, "head_val_accuracy": head_history.val_accuracy[-1]}
    if history is not None:
        out.update(epochs=args.tlkit_epochs, val_accuracy=history.val_accuracy, epoch_time=history.epoch_time,
                   lr_groups=len(groups), lr_range=[args.lr / args.lr_spread, args.lr])
    return out


def test_accuracy(model: nn.Module, test_loader: DataLoader, device: torch.device, amp: bool | None) -> dict[str, float]:
    """Test accuracy (tlkit.train.evaluate) and how long the test pass took."""
    from tlkit.train import evaluate

    times: dict[str, float] = {}
    with timed(times, "test", device):
        result = evaluate(model, test_loader, device=device, amp=amp)
    return {"test_accuracy": round(result.accuracy, 4), **times}


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None, device_hint: torch.device | None = None) -> argparse.Namespace:
    """Command-line flags; the defaults are the CPU subset (GPU runs pass bigger sizes)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--images-per-class", type=int, default=20, help="labelled training images per class (default 20)")
    p.add_argument("--val-per-class", type=int, default=10, help="validation images per class (default 10; 0 = all)")
    p.add_argument("--test-per-class", type=int, default=0, help="test images per class (default 0 = all ~97)")
    p.add_argument("--image-size", type=int, default=64, help="input resolution (default 64: the silhouettes are 28x28)")
    p.add_argument("--epochs", type=int, default=25, help="the tutorial's epochs (default 25, as in the tutorial)")
    p.add_argument("--tlkit-epochs", type=int, default=4, help="tlkit's fine-tuning epochs after the head warm-up")
    p.add_argument("--head-epochs", type=int, default=30, help="epochs of the head on cached features (cheap)")
    p.add_argument("--head-lr", type=float, default=3e-3)
    p.add_argument("--lr", type=float, default=1e-3, help="tlkit's peak lr (the head's); the stem gets lr / lr-spread")
    p.add_argument("--lr-spread", type=float, default=100.0)
    p.add_argument("--finetune-bn", choices=("frozen", "train"), default="frozen",
                   help="BatchNorm while fine-tuning: keep the pretrained statistics (default) or let them update")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="tlkit's fine-tuning loss (default 0: none)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run every recipe once per seed (training images and init order) and report means; default: --seed")
    p.add_argument("--batch-size", type=int, default=32, help="tlkit's batch size (the tutorial's is 4)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 0 on CPU, 4 on GPU)")
    p.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    args = p.parse_args(argv)
    args.val_per_class = args.val_per_class or None
    args.test_per_class = args.test_per_class or None
    return args


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per regime: speed-up (tutorial time / tlkit time) and accuracy gain (tlkit - tutorial, points); targets met?"""
    out = {}
    for regime in REGIMES:
        tut, tl = runs.get(f"tutorial_{regime}"), runs.get(f"tlkit_{regime}")
        if tut and tl:
            speedup = tut["train_s"] / max(tl["train_s"], 1e-9)
            cpu_speedup = tut["train_cpu_s"] / max(tl["train_cpu_s"], 1e-9)
            gain = 100 * (tl["test_accuracy"] - tut["test_accuracy"])
            out[regime] = {"speedup": round(speedup, 2), "cpu_time_speedup": round(cpu_speedup, 2),
                           "accuracy_gain_points": round(gain, 2),
                           "target_met": bool(speedup >= 5 and gain >= 0)}
    return out


MEAN_KEYS = ("train_s", "train_cpu_s", "test_accuracy", "test_s", "test_cpu_s")


def mean_over_seeds(by_seed: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One run per recipe: times and accuracy averaged over seeds, other fields (logs) from the first seed."""
    seeds = list(by_seed)
    out = {}
    for name, first in by_seed[seeds[0]].items():
        merged = dict(first)
        for key in MEAN_KEYS:
            merged[key] = round(float(np.mean([by_seed[s][name][key] for s in seeds])), 4)
        merged["seeds"] = [int(s) for s in seeds]
        merged["per_seed"] = {key: [by_seed[s][name][key] for s in seeds] for key in ("train_s", "test_accuracy")}
        out[name] = merged
    return out


def summarise_seeds(by_seed: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """summarise() of the seed means, with each seed's own verdict beside it (does one seed decide it?)."""
    summary = summarise(mean_over_seeds(by_seed))
    for regime, s in summary.items():
        per_seed = [summarise(runs)[regime] for runs in by_seed.values()]
        s["seeds"] = [int(k) for k in by_seed]
        s["per_seed"] = [{k: v[k] for k in ("speedup", "accuracy_gain_points", "target_met")} for v in per_seed]
        s["same_verdict_every_seed"] = len({v["target_met"] for v in per_seed}) == 1
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen regimes, tutorial then tlkit, per seed; save bench/results/recipe_vs_tutorial-<cpu|gpu>.json.

    The file is rewritten after every seed, so an interrupted run keeps the seeds it finished.
    """
    args = parse_args(argv)
    device = resolve_device(args.device, args.threads)
    if args.workers is None:
        args.workers = 4 if device.type == "cuda" else 0
    seeds = args.seeds or [args.seed]
    result: dict[str, Any] = {"benchmark": NAME, "command": command_line(f"bench.{NAME}", argv), "machine": machine_info(device),
                              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "device", "seed")} | {"seeds": seeds}}
    from tlkit.models.vision import build_classifier

    result["warm_up_s"] = warm_up(build_classifier(MODEL_NAME, num_classes=10), torch.zeros(4, 3, args.image_size, args.image_size), device)
    by_seed: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        args.seed = seed
        data = load_data(args)
        result["settings"]["split_sizes"] = {k: len(data[k]) for k in ("train", "val", "test")}
        runs: dict[str, Any] = {}
        for regime in args.regimes:
            for who, run in (("tutorial", run_tutorial), ("tlkit", run_tlkit)):
                runs[f"{who}_{regime}"] = run(regime, data, args, device)
                r = runs[f"{who}_{regime}"]
                print(f"seed {seed} {who:8s} {regime:8s}: train {r['train_s']:8.1f} s, test accuracy {r['test_accuracy']:.4f}", flush=True)
        by_seed[str(seed)] = runs
        result["runs"], result["summary"], result["runs_by_seed"] = mean_over_seeds(by_seed), summarise_seeds(by_seed), by_seed
        path = save_result(NAME, result, args.out)
    for regime, s in result["summary"].items():
        print(f"{regime} (mean of seeds {seeds}): tlkit is {s['speedup']:.1f}x faster (CPU time {s['cpu_time_speedup']:.1f}x), "
              f"accuracy {s['accuracy_gain_points']:+.1f} points (target >= 5x and >= +0: {'met' if s['target_met'] else 'NOT met'}; "
              f"{'same verdict for every seed' if s['same_verdict_every_seed'] else 'the seeds disagree'})")
    print("saved", path)
    return result


if __name__ == "__main__":
    main()
