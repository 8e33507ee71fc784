"""Freezing and unfreezing through ordered layer groups, and discriminative learning rates.

A model is cut into *layer groups*, ordered from the input (stem) to the output (head): one group per stage or
block of the network (tlkit.splitters does the cutting). `freeze_to(model, n)` freezes the first n groups and trains the rest; `param_groups` hands
the optimizer only trainable parameters, with learning rates that can grow from the early groups to the head.
Frozen BatchNorm layers keep their running statistics fixed even after `model.train()` (a classic silent bug), also
without affine parameters (then their group decides). tlkit remembers what it froze itself: what peft, the model
(Whisper's fixed position table) or a loop by hand froze stays frozen when tlkit unfreezes, unless `force=True`.
Taught in lessons 02 (freezing by hand, then with tlkit) and 03 (fine-tuning strategies).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from tlkit.splitters import HEAD_NAMES, LayerGroup, layer_groups, split_model  # noqa: F401  (the public API lives here too)

_BN_HOOK_ATTR = "_tlkit_frozen_bn_hook"
_FROZEN_ATTR = "_tlkit_frozen"  # on a module: the names of its own parameters that tlkit froze (deepcopy keeps it)
_PINNED_ATTR = "_tlkit_bn_pinned"  # on a BatchNorm without affine parameters: its statistics are frozen with its group


def _owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """{id(parameter): [(module holding it, its local name), ...]}: a tied parameter has several holders."""
    out: dict[int, list[tuple[nn.Module, str]]] = {}
    for m in model.modules():
        for name, p in m._parameters.items():
            if p is not None:
                out.setdefault(id(p), []).append((m, name))
    return out


def _set_requires_grad(model: nn.Module, params: list[nn.Parameter], flag: bool, force: bool = False) -> list[nn.Parameter]:
    """Set requires_grad, remembering what tlkit froze; return the parameters kept frozen because something else froze them.

    Parameters frozen outside tlkit (Whisper's fixed position table, peft's base weights, a loop by hand) are made
    trainable again only with force=True.
    """
    owners, kept = _owners(model), []
    for p in params:
        places = owners.get(id(p), [])
        ours = any(name in getattr(m, _FROZEN_ATTR, ()) for m, name in places)
        if flag and not p.requires_grad and not (ours or force):
            kept.append(p)
            continue
        for m, name in places:
            if not flag and p.requires_grad:
                m.__dict__.setdefault(_FROZEN_ATTR, set()).add(name)
            elif flag:
                getattr(m, _FROZEN_ATTR, set()).discard(name)
        p.requires_grad_(flag)
    return kept


def _warn_kept(model: nn.Module, kept: list[nn.Parameter]) -> None:
    if not kept:
        return
    names = {id(p): n for n, p in model.named_parameters()}
    shown = ", ".join(names.get(id(p), "?") for p in kept[:3]) + (", ..." if len(kept) > 3 else "")
    warnings.warn(f"Kept {len(kept)} parameter tensor(s) frozen that were frozen outside tlkit ({shown}): by the model's design "
                  "(e.g. Whisper's fixed position table), by peft, or by hand. Pass force=True to train them too.", UserWarning, stacklevel=3)


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.training = False  # frozen BatchNorm: use (and never update) the pretrained running statistics


def _sync_batchnorm(model: nn.Module) -> None:
    """Freeze the running statistics of every BatchNorm whose affine parameters are all frozen; release the others.

    A BatchNorm without affine parameters follows the layer group it sits in (recorded by freeze_to).
    """
    for m in model.modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        params = list(m.parameters(recurse=False))
        frozen = not any(p.requires_grad for p in params) if params else getattr(m, _PINNED_ATTR, False)
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


def _batchnorms(modules: list[nn.Module]) -> list[nn.Module]:
    return [bn for m in modules for bn in m.modules() if isinstance(bn, nn.modules.batchnorm._BatchNorm)]


def freeze_to(model: nn.Module, n: int, train_bn: bool = False, force: bool = False) -> list[LayerGroup]:
    """Freeze the first `n` layer groups and make the rest trainable (negative n counts from the end, as in lists).

    `train_bn=True` keeps BatchNorm layers trainable inside frozen groups (their statistics then keep updating);
    the default freezes them completely, which is what you want for small datasets. Parameters that something else
    froze (peft, the model itself, a loop by hand) stay frozen unless `force=True`. Warns when the model splits too
    coarsely for freezing by group to mean much.
    """
    groups, coarse = split_model(model)
    if not -len(groups) <= n <= len(groups):
        raise ValueError(f"n={n} is out of range for a model with {len(groups)} layer groups; use -{len(groups)}..{len(groups)}.")
    n = n % len(groups) if n < 0 else n
    if coarse and n > 0:
        warnings.warn(f"Freezing {type(model).__name__} by layer group is coarse: {coarse}. Freeze by parameter name with "
                      "tlkit.freeze.freeze_matching(model, pattern), or give the model a layer_groups() method.", UserWarning, stacklevel=3)
    kept = []
    for i, group in enumerate(groups):
        frozen = i < n
        kept += _set_requires_grad(model, group.params, not frozen, force)
        for bn in _batchnorms(group.modules):
            if frozen and train_bn:
                _set_requires_grad(model, list(bn.parameters(recurse=False)), True)
            bn.__dict__[_PINNED_ATTR] = frozen and not train_bn
    _warn_kept(model, kept)
    _sync_batchnorm(model)
    return groups


def freeze(model: nn.Module, train_bn: bool = False, force: bool = False) -> list[LayerGroup]:
    """Freeze everything but the last layer group (the head): feature extraction."""
    return freeze_to(model, -1, train_bn=train_bn, force=force)


def unfreeze(model: nn.Module, force: bool = False) -> list[LayerGroup]:
    """Make every layer group trainable: full fine-tuning (what others froze stays frozen unless force=True)."""
    return freeze_to(model, 0, force=force)


def unfreeze_last(model: nn.Module, n: int, train_bn: bool = False, force: bool = False) -> list[LayerGroup]:
    """Train only the last `n` layer groups (the head counts as one); freeze the rest."""
    total = len(layer_groups(model))
    if not 1 <= n <= total:
        raise ValueError(f"n={n} must be between 1 and the number of layer groups ({total}).")
    return freeze_to(model, total - n, train_bn=train_bn, force=force)


def freeze_matching(model: nn.Module, pattern: str, freeze: bool = True, force: bool = False) -> list[str]:
    """Freeze (or with freeze=False, unfreeze) every parameter whose name matches the regex `pattern`; return the names.

    Unfreezing leaves alone what something else froze (see freeze_to) unless `force=True`.
    """
    regex = re.compile(pattern)
    names = [name for name, _ in model.named_parameters()]
    matched = [name for name in names if regex.search(name)]
    if not matched:
        examples = ", ".join(names[:3] + (["...", names[-1]] if len(names) > 3 else []))
        raise ValueError(f"Pattern {pattern!r} matched no parameter; names look like: {examples}. Check the spelling or print tlkit.freeze.trainable_summary(model).")
    params = dict(model.named_parameters())
    _warn_kept(model, _set_requires_grad(model, [params[n] for n in matched], not freeze, force))
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
        _set_requires_grad(model, list(bn.parameters(recurse=False)), False)
        bn.__dict__[_PINNED_ATTR] = True
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
