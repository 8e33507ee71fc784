"""Freezing and unfreezing through ordered layer groups, and discriminative learning rates.

A model is cut into *layer groups*, ordered from the input (stem) to the output (head): one group per stage or
block of the network. `freeze_to(model, n)` freezes the first n groups and trains the rest; `param_groups` hands
the optimizer only trainable parameters, with learning rates that can grow from the early groups to the head.
Frozen BatchNorm layers keep their running statistics fixed even after `model.train()` (a classic silent bug).
Taught in lessons 02 (freezing by hand, then with tlkit) and 03 (fine-tuning strategies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

HEAD_NAMES = frozenset({"head", "heads", "classifier", "fc", "score", "proj_out", "lm_head"})
_BN_HOOK_ATTR = "_tlkit_frozen_bn_hook"


@dataclass
class LayerGroup:
    """One group of layers: a readable name, its modules, and its parameters (each parameter in one group only)."""

    name: str
    modules: list[nn.Module] = field(default_factory=list)
    params: list[nn.Parameter] = field(default_factory=list)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters in the group."""
        return sum(p.numel() for p in self.params)

    @property
    def num_trainable(self) -> int:
        """Number of scalar parameters in the group that will receive gradients."""
        return sum(p.numel() for p in self.params if p.requires_grad)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_block_list(module: nn.Module) -> bool:
    """A ModuleList/Sequential of repeated blocks (a stage list such as `blocks`, `layers`), not a (conv, bn) pair.

    Repeated means: at least two parameterised children, and the most common child type makes up half or more.
    """
    if not isinstance(module, (nn.ModuleList, nn.Sequential)):
        return False
    types = [type(m) for m in module.children() if _has_params(m)]
    most_common = max((types.count(t) for t in set(types)), default=0)
    return most_common >= 2 and 2 * most_common >= len(types)


def _contains_block_list(module: nn.Module) -> bool:
    return any(_is_block_list(m) for m in module.modules() if m is not module)


def _split(module: nn.Module, prefix: str = "") -> list[tuple[str, list[nn.Module], list[nn.Parameter]]]:
    """Walk the children in order: expand the block list, recurse into modules that hold one, merge the rest."""
    children = list(module.named_children())
    n_block_lists = sum(_is_block_list(c) for _, c in children)
    out: list[tuple[str, list[nn.Module], list[nn.Parameter]]] = []
    direct = {n: p for n, p in module._parameters.items() if p is not None}  # held directly, e.g. a ViT class token
    pending_names: list[str] = [prefix + n for n in direct]
    pending_modules: list[nn.Module] = []
    pending_params = list(direct.values())

    def flush() -> None:
        params = pending_params + [p for m in pending_modules for p in m.parameters()]
        if params:
            out.append(("+".join(pending_names) or prefix.rstrip(".") or "params", list(pending_modules), params))
        pending_names.clear(), pending_modules.clear(), pending_params.clear()

    for name, child in children:
        full = prefix + name
        if n_block_lists == 1 and _is_block_list(child):  # the one stage list: one group per block
            flush()
            out += [(f"{full}.{i}", [b], list(b.parameters())) for i, b in enumerate(child) if _has_params(b)]
        elif _is_block_list(child):  # one of several sibling stages (ResNet layer1..layer4): one group per stage
            flush()
            out.append((full, [child], list(child.parameters())))
        elif _contains_block_list(child):
            flush()
            out += _split(child, full + ".")
        elif name in HEAD_NAMES:
            flush()
            pending_names.append(full), pending_modules.append(child)
            flush()
        else:
            pending_names.append(full), pending_modules.append(child)
    flush()
    return out


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Cut `model` into ordered LayerGroups (stem ... blocks ... head); a model's own `layer_groups()` method wins.

    Works for torchvision CNNs and ViTs, timm EfficientNets, transformers encoders (BERT, Whisper) and any model
    wrapping one of them as `.backbone` with a `.head`.
    """
    custom = getattr(model, "layer_groups", None)
    if callable(custom):  # a list of modules, or of (name, module) pairs
        named = [(str(i), g) if isinstance(g, nn.Module) else (str(g[0]), g[1]) for i, g in enumerate(custom())]
        parts = [(name, [mod], list(mod.parameters())) for name, mod in named]
    else:
        parts = _split(model)
    groups, seen = [], set()
    for name, modules, params in parts:
        unique = [p for p in params if id(p) not in seen]
        seen.update(id(p) for p in unique)
        if unique:
            groups.append(LayerGroup(name, modules, unique))
    if not groups:
        raise ValueError(f"{type(model).__name__} has no parameters to group; pass a model with at least one layer.")
    return groups


def _set_requires_grad(params: list[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.training = False  # frozen BatchNorm: use (and never update) the pretrained running statistics


def _sync_batchnorm(model: nn.Module) -> None:
    """Freeze the running statistics of every BatchNorm whose affine parameters are all frozen; release the others."""
    for m in model.modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        params = list(m.parameters(recurse=False))
        frozen = bool(params) and not any(p.requires_grad for p in params)
        hook = getattr(m, _BN_HOOK_ATTR, None)
        if frozen and hook is None:
            setattr(m, _BN_HOOK_ATTR, m.register_forward_pre_hook(_keep_eval))
            m.training = False
        elif not frozen and hook is not None:
            hook.remove()
            delattr(m, _BN_HOOK_ATTR)
            m.training = model.training


def batchnorm_frozen(module: nn.Module) -> bool:
    """True if this BatchNorm layer's running statistics are frozen by tlkit."""
    return getattr(module, _BN_HOOK_ATTR, None) is not None


