"""Benchmark 2: how close `tlkit.train.fit` with real data loading gets to the GPU's step ceiling.

Measured side by side in one run, full fine-tuning of EfficientNet-Lite0 on the animal silhouettes:
  ceiling   synthetic batches already on the device: fp32, bf16, bf16 + channels_last (the best is the ceiling);
  naive     the loop a beginner writes: fp32, the course dataset, DataLoader(num_workers=0), loss.item() per step;
  fit       tlkit's fit (bf16 autocast, channels_last) fed by a real DataLoader (workers, pinned memory), once with
            the course dataset (float images) and once shipping uint8 images that are normalised on the GPU.
Targets on a GPU: fit >= 85% of the ceiling and >= 2.5x the naive loop. On a CPU there is no fast mixed precision
and no channels_last gain, so the ceiling is fp32 and fit runs fp32 too: the CPU ratios only show how much the loop
itself (data loading, bookkeeping) costs, not what the GPU targets are about.

    .venv/bin/python -m bench.loop_efficiency                      # GPU: 224 px, batch 128
    .venv/bin/python -m bench.loop_efficiency --tiny               # CPU smoke run (seconds)
    .venv/bin/python -m bench.loop_efficiency --device cpu --image-size 64 --batch-size 32 --steps 10 --warmup-steps 2 --train-images 1000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.common import add_common_args, command_line, machine_info, resolve_device, save_result, synchronize

NAME = "loop_efficiency"
MODEL_NAME = "efficientnet_lite0"


class UInt8Images(Dataset):
    """Silhouettes as uint8 (1, S, S) tensors: 12x fewer bytes through the DataLoader than normalised float RGB."""

    def __init__(self, images: Any, labels: Any, image_size: int) -> None:
        from tlkit.data.animals import resize_images

        self.pixels, self.labels = resize_images(images, image_size), torch.as_tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels[i], self.labels[i]


class NormalizeOnDevice(nn.Module):
    """uint8 grey batches (B, 1, S, S) -> float RGB in [-1, 1] on whatever device the batch is on (Lite0's input)."""

    def __init__(self, channels_last: bool = True) -> None:
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() / 127.5 - 1.0).expand(-1, 3, -1, -1)
        return x.contiguous(memory_format=self.memory_format)


def build_model(num_classes: int, device: torch.device) -> nn.Module:
    """A fresh pretrained Lite0 classifier, every layer trainable (full fine-tuning)."""
    from tlkit.models.vision import build_classifier

    return build_classifier(MODEL_NAME, num_classes=num_classes, device=device).train()


def ceiling(args: argparse.Namespace, device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> float:
    """Samples/s of bare training steps on one synthetic batch that already sits on the device."""
    model = build_model(10, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup_steps):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def naive_loop(train_set: Dataset, args: argparse.Namespace, device: torch.device) -> float:
    """Samples/s of the plain fp32 loop: default DataLoader, .to(device), loss.item() every step."""
    model = build_model(10, device)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    total = args.warmup_steps + args.steps
    done, start = 0, 0.0
    while done < total:
        for x, y in loader:
            if done == args.warmup_steps:
                synchronize(device)
                start = time.perf_counter()
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # what every progress print does
            done += 1
            if done == total:
                break
    synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def with_fit(model: nn.Module, train_set: Dataset, args: argparse.Namespace, device: torch.device) -> float:
    """Samples/s of tlkit's fit (amp where the device has it, channels_last on GPUs) on a real DataLoader."""
    from tlkit.train import fit

    workers = args.workers
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        prefetch_factor=4 if workers > 0 else None)
    steps = min(args.steps, len(loader))
    common = dict(lr=1e-4, device=device, amp=None, channels_last=device.type == "cuda", progress=False)  # fit defaults otherwise
    fit(model, loader, num_epochs=1, max_steps_per_epoch=args.warmup_steps, **common)  # starts the workers, tunes kernels
    epochs = -(-args.steps // steps)
    synchronize(device)
    start = time.perf_counter()
    fit(model, loader, num_epochs=epochs, max_steps_per_epoch=steps, **common)
    synchronize(device)
    return epochs * steps * args.batch_size / (time.perf_counter() - start)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags; --tiny shrinks everything to a seconds-long CPU run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for fit (default: min(8, CPU cores))")
    p.add_argument("--train-images", type=int, default=None, help="cap the training images (default: all)")
    p.add_argument("--tiny", action="store_true", help="CPU smoke size: 32 px, batch 4, 2 steps, 16 images")
    args = p.parse_args(argv)
    if args.tiny:
        args.image_size, args.batch_size, args.steps, args.warmup_steps, args.train_images = 32, 4, 2, 1, 16
        args.workers = 0 if args.workers is None else args.workers
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure ceiling, naive loop and fit side by side; save bench/results/loop_efficiency-<cpu|gpu>.json."""
    import os

    from tlkit.data.animals import AnimalImages, load_raw_animals

    args = parse_args(argv)
    device = resolve_device(args.device, args.threads)
    if args.workers is None:
        args.workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # for every variant alike
    torch.manual_seed(args.seed)
    images, labels = load_raw_animals()
    if args.train_images:
        images, labels = images[: args.train_images], labels[: args.train_images]
    float_set = AnimalImages(images, labels, image_size=args.image_size)  # the course dataset: float RGB items
    uint8_set = UInt8Images(images, labels, args.image_size)
    rates: dict[str, float] = {}
    for name, dtype, cl in (("ceiling_fp32", None, False), ("ceiling_bf16", torch.bfloat16, False),
                            ("ceiling_bf16_channels_last", torch.bfloat16, True)):
        if dtype is not None and device.type != "cuda":
            continue  # no fast bf16 on CPUs: nothing to measure
        rates[name] = ceiling(args, device, dtype, cl)
    rates["naive_fp32"] = naive_loop(float_set, args, device)
    rates["fit_float_items"] = with_fit(build_model(10, device), float_set, args, device)
    on_gpu = device.type == "cuda"  # channels_last pays off on tensor-core GPUs only
    rates["fit_uint8_items"] = with_fit(nn.Sequential(NormalizeOnDevice(on_gpu), build_model(10, device)), uint8_set, args, device)
    best_ceiling = max(v for k, v in rates.items() if k.startswith("ceiling"))
    best_fit = max(rates["fit_float_items"], rates["fit_uint8_items"])
    summary = {"ceiling": round(best_ceiling, 1), "fit_best": round(best_fit, 1),
               "fit_fraction_of_ceiling": round(best_fit / best_ceiling, 3),
               "fit_speedup_over_naive": round(best_fit / rates["naive_fp32"], 2)}
    summary["target_met"] = bool(summary["fit_fraction_of_ceiling"] >= 0.85 and summary["fit_speedup_over_naive"] >= 2.5)
    result = {"benchmark": NAME, "command": command_line(f"bench.{NAME}", argv), "machine": machine_info(device),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "device")},
              "samples_per_s": {k: round(v, 1) for k, v in rates.items()}, "summary": summary}
    for k, v in rates.items():
        print(f"{k:28s} {v:10.1f} samples/s")
    print(f"fit = {100 * summary['fit_fraction_of_ceiling']:.0f}% of the ceiling, {summary['fit_speedup_over_naive']:.2f}x the naive loop"
          + ("" if device.type == "cuda" else " (CPU: not the GPU targets; proves the script runs)"))
    print("saved", save_result(NAME, result, args.out))
    return result


if __name__ == "__main__":
    main()
