"""Choosing how to transfer: probe each block of a pretrained model, then decide how much of it to fine-tune.

- `block_features` collects the pooled activations of named blocks (one forward pass, hooks, cached on disk);
- `layerwise_probe` fits a logistic regression on each block's features: where the accuracy peaks tells you
  which blocks still help the new task and which are too specific to the source task;
- `recommend_finetuning` turns the probe, the number of labels and the domain similarity into a plan (how many
  layer groups to unfreeze, which learning rates) and prints its reasoning;
- `l2sp_penalty` and `weight_drift` keep fine-tuning close to the pretrained weights and show when it is not.

Taught in lesson 06 (choosing a model, how many layers to fine-tune, pitfalls).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from tlkit.features import extract_features
from tlkit.freeze import HEAD_NAMES, layer_groups

HEAD_LR = 1e-3  # Adam/AdamW learning rate for a new head; the backbone's rates are set below it
PEAK_MARGIN = 0.02  # a block counts as "better than the last one" only when it wins by more than this accuracy
SIMILAR, DISTANT = 0.6, 0.3  # domain_similarity above SIMILAR is a close domain, below DISTANT a far one


# ------------------------------------------------------------------------------------------- block features
def _is_head(group_name: str) -> bool:
    """A head group: one of its parts is named like a head (classifier, fc, pre_classifier+classifier...)."""
    return any(part.split(".")[-1] in HEAD_NAMES for part in group_name.split("+"))


def _candidates(model: nn.Module) -> dict[str, list[str]]:
    """{group name: names of the modules that may represent it}, head excluded; containers a model's own layer_groups()
    builds on the fly (an nn.ModuleList of registered modules) are replaced by the modules they hold."""
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False) if n}
    out = {}
    for group in layer_groups(model):
        if _is_head(group.name):
            continue
        stack, found = list(group.modules), []
        while stack:
            m = stack.pop(0)
            if id(m) in names:
                found.append(names[id(m)])
            else:
                stack = list(m.children()) + stack
        if found:
            out[group.name] = found
    return out


def probe_layers(model: nn.Module) -> dict[str, str]:
    """{layer group name: name of the module whose output represents it}: one per tlkit layer group, head excluded.

    The group's last module is taken; block_features(layers=None) checks on one batch which module really produces
    the group's output (DeBERTa's relative-position table or Whisper's position table is not called as a layer).
    """
    layers = {group: found[-1] for group, found in _candidates(model).items()}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer group besides its head; pass `layers` (module names) explicitly.")
    return layers


def _tensor(output: Any) -> torch.Tensor:
    """The activation tensor inside a layer's output: a tensor, a (hidden_states, attentions, ...) tuple, or a ModelOutput."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]  # transformer layers return (hidden_states, attentions, ...)
    elif isinstance(output, Mapping):
        output = output.get("last_hidden_state", next((v for v in output.values() if isinstance(v, torch.Tensor)), None))
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"A probed layer must output a tensor, got {type(output).__name__}; choose another layer name.")
    return output


def _last_layer(module: nn.Module | None) -> nn.Module | None:
    """The module's last layer that holds weights of its own (in registration order), or None."""
    if module is None:
        return None
    layers = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return layers[-1] if layers else None


def _feature_width(layer: nn.Module | None) -> int | None:
    """Number of channels a layer produces (out_channels, out_features, normalized size...)."""
    if layer is None:
        return None
    for attr in ("out_channels", "out_features", "num_features", "num_channels", "embedding_dim"):
        if isinstance(getattr(layer, attr, None), int):
            return getattr(layer, attr)
    if isinstance(layer, nn.LayerNorm):
        return int(layer.normalized_shape[-1])
    return int(next(layer.parameters()).shape[0])


def _channels_last(x: torch.Tensor, module: nn.Module | None) -> bool:
    """Whether channels are the last axis: (B, H, W, C) as in Swin or (B, T, D) as in transformers, vs (B, C, H, W) / (B, C, T).

    Decided by where the width of the module's last weighted layer appears; when both axes (or neither) match, a
    square map decides (4D), else the kind of layer: a convolution or BatchNorm puts channels first.
    """
    layer = _last_layer(module)
    width = _feature_width(layer)
    first, last = x.shape[1] == width, x.shape[-1] == width
    if first != last:
        return last
    if x.ndim == 4 and (x.shape[1] == x.shape[2]) != (x.shape[2] == x.shape[3]):
        return x.shape[1] == x.shape[2]
    if layer is None:
        return x.ndim == 3  # the usual layouts: (B, C, H, W) images, (B, T, D) tokens
    return not isinstance(layer, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm))


