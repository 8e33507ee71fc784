"""The random-weights baseline: a re-initialised copy, original untouched, reproducible, RNG state preserved."""

import pytest
import torch
from torch import nn

from tlkit.baseline import reinitialized_copy


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_every_weight_is_new_and_the_original_is_untouched():
    model = _model()
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = reinitialized_copy(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not torch.equal(fresh[0].weight, model[0].weight) and not torch.equal(fresh[3].weight, model[3].weight)
    assert torch.equal(fresh[1].running_mean, torch.zeros(4))  # BatchNorm statistics reset too


def test_same_seed_same_weights_and_global_rng_unchanged():
    m1, m2 = _model(), _model()
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    a, b = reinitialized_copy(m1, seed=3), reinitialized_copy(m2, seed=3)
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(a[0].weight, b[0].weight)


def test_a_model_without_resettable_layers_is_refused():
    class Bare(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

    with pytest.raises(ValueError, match="reset_parameters"):
        reinitialized_copy(Bare())
