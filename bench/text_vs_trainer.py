"""Benchmark 3: fine-tuning MiniLM with tlkit's fit against the Hugging Face `Trainer`, same data and settings.

Both start from the same weights (the same seeded new head), see the same tokenised tweets through the same
dynamic-padding collate, and use AdamW with the same lr, weight decay 0.01 (not on biases and LayerNorm, as the
Trainer does), gradient clipping at 1.0, 10% linear
warm-up then cosine decay, batch size and epochs; neither evaluates during training. Both final models are scored by
the same function on the same test tweets. Targets: accuracy within one point, fit's throughput >= the Trainer's.

    .venv/bin/python -m bench.text_vs_trainer                          # CPU default: 2,000 training tweets
    .venv/bin/python -m bench.text_vs_trainer --n-train 20000 --epochs 2   # GPU
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch

from bench.common import add_common_args, command_line, machine_info, resolve_device, save_result, timed, warm_up

NAME = "text_vs_trainer"
PRECISIONS = ("fp32", "tf32", "bf16")


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Tokenised train and test tweets (the course's de-duplicated, stratified splits) and the tokenizer."""
    from tlkit.data.tweets import load_tweets, tokenize_tweets
    from tlkit.models.text import load_text_tokenizer

    splits = load_tweets(n_train=args.n_train, val_size=args.val_size, test_size=args.test_size, seed=args.seed)
    tokenizer = load_text_tokenizer()
    return {"train": tokenize_tweets(splits.train, tokenizer, args.max_length),
            "test": tokenize_tweets(splits.test, tokenizer, args.max_length),
            "classes": splits.classes, "pad_id": tokenizer.pad_token_id}


def fresh_model(num_labels: int, seed: int, device: torch.device) -> torch.nn.Module:
    """MiniLM with a new classification head, seeded so both contenders start from identical weights."""
    from tlkit.models.text import build_text_classifier

    torch.manual_seed(seed)
    return build_text_classifier(num_labels=num_labels, device=device)


def test_accuracy(model: torch.nn.Module, data: dict[str, Any], args: argparse.Namespace, device: torch.device) -> float:
    """Accuracy on the test tweets, fp32, the same function for both contenders."""
    from tlkit.data.tweets import tweet_loader
    from tlkit.train import evaluate

    loader = tweet_loader(data["test"], batch_size=128, pad_token_id=data["pad_id"])
    return round(evaluate(model, loader, device=device, amp=False).accuracy, 4)