def _pool(output: Any, module: nn.Module | None = None) -> torch.Tensor:
    """One activation as (batch, channels): average over space or time, whichever layout the module produces."""
    x = _tensor(output).float()
    if x.ndim == 2:
        return x
    if x.ndim not in (3, 4):
        raise ValueError(f"Cannot pool an activation of shape {tuple(x.shape)}; probe layers that output (B, C[, H, W]) or (B, T, D).")
    if _channels_last(x, module):
        return x.mean(dim=tuple(range(1, x.ndim - 1)))
    return x.mean(dim=tuple(range(2, x.ndim)))


class _PooledBlocks(nn.Module):
    """Runs `model` and returns the pooled outputs of the chosen modules, concatenated: (B, sum of widths)."""

    def __init__(self, model: nn.Module, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self._targets = list(modules)
        self._outputs: list[torch.Tensor] = []
        self.widths: list[int] = []

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._outputs.append(_pool(output, module))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._outputs = []
        handles = [m.register_forward_hook(self._hook) for m in self._targets]
        try:
            self.model(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        if len(self._outputs) != len(self._targets):
            raise ValueError(f"{len(self._targets)} layers were probed but {len(self._outputs)} ran; probe modules that run exactly once per forward pass.")
        self.widths = [o.shape[1] for o in self._outputs]
        return torch.cat(self._outputs, dim=1)


def _first_examples(loader: DataLoader, device: torch.device, n: int = 2) -> tuple[tuple, dict, int]:
    """The first `n` examples of the loader's first batch, on `device`, as (args, kwargs, batch size) for the model."""
    batch = next(iter(loader))
    if isinstance(batch, dict):
        kwargs = {k: v[:n].to(device) for k, v in batch.items() if k != "labels"}
        return (), kwargs, len(next(iter(kwargs.values())))
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return (x[:n].to(device),), {}, len(x[:n])


def _group_outputs(model: nn.Module, args: tuple, kwargs: dict, batch: int) -> dict[str, str]:
    """{group: the module that produces its output}: the last candidate to run, once, with a (batch, ...) activation."""
    modules = dict(model.named_modules())
    candidates = _candidates(model)
    calls: dict[str, list[bool]] = {}
    order: list[str] = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            try:
                ok = _tensor(output).shape[0] == batch and _tensor(output).ndim in (2, 3, 4)
            except ValueError:
                ok = False
            calls.setdefault(name, []).append(ok)
            order.append(name)
        return hook

    wanted = {n for found in candidates.values() for n in found}
    handles = [modules[n].register_forward_hook(record(n)) for n in wanted]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    last_run = {n: i for i, n in enumerate(order)}
    chosen = {}
    for group, found in candidates.items():
        ran = [n for n in found if calls.get(n) == [True]]
        if ran:
            chosen[group] = max(ran, key=last_run.__getitem__)
    if not chosen:
        raise ValueError(f"No layer group of {type(model).__name__} produced a (batch, ...) activation; pass `layers` (module names) explicitly.")
    return chosen


def block_features(
    model: nn.Module,
    loader: DataLoader,
    layers: Sequence[str] | Mapping[str, str] | None = None,
    device: torch.device | str = "cpu",
    *,
    cache_key: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pooled activations of named blocks over a dataset: ({layer: features [N, C]}, labels [N]), in input-to-output order.

    `layers`: module names (as in `model.named_modules()`), a {label: module name} dict, or None for one layer per
    tlkit layer group (see `probe_layers`). Activations are averaged over space or time whatever their layout:
    (B, C, H, W), (B, H, W, C) as in Swin, (B, T, D), (B, C, T) as in audio convolutions; tuples and ModelOutputs too.
    One forward pass per batch with hooks; cached like tlkit.features.extract_features when `cache_key` names the
    model and the data. Taught in lesson 06.
    """
    device = torch.device(device)
    was_training = model.training
    try:
        model.eval()
        if layers is None:  # one layer per group: the module that really produces the group's output on this data
            args, kwargs, batch = _first_examples(loader, device)
            layers = _group_outputs(model.to(device), args, kwargs, batch)
        named = dict(layers) if isinstance(layers, Mapping) else {name: name for name in layers}
        modules = dict(model.named_modules())
        unknown = [m for m in named.values() if m not in modules]
        if unknown:
            examples = ", ".join(list(modules)[1:6])
            raise ValueError(f"No module named {unknown} in {type(model).__name__}; use names from model.named_modules(), e.g. {examples}.")
        pooled = _PooledBlocks(model, [modules[m] for m in named.values()]).to(device)
        pooled.eval()
        with torch.no_grad():
            args, kwargs, _ = _first_examples(loader, device, n=1)
            pooled(*args, **kwargs)  # one example tells us each layer's width, needed to split cached features
        widths = pooled.widths
        features, labels = extract_features(pooled, loader, device=device, cache_key=cache_key, progress=progress)
    finally:
        model.train(was_training)
    if features.shape[1] != sum(widths):
        raise ValueError(f"Cached features under {cache_key!r} have {features.shape[1]} columns, expected {sum(widths)}; use a cache_key that names these layers.")
    parts = torch.split(features, widths, dim=1)
    return dict(zip(named, parts)), labels


# ------------------------------------------------------------------------------------------- linear probes
def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def linear_probe_accuracy(train_X: Any, train_y: Any, val_X: Any, val_y: Any, *, C: float = 1.0, max_iter: int = 300) -> tuple[float, float]:
    """(train accuracy, val accuracy) of a standardised logistic regression on fixed features. Taught in lesson 06."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    Xtr, ytr, Xva, yva = (_numpy(a) for a in (train_X, train_y, val_X, val_y))
    if len(Xtr) != len(ytr) or len(Xva) != len(yva):
        raise ValueError(f"Features and labels differ in length (train {len(Xtr)} vs {len(ytr)}, val {len(Xva)} vs {len(yva)}); pass matching arrays.")
    if len(np.unique(ytr)) < 2:
        raise ValueError("The training labels hold a single class; a probe needs at least two classes.")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    # One thread: on problems this small, BLAS threads only add overhead (10-50x slower on a busy 2-core machine).
    # Few-shot features are separable, so the weights never fully converge; the accuracy has long settled by max_iter.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xtr.reshape(len(Xtr), -1), ytr)
    return float(clf.score(Xtr.reshape(len(Xtr), -1), ytr)), float(clf.score(Xva.reshape(len(Xva), -1), yva))


def layerwise_probe(features_per_layer: Mapping[str, tuple[Any, Any, Any, Any]], *, C: float = 1.0, max_iter: int = 300) -> pd.DataFrame:
    """A linear probe per layer: {layer: (train_X, train_y, val_X, val_y)} -> DataFrame(layer, depth, dim, train_acc, val_acc).

    Keep the dict in input-to-output order (block_features does): `depth` is the position. Any named feature sets
    work, e.g. several candidate backbones. Taught in lesson 06.
    """
    if not features_per_layer:
        raise ValueError("features_per_layer is empty; pass {layer name: (train_X, train_y, val_X, val_y)}.")
    rows = []
    for depth, (layer, parts) in enumerate(features_per_layer.items()):
        if len(parts) != 4:
            raise ValueError(f"Layer {layer!r}: expected (train_X, train_y, val_X, val_y), got {len(parts)} items.")
        train_acc, val_acc = linear_probe_accuracy(*parts, C=C, max_iter=max_iter)
        dim = int(np.prod(_numpy(parts[0]).shape[1:]))
        rows.append({"layer": layer, "depth": depth, "dim": dim, "train_acc": train_acc, "val_acc": val_acc})
    return pd.DataFrame(rows)


def domain_similarity(pretrained_acc: float, random_acc: float) -> float:
    """How much of the way to perfect accuracy pretraining gets you, in [0, 1]: (pre - rand) / (1 - rand).

    Both are linear-probe accuracies on the target task, from the same architecture with pretrained and with random
    weights. 1: the source features already separate the target classes; 0: pretraining brings nothing (a distant
    domain, or a source model unsuited to the task). Taught in lesson 06.
    """
    for name, acc in (("pretrained_acc", pretrained_acc), ("random_acc", random_acc)):
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"{name} must be an accuracy in [0, 1], got {acc}.")
    if random_acc >= 1.0:
        return 0.0
    return float(np.clip((pretrained_acc - random_acc) / (1.0 - random_acc), 0.0, 1.0))


# ------------------------------------------------------------------------------------------- recommendation
@dataclass
class Recommendation:
    """How to fine-tune: which layer groups to train, at which learning rates, and why."""

    strategy: str
    n_unfreeze: int  # backbone layer groups to train, counted from the top (0: a linear head on frozen features)
    n_groups: int  # backbone layer groups the probe saw
    lr: float | slice  # for tlkit.freeze.param_groups: one rate, or slice(lowest group, head)
    reasons: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def unfreeze_last(self) -> int:
        """The argument for tlkit.freeze.unfreeze_last(model, n): the unfrozen backbone groups plus the head."""
        return self.n_unfreeze + 1

    @property
    def explanation(self) -> str:
        """The reasoning, one line per step, ending with the plan."""
        lr = f"{self.lr:.0e}" if isinstance(self.lr, float) else f"slice({self.lr.start:.0e}, {self.lr.stop:.0e})"
        plan = (f"=> {self.strategy}: train the last {self.n_unfreeze} of {self.n_groups} backbone groups plus the head "
                f"(tlkit.freeze.unfreeze_last(model, {self.unfreeze_last})), lr={lr} with tlkit.freeze.param_groups.")
        return "\n".join([f"- {r}" for r in self.reasons] + [plan])

    def __str__(self) -> str:
        return self.explanation


def _probe_peak(probe: pd.DataFrame) -> tuple[int, float, float]:
    """(position of the best layer, its val accuracy, the last layer's val accuracy)."""
    if "val_acc" not in probe or len(probe) == 0:
        raise ValueError("probe must be a non-empty DataFrame with a 'val_acc' column, as layerwise_probe returns.")
    acc = probe["val_acc"].to_numpy(dtype=float)
    best = int(np.argmax(acc))
    if acc[best] - acc[-1] <= PEAK_MARGIN:  # within noise of the last layer: count the last layer as the peak
        best = len(acc) - 1
    return best, float(acc[best]), float(acc[-1])


def _data_fraction(n_per_class: int) -> tuple[float, str]:
    """Share of the backbone that the amount of labelled data alone can support, and a word for it."""
    if n_per_class < 20:
        return 0.0, "very little data"
    if n_per_class < 100:
        return 0.25, "a small dataset"
    if n_per_class < 1000:
        return 0.5, "a medium dataset"
    return 1.0, "a large dataset"


def recommend_finetuning(
    probe: pd.DataFrame, n_labelled_per_class: int, domain_similarity: float | None = None, *, verbose: bool = True
) -> Recommendation:
    """Recommend how many layer groups to fine-tune and with which learning rates, and print why.

    Rules (each adds reasons to the explanation): the labelled data per class sets how much of the backbone can be
    trained without overfitting; a probe that peaks before the last block, or a low `domain_similarity`, says the
    top blocks are specific to the source task and should be retrained, with wider discriminative learning rates.
    Very little data caps how far that goes. `probe` rows must run from input to output. Taught in lesson 06.
    """
    if n_labelled_per_class < 1:
        raise ValueError(f"n_labelled_per_class must be at least 1, got {n_labelled_per_class}.")
    if domain_similarity is not None and not 0.0 <= domain_similarity <= 1.0:
        raise ValueError(f"domain_similarity must be in [0, 1] (see tlkit.advisor.domain_similarity) or None, got {domain_similarity}.")
    n_groups = len(probe)
    best, best_acc, last_acc = _probe_peak(probe)
    names = probe["layer"].tolist() if "layer" in probe else [str(i) for i in range(n_groups)]
    reasons = []

    data_frac, data_word = _data_fraction(n_labelled_per_class)
    reasons.append(f"{n_labelled_per_class} labelled examples per class is {data_word}: on its own it supports training "
                   f"{data_frac:.0%} of the backbone.")

    after_peak = n_groups - 1 - best
    peak_frac = after_peak / n_groups
    if after_peak:
        reasons.append(f"The probe peaks early: {names[best]!r} (group {best + 1} of {n_groups}) reaches {best_acc:.2f} but the last "
                       f"group only {last_acc:.2f}, so the {after_peak} group(s) after it are specific to the source task: retrain them.")
    else:
        reasons.append(f"The probe rises to the last group ({names[-1]!r}, accuracy {last_acc:.2f}): the top features already suit "
                       "this task.")

    sim_frac, ratio = 0.0, 100.0
    if domain_similarity is None:
        reasons.append("No domain similarity given: judging the domain from the probe's shape alone.")
        if after_peak:
            ratio = 30.0
    elif domain_similarity < DISTANT:
        sim_frac, ratio = 0.75, 10.0
        reasons.append(f"Domain similarity {domain_similarity:.2f} < {DISTANT} is a distant domain: early features need to move too, "
                       "so unfreeze most groups and keep the early rates only 10x below the head's.")
    elif domain_similarity < SIMILAR:
        sim_frac, ratio = 0.5, 30.0
        reasons.append(f"Domain similarity {domain_similarity:.2f} is moderate: adapt the upper half of the network.")
    else:
        reasons.append(f"Domain similarity {domain_similarity:.2f} >= {SIMILAR} is a close domain: the pretrained features transfer "
                       "as they are.")

    shift_frac = max(peak_frac, sim_frac)
    cap = 1.0 if n_labelled_per_class >= 100 else 0.5 if n_labelled_per_class >= 20 else 1 / 3
    frac = max(data_frac, min(shift_frac, cap))
    if shift_frac > cap:
        reasons.append(f"With only {n_labelled_per_class} examples per class, unfreezing more than {cap:.0%} of the backbone would "
                       "overfit: stop there, use L2-SP or a low learning rate, and consider a source model closer to your data.")
    n_unfreeze = min(n_groups, math.ceil(frac * n_groups - 1e-9))

    if n_unfreeze == 0:
        strategy, lr = "feature extraction (frozen backbone, linear head)", HEAD_LR
        reasons.append("So: keep the backbone frozen, cache its features and train only the head.")
    else:
        strategy = "full fine-tuning" if n_unfreeze == n_groups else "partial fine-tuning"
        lr = slice(HEAD_LR / ratio, HEAD_LR)
        reasons.append(f"So: train the top {n_unfreeze} group(s) with discriminative learning rates from {HEAD_LR / ratio:.0e} "
                       f"(earliest unfrozen group) to {HEAD_LR:.0e} (head); start with one epoch of the head alone.")
    rec = Recommendation(strategy, n_unfreeze, n_groups, lr, reasons,
                         {"n_labelled_per_class": n_labelled_per_class, "domain_similarity": domain_similarity,
                          "best_layer": names[best], "best_acc": best_acc, "last_acc": last_acc})
    if verbose:
        print(rec.explanation)
    return rec


# ------------------------------------------------------------------------------------------- staying close
def snapshot_weights(model: nn.Module, device: torch.device | str | None = None, exclude: str | None = None) -> dict[str, torch.Tensor]:
    """A detached copy of the model's parameters ({name: tensor}), the reference for l2sp_penalty and weight_drift.

    `exclude` is a regular expression of names to leave out, e.g. r"^head\." for a new head that has no pretrained
    value to pull towards (l2sp_penalty then treats it as new).
    """
    skip = re.compile(exclude) if exclude else None
    return {n: p.detach().clone().to(device or p.device) for n, p in model.named_parameters() if not (skip and skip.search(n))}


def l2sp_penalty(model: nn.Module, reference_state: Mapping[str, torch.Tensor], alpha: float, beta: float = 0.0) -> torch.Tensor:
    """L2-SP: alpha/2 * ||w - w_pretrained||^2 over parameters in `reference_state`, plus beta/2 * ||w||^2 over new ones.

    Add it to the loss: fine-tuning may move the pretrained weights only as far as the task pays for, which limits
    catastrophic forgetting (Li et al., 2018). Frozen parameters are skipped. Taught in lesson 06.
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be non-negative, got alpha={alpha}, beta={beta}.")
    params = dict(model.named_parameters())
    shared = [n for n in params if n in reference_state]
    if not shared:
        raise ValueError("reference_state shares no parameter name with the model; take it with tlkit.advisor.snapshot_weights(model) before fine-tuning.")
    device = next(iter(params.values())).device
    total = torch.zeros((), device=device)
    for name, p in params.items():
        if not p.requires_grad:
            continue
        if name in reference_state:
            ref = reference_state[name]
            if ref.shape != p.shape:
                raise ValueError(f"{name}: reference shape {tuple(ref.shape)} differs from the model's {tuple(p.shape)}; snapshot the same architecture.")
            total = total + 0.5 * alpha * (p - ref.to(p.device)).pow(2).sum()
        elif beta:
            total = total + 0.5 * beta * p.pow(2).sum()
    return total


def weight_drift(model: nn.Module, reference_state: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Per layer group, how far fine-tuning moved the weights: ||w - w0|| / ||w0|| (new parameters are skipped).

    A drift of tens of percent in the early groups after a few steps is the signature of a wrecking learning rate.
    Taught in lesson 06.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    rows = []
    for group in layer_groups(model):
        diff = ref = 0.0
        for p in group.params:
            name = names[id(p)]
            if name in reference_state:
                r = reference_state[name].to(p.device).float()
                diff += float((p.detach().float() - r).pow(2).sum())
                ref += float(r.pow(2).sum())
        if ref > 0:
            rows.append({"group": group.name, "relative_drift": math.sqrt(diff / ref)})
    return pd.DataFrame(rows)
