"""Run every benchmark in turn at the size that suits this machine, then the course timing, then the report.

    .venv/bin/python -m bench.run_all                 # `make bench`: CPU sizes on a CPU, GPU sizes on a GPU
    .venv/bin/python -m bench.run_all --only text_vs_trainer whisper_padding
    .venv/bin/python -m bench.run_all --course-modes smoke full
"""

from __future__ import annotations

import argparse
import importlib
import traceback

import torch

BENCHMARKS = ("recipe_vs_tutorial", "loop_efficiency", "text_vs_trainer", "whisper_padding", "ddp_check")
# Sizes per machine kind. CPU: the documented subsets (2 cores); GPU: real sizes (the recipe's 3 seeds may take more than 10 minutes).
SIZES: dict[str, dict[str, list[str]]] = {
    "cpu": {  # what bench/RESULTS.md reports
        "recipe_vs_tutorial": ["--seeds", "0", "1", "2"],
        "loop_efficiency": ["--image-size", "64", "--batch-size", "32", "--steps", "20", "--warmup-steps", "2", "--train-images", "1000"],
        "text_vs_trainer": [],
        "whisper_padding": ["--variants", "6"],
        "ddp_check": [],
    },
    "gpu": {
        "recipe_vs_tutorial": ["--images-per-class", "100", "--image-size", "224", "--val-per-class", "20", "--batch-size", "64",
                               "--seeds", "0", "1", "2"],
        "loop_efficiency": [],
        "text_vs_trainer": ["--n-train", "20000", "--epochs", "2", "--batch-size", "64"],
        "whisper_padding": ["--accents", "12", "--variants", "12", "--batch-size", "32"],
        "ddp_check": ["--device", "cuda", "--nproc", str(max(2, torch.cuda.device_count()))] if torch.cuda.device_count() > 1 else [],
    },
}


def main(argv: list[str] | None = None) -> None:
    """Run the chosen benchmarks; a failing one is reported and the others still run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument("--course-modes", nargs="*", choices=("smoke", "full"), default=["smoke"],
                   help="course timing modes (none: skip the course timing)")
    p.add_argument("--threads", type=int, default=None, help="passed to every benchmark (1 on a shared CPU)")
    args = p.parse_args(argv)
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    failed = []
    for name in args.only:
        extra = ["--threads", str(args.threads)] if args.threads else []
        print(f"=== {name} ({kind} size)", flush=True)
        try:
            importlib.import_module(f"bench.{name}").main(SIZES[kind][name] + extra)
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
    if args.course_modes:
        print("=== course_timing", flush=True)
        importlib.import_module("bench.course_timing").main(["--modes", *args.course_modes])
    importlib.import_module("bench.report").main([])
    if failed:
        raise SystemExit(f"These benchmarks failed (see above): {', '.join(failed)}")


if __name__ == "__main__":
    main()