def warm_up_text(model: torch.nn.Module, data: dict[str, Any], args: argparse.Namespace, device: torch.device) -> float:
    """One untimed forward+backward on a real batch, so whichever contender runs first pays no start-up cost."""
    from tlkit.data.tweets import tweet_loader

    batch = next(iter(tweet_loader(data["train"], batch_size=args.batch_size, pad_token_id=data["pad_id"])))
    return warm_up(model, {k: v.to(device) for k, v in batch.items()}, device)


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as the Trainer builds them: no weight decay on biases and LayerNorm weights, `weight_decay` elsewhere."""
    no_decay = {f"{m}.{n}" if m else n for m, mod in model.named_modules() if isinstance(mod, torch.nn.LayerNorm)
                for n, _ in mod.named_parameters(recurse=False)}
    groups: dict[bool, list] = {True: [], False: []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[name in no_decay or "bias" in name or "norm" in name.lower()].append(param)
    return [{"params": groups[False], "weight_decay": weight_decay}, {"params": groups[True], "weight_decay": 0.0}]


def run_tlkit(data: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """fit with the shared settings (amp only when precision is bf16; weight decay grouped as the Trainer does)."""
    from tlkit.data.tweets import tweet_loader
    from tlkit.train import fit

    model = fresh_model(len(data["classes"]), args.seed, device)
    loader = tweet_loader(data["train"], batch_size=args.batch_size, shuffle=True, pad_token_id=data["pad_id"], seed=args.seed)
    times: dict[str, float] = {}
    with timed(times, "train", device):
        fit(model, loader, num_epochs=args.epochs, lr=args.lr, device=device, param_groups=decay_groups(model, 0.01), schedule="cosine",
            warmup_frac=0.1, amp=args.precision == "bf16", grad_clip=1.0, progress=False, seed=args.seed)
    return {**times, "test_accuracy": test_accuracy(model, data, args, device)}


def run_trainer(data: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """transformers.Trainer with the same settings (no evaluation, no checkpoints, no logging during training)."""
    from transformers import Trainer, TrainingArguments

    from tlkit.data.tweets import PadCollate

    model = fresh_model(len(data["classes"]), args.seed, device)
    steps = -(-len(data["train"]) // args.batch_size) * args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
            learning_rate=args.lr, weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="cosine",
            warmup_steps=round(0.1 * steps), optim="adamw_torch", eval_strategy="no", save_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed, dataloader_num_workers=0,
            use_cpu=device.type == "cpu", bf16=args.precision == "bf16", tf32=(args.precision == "tf32") or None)
        trainer = Trainer(model=model, args=training_args, train_dataset=data["train"], data_collator=PadCollate(data["pad_id"]))
        times: dict[str, float] = {}
        with timed(times, "train", device):
            trainer.train()
    return {**times, "test_accuracy": test_accuracy(model, data, args, device)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Shared settings for both contenders."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=500, help="held out (unused here, keeps the course's split)")
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default: fp32 on CPU, tf32 on GPU (bf16 is slower for MiniLM)")
    p.add_argument("--order", choices=("tlkit-first", "trainer-first"), default="trainer-first")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both fine-tunes, one after the other; save bench/results/text_vs_trainer-<cpu|gpu>.json."""
    args = parse_args(argv)
    device = resolve_device(args.device, args.threads)
    args.precision = args.precision or ("tf32" if device.type == "cuda" else "fp32")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    data = prepare(args)
    warm_up_s = warm_up_text(fresh_model(len(data["classes"]), args.seed, device), data, args, device)
    runners = [("trainer", run_trainer), ("tlkit", run_tlkit)]
    if args.order == "tlkit-first":
        runners.reverse()
    runs = {name: run(data, args, device) for name, run in runners}
    n = len(data["train"]) * args.epochs
    for r in runs.values():
        r["samples_per_s"] = round(n / r["train_s"], 1)
    summary = {"throughput_ratio": round(runs["tlkit"]["samples_per_s"] / runs["trainer"]["samples_per_s"], 3),
               "cpu_time_ratio": round(runs["trainer"]["train_cpu_s"] / max(runs["tlkit"]["train_cpu_s"], 1e-9), 3),
               "accuracy_diff_points": round(100 * (runs["tlkit"]["test_accuracy"] - runs["trainer"]["test_accuracy"]), 2)}
    summary["target_met"] = bool(summary["throughput_ratio"] >= 1.0 and abs(summary["accuracy_diff_points"]) <= 1.0)
    result = {"benchmark": NAME, "command": command_line(f"bench.{NAME}", argv), "machine": machine_info(device),
              "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "device")},
                           "train_examples": len(data["train"]), "test_examples": len(data["test"])},
              "warm_up_s": warm_up_s, "runs": runs, "summary": summary}
    for name, r in runs.items():
        print(f"{name:8s}: {r['train_s']:7.1f} s, {r['samples_per_s']:7.1f} samples/s, test accuracy {r['test_accuracy']:.4f}")
    print(f"fit/Trainer throughput {summary['throughput_ratio']:.2f}x, accuracy {summary['accuracy_diff_points']:+.1f} points; "
          f"target {'met' if summary['target_met'] else 'NOT met'}")
    print("saved", save_result(NAME, result, args.out))
    return result


if __name__ == "__main__":
    main()
