"""Benchmark 4: Whisper encoder features on unpadded clips (tlkit) against the standard 30-second padding.

Standard: transformers' WhisperFeatureExtractor pads every clip to 30 s, the stock encoder runs on 3000 frames,
and the states of the clip's own frames are mean-pooled (the baseline's best pooling; pooling all 1500 positions
is reported too). tlkit: `WhisperEncoderFeatures` computes the log-mel of the clip only and runs the encoder with
its positional embeddings sliced to the clip's length. Same clips, same last-layer pooling, same linear probe
(standardised logistic regression) trained on voices that are held out of the test split.
Targets: >= 10x faster feature extraction, test accuracy at most one point below the padded path's.

    .venv/bin/python -m bench.whisper_padding                     # CPU default: 10 keywords x 24 voices
    .venv/bin/python -m bench.whisper_padding --accents 12 --variants 12   # bigger (GPU)
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import add_common_args, command_line, machine_info, resolve_device, save_result, timed

NAME = "whisper_padding"


def standard_features(model: nn.Module, processor: Any, waveforms: torch.Tensor, batch_size: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The stock path: pad to 30 s in the feature extractor, full encoder; (clip-frame mean, all-frame mean)."""
    from tlkit.device import autocast

    encoder, clip_mean, all_mean = model.model.encoder, [], []
    keep = (waveforms.shape[1] // 160 + 1) // 2  # encoder positions that cover the clip (2 mel frames each)
    for i in range(0, len(waveforms), batch_size):
        audio = [w.numpy() for w in waveforms[i : i + batch_size]]
        feats = processor.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt").input_features
        with torch.no_grad(), autocast(device):
            states = encoder(feats.to(device)).last_hidden_state.float()
        clip_mean.append(states[:, :keep].mean(1).cpu())
        all_mean.append(states.mean(1).cpu())
    return torch.cat(clip_mean), torch.cat(all_mean)


def unpadded_features(model: nn.Module, waveforms: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """tlkit's path: log-mel of the clip only, encoder on the clip's frames, last layer mean-pooled."""
    from tlkit.device import autocast
    from tlkit.models.whisper import WhisperEncoderFeatures

    extractor, out = WhisperEncoderFeatures(model.model.encoder, layer=-1), []
    for i in range(0, len(waveforms), batch_size):
        with autocast(device):
            out.append(extractor(waveforms[i : i + batch_size].to(device)).float().cpu())
    return torch.cat(out)


def probe_accuracy(features: torch.Tensor, labels: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, seed: int) -> float:
    """Test accuracy of a standardised logistic-regression probe trained on `train_idx`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features.numpy()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5, random_state=seed))
    probe.fit(x[train_idx], labels[train_idx])
    return float((probe.predict(x[test_idx]) == labels[test_idx]).mean())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags: how many accents and timbre variants (voices = accents x variants; 10 keywords each)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--accents", type=int, default=6, help="eSpeak accents (first N of tlkit.data.keywords.ACCENTS)")
    p.add_argument("--variants", type=int, default=4, help="timbre variants per accent (first N of VARIANTS)")
    p.add_argument("--words", type=int, default=10, help="keywords (first N of KEYWORDS)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="share of voices held out for the test split")
    p.add_argument("--batch-size", type=int, default=16, help="clips per encoder call (both paths)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time both feature paths on the same clips, probe both; save bench/results/whisper_padding-<cpu|gpu>.json."""
    from tlkit.data.keywords import ACCENTS, KEYWORDS, VARIANTS, keyword_clips
    from tlkit.data.splits import stratified_split
    from tlkit.models.whisper import load_whisper

    args = parse_args(argv)
    device = resolve_device(args.device, args.threads)
    torch.manual_seed(args.seed)
    clips = keyword_clips(KEYWORDS[: args.words], accents=list(ACCENTS)[: args.accents], variants=VARIANTS[: args.variants], seed=args.seed)
    labels = clips.labels.numpy()
    frac = args.test_fraction
    train_idx, _, test_idx = stratified_split(labels, (1 - frac, 0.0, frac), seed=args.seed, groups=clips.meta["voice"].to_numpy())
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)  # a 0-share val split may still get one voice: train on it
    model, processor = load_whisper(device=device)
    waves = clips.waveforms
    unpadded_features(model, waves[:2], 2, device)  # warm-up, untimed: both paths share the encoder's kernels
    standard_features(model, processor, waves[:2], 2, device)
    times: dict[str, float] = {}
    with timed(times, "unpadded", device):
        fast = unpadded_features(model, waves, args.batch_size, device)
    with timed(times, "padded_30s", device):
        slow_clip, slow_all = standard_features(model, processor, waves, args.batch_size, device)
    acc = {name: probe_accuracy(f, labels, train_idx, test_idx, args.seed)
           for name, f in (("unpadded", fast), ("padded_30s", slow_clip), ("padded_30s_all_positions", slow_all))}
    cosine = float(nn.functional.cosine_similarity(fast, slow_clip, dim=1).mean())
    n = len(waves)
    summary = {"speedup": round(times["padded_30s_s"] / times["unpadded_s"], 2),
               "cpu_time_speedup": round(times["padded_30s_cpu_s"] / max(times["unpadded_cpu_s"], 1e-9), 2),
               "ms_per_clip_unpadded": round(1000 * times["unpadded_s"] / n, 2),
               "ms_per_clip_padded_30s": round(1000 * times["padded_30s_s"] / n, 2),
               "accuracy_diff_points": round(100 * (acc["unpadded"] - acc["padded_30s"]), 2),
               "mean_cosine_unpadded_vs_padded": round(cosine, 4)}
    summary["test_points_per_clip"] = round(100 / len(test_idx), 2)  # the accuracy resolution of this test split
    # "within one point": the unpadded features may not cost more than one point; more accurate is no miss.
    summary["target_met"] = bool(summary["speedup"] >= 10 and summary["accuracy_diff_points"] >= -1.0)
    result = {"benchmark": NAME, "command": command_line(f"bench.{NAME}", argv), "machine": machine_info(device),
              "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "device")}, "clips": n,
                           "train_clips": len(train_idx), "test_clips": len(test_idx), "clip_seconds": waves.shape[1] / 16_000,
                           "test_voices": sorted(clips.meta["voice"].iloc[test_idx].unique())},
              "times": times, "test_accuracy": {k: round(v, 4) for k, v in acc.items()}, "summary": summary}
    print(f"{n} clips: unpadded {times['unpadded_s']:.1f} s, padded to 30 s {times['padded_30s_s']:.1f} s "
          f"-> {summary['speedup']:.1f}x faster; probe accuracy {acc['unpadded']:.4f} vs {acc['padded_30s']:.4f} "
          f"({summary['accuracy_diff_points']:+.1f} points); target {'met' if summary['target_met'] else 'NOT met'}")
    print("saved", save_result(NAME, result, args.out))
    return result


if __name__ == "__main__":
    main()
