"""The baseline that says whether pretraining helps: the same architecture with its pretrained weights thrown away.

Compare a probe or a fine-tune of the pretrained model with the same on `reinitialized_copy(model)`: the gap is what
the source task's knowledge brings to your data (lessons 06 and 08; `tlkit.advisor.domain_similarity` turns it into one
number).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def reinitialized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of `model` in which every submodule with `reset_parameters()` re-initialises itself; `model` is untouched."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset = [m for m in fresh.modules() if hasattr(m, "reset_parameters")]
        for module in reset:
            module.reset_parameters()
    if not reset:
        raise ValueError(f"{type(model).__name__} has no layer with reset_parameters(); build it again with random weights instead.")
    return fresh