def freeze_to(model: nn.Module, n: int, train_bn: bool = False) -> list[LayerGroup]:
    """Freeze the first `n` layer groups and make the rest trainable (negative n counts from the end, as in lists).

    `train_bn=True` keeps BatchNorm layers trainable inside frozen groups (their statistics then keep updating);
    the default freezes them completely, which is what you want for small datasets.
    """
    groups = layer_groups(model)
    if not -len(groups) <= n <= len(groups):
        raise ValueError(f"n={n} is out of range for a model with {len(groups)} layer groups; use -{len(groups)}..{len(groups)}.")
    n = n % len(groups) if n < 0 else n
    for i, group in enumerate(groups):
        _set_requires_grad(group.params, i >= n)
        if train_bn and i < n:
            for m in group.modules:
                for bn in m.modules():
                    if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                        _set_requires_grad(list(bn.parameters(recurse=False)), True)
    _sync_batchnorm(model)
    return groups


def freeze(model: nn.Module, train_bn: bool = False) -> list[LayerGroup]:
    """Freeze everything but the last layer group (the head): feature extraction."""
    return freeze_to(model, -1, train_bn=train_bn)


def unfreeze(model: nn.Module) -> list[LayerGroup]:
    """Make every layer group trainable: full fine-tuning."""
    return freeze_to(model, 0)


def unfreeze_last(model: nn.Module, n: int, train_bn: bool = False) -> list[LayerGroup]:
    """Train only the last `n` layer groups (the head counts as one); freeze the rest."""
    total = len(layer_groups(model))
    if not 1 <= n <= total:
        raise ValueError(f"n={n} must be between 1 and the number of layer groups ({total}).")
    return freeze_to(model, total - n, train_bn=train_bn)


def freeze_matching(model: nn.Module, pattern: str, freeze: bool = True) -> list[str]:
    """Freeze (or with freeze=False, unfreeze) every parameter whose name matches the regex `pattern`; return the names."""
    regex = re.compile(pattern)
    names = [name for name, _ in model.named_parameters()]
    matched = [name for name in names if regex.search(name)]
    if not matched:
        examples = ", ".join(names[:3] + (["...", names[-1]] if len(names) > 3 else []))
        raise ValueError(f"Pattern {pattern!r} matched no parameter; names look like: {examples}. Check the spelling or print tlkit.freeze.trainable_summary(model).")
    params = dict(model.named_parameters())
    _set_requires_grad([params[n] for n in matched], not freeze)
    _sync_batchnorm(model)
    return matched


def freeze_batchnorm(model: nn.Module) -> int:
    """Freeze every BatchNorm layer (affine parameters and running statistics), whatever its group; return how many.

    The fine-tuning advice of lessons 03 and 06: with a small target dataset, let the weights train but keep the
    pretrained BatchNorm statistics, which a few hundred images cannot re-estimate.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ValueError("The model has no BatchNorm layer, so there is nothing to freeze; transformers use LayerNorm, which keeps no statistics.")
    for bn in bns:
        _set_requires_grad(list(bn.parameters(recurse=False)), False)
    _sync_batchnorm(model)
    return len(bns)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return (trainable, total) scalar parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def trainable_summary(model: nn.Module) -> pd.DataFrame:
    """A table of layer groups: parameters, trainable, frozen, status and BatchNorm statistics, with a total row."""
    rows = []
    for i, g in enumerate(layer_groups(model)):
        bns = [m for mod in g.modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        status = "trainable" if g.num_trainable == g.num_params else "frozen" if g.num_trainable == 0 else "partial"
        bn = "-" if not bns else "frozen" if all(batchnorm_frozen(b) for b in bns) else "updating"
        rows.append({"group": i, "name": g.name, "params": g.num_params, "trainable": g.num_trainable,
                     "frozen": g.num_params - g.num_trainable, "status": status, "bn_stats": bn})
    table = pd.DataFrame(rows)
    total = {"group": "", "name": "TOTAL", "params": table.params.sum(), "trainable": table.trainable.sum(),
             "frozen": table.frozen.sum(), "status": f"{100 * table.trainable.sum() / max(table.params.sum(), 1):.1f}% trainable", "bn_stats": ""}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def param_groups(model: nn.Module, lr: float | slice, weight_decay: float | None = None, decay: float | None = None) -> list[dict]:
    """Optimizer parameter groups holding only trainable parameters, one per trainable layer group.

    lr=1e-3: the same rate everywhere. lr=slice(1e-5, 1e-3): discriminative rates, spread geometrically from the
    first trainable group to the head (slice(1e-3) means slice(1e-4, 1e-3)). decay=0.9: layer-wise decay, the head
    gets `lr` and each earlier group 0.9 times the next one.
    """
    groups = [g for g in layer_groups(model) if g.num_trainable > 0]
    if not groups:
        raise ValueError("Every parameter is frozen, so there is nothing to train; call tlkit.freeze.unfreeze_last(model, 1) first.")
    if isinstance(lr, slice):
        if lr.stop is None or (lr.start is not None and lr.start > lr.stop):
            raise ValueError(f"lr must be slice(low, high) with low <= high, got {lr}.")
        low = lr.start if lr.start is not None else lr.stop / 10
        lrs = list(np.geomspace(low, lr.stop, len(groups))) if len(groups) > 1 else [lr.stop]
    elif decay is not None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}.")
        lrs = [lr * decay ** (len(groups) - 1 - i) for i in range(len(groups))]
    else:
        lrs = [lr] * len(groups)
    extra = {} if weight_decay is None else {"weight_decay": weight_decay}
    return [{"params": [p for p in g.params if p.requires_grad], "lr": float(x), "name": g.name, **extra}
            for g, x in zip(groups, lrs)]
