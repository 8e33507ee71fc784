"""Freezing through layer groups: ordering, BatchNorm really frozen, discriminative learning rates, clear errors."""

import pytest
import torch
from torch import nn

from tlkit import freeze as F


class TinyCNN(nn.Module):
    """stem -> 3 repeated blocks -> head, the shape of every ImageNet CNN."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()) for _ in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def test_groups_are_ordered_stem_blocks_head():
    names = [g.name for g in F.layer_groups(TinyCNN())]
    assert names == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]


def test_every_parameter_in_exactly_one_group():
    model = TinyCNN()
    ids = [id(p) for g in F.layer_groups(model) for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_freeze_trains_only_the_head():
    model = TinyCNN()
    F.freeze(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    assert F.count_parameters(model)[0] == 4 * 2 + 2


def test_freeze_to_and_unfreeze_last_agree():
    a, b = TinyCNN(), TinyCNN()
    F.freeze_to(a, 3)
    F.unfreeze_last(b, 2)
    assert [p.requires_grad for p in a.parameters()] == [p.requires_grad for p in b.parameters()]
    F.unfreeze(a)
    assert all(p.requires_grad for p in a.parameters())


def test_frozen_batchnorm_statistics_do_not_move_even_in_train_mode():
    model = TinyCNN()
    F.freeze(model)
    model.train()  # the classic bug: train() would put BatchNorm back into update mode
    before = model.stem[1].running_mean.clone()
    model(torch.randn(8, 3, 8, 8) * 5 + 3)
    assert torch.equal(model.stem[1].running_mean, before)
    assert F.batchnorm_frozen(model.stem[1])


def test_unfrozen_batchnorm_statistics_update_again():
    model = TinyCNN()
    F.freeze(model)
    F.unfreeze(model)
    model.train()
    before = model.stem[1].running_mean.clone()
    model(torch.randn(8, 3, 8, 8) * 5 + 3)
    assert not torch.equal(model.stem[1].running_mean, before)


def test_train_bn_keeps_batchnorm_trainable_in_frozen_groups():
    model = TinyCNN()
    F.freeze(model, train_bn=True)
    assert model.stem[1].weight.requires_grad and not model.stem[0].weight.requires_grad
    assert not F.batchnorm_frozen(model.stem[1])


def test_frozen_parameters_receive_no_gradient():
    model = TinyCNN()
    F.freeze(model)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert model.stem[0].weight.grad is None and model.head.weight.grad is not None


def test_param_groups_discriminative_lrs_spread_geometrically_over_trainable_groups():
    model = TinyCNN()
    F.freeze_to(model, 2)  # blocks.1, blocks.2, head trainable
    groups = F.param_groups(model, lr=slice(1e-4, 1e-2))
    assert [g["name"] for g in groups] == ["blocks.1", "blocks.2", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert all(p.requires_grad for g in groups for p in g["params"])
    torch.optim.AdamW(groups)  # the optimizer accepts them


def test_param_groups_layerwise_decay():
    model = TinyCNN()
    lrs = [g["lr"] for g in F.param_groups(model, lr=1.0, decay=0.5)]
    assert lrs == pytest.approx([1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])


def test_param_groups_refuses_a_fully_frozen_model():
    model = TinyCNN()
    F.freeze_matching(model, ".")
    with pytest.raises(ValueError, match="nothing to train"):
        F.param_groups(model, lr=1e-3)


def test_freeze_matching_pattern_and_no_match_error():
    model = TinyCNN()
    names = F.freeze_matching(model, r"^blocks\.0\.")
    assert names and all(n.startswith("blocks.0.") for n in names)
    assert not model.blocks[0][0].weight.requires_grad and model.blocks[1][0].weight.requires_grad
    with pytest.raises(ValueError, match="matched no parameter"):
        F.freeze_matching(model, "decoder")


def test_out_of_range_group_index_is_a_clear_error():
    with pytest.raises(ValueError, match="out of range"):
        F.freeze_to(TinyCNN(), 9)


def test_summary_table_totals():
    model = TinyCNN()
    F.freeze(model)
    table = F.trainable_summary(model)
    total = table.iloc[-1]
    assert total["name"] == "TOTAL" and total["trainable"] == 10
    assert total["params"] == sum(p.numel() for p in model.parameters())
    assert list(table["bn_stats"][:4]) == ["frozen"] * 4


def test_custom_layer_groups_method_wins():
    class Custom(TinyCNN):
        def layer_groups(self):
            return [("body", nn.ModuleList([self.stem, self.blocks])), ("head", self.head)]

    assert [g.name for g in F.layer_groups(Custom())] == ["body", "head"]


def test_transformers_encoder_groups():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    names = [g.name for g in F.layer_groups(BertForSequenceClassification(cfg))]
    assert names == ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1", "bert.encoder.layer.2", "bert.pooler", "classifier"]


def test_torchvision_resnet_groups_are_stages():
    import torchvision

    names = [g.name for g in F.layer_groups(torchvision.models.resnet18())]
    assert names == ["conv1+bn1+relu+maxpool", "layer1", "layer2", "layer3", "layer4", "fc"]


def test_freeze_batchnorm_keeps_statistics_while_weights_train():
    from tlkit.freeze import batchnorm_frozen, freeze_batchnorm, unfreeze

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    unfreeze(model)
    assert freeze_batchnorm(model) == 1
    bn = model[1]
    assert batchnorm_frozen(bn) and not any(p.requires_grad for p in bn.parameters())
    assert model[0].weight.requires_grad and model[4].weight.requires_grad
    before = bn.running_mean.clone()
    model.train()
    model(torch.randn(5, 3, 8, 8))
    assert torch.equal(bn.running_mean, before)


def test_freeze_batchnorm_without_batchnorm_says_so():
    from tlkit.freeze import freeze_batchnorm

    with pytest.raises(ValueError, match="no BatchNorm"):
        freeze_batchnorm(nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------- issue 11: models users bring
def test_batchnorm_without_affine_in_a_frozen_group_keeps_its_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    F.freeze(model)
    model.train()
    bn = model[1]
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 8, 8) * 3 + 1)
    assert torch.equal(bn.running_mean, before) and F.batchnorm_frozen(bn)
    F.unfreeze(model)
    model.train()
    model(torch.randn(4, 3, 8, 8) * 3 + 1)
    assert not torch.equal(bn.running_mean, before), "an unfrozen group's BatchNorm must update again"


def test_a_plain_sequential_is_split_per_layer_and_freeze_freezes():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    assert [g.name for g in F.layer_groups(model)] == ["0", "2", "4"]
    F.freeze(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["4.weight", "4.bias"]


def test_a_head_named_out_is_the_head():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.out = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 2)

    model = Net()
    F.freeze(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["out.weight", "out.bias"]


def test_unfreeze_keeps_what_others_froze_and_says_so():
    model = TinyCNN()
    model.stem[0].weight.requires_grad_(False)  # frozen by design, like Whisper's fixed position table
    F.freeze(model)
    with pytest.warns(UserWarning, match="frozen outside tlkit.*stem.0.weight.*force=True"):
        F.unfreeze(model)
    assert not model.stem[0].weight.requires_grad and model.blocks[0][0].weight.requires_grad
    F.unfreeze(model, force=True)
    assert all(p.requires_grad for p in model.parameters())


def test_tlkit_remembers_its_own_freezing_through_deepcopy():
    import copy

    model = TinyCNN()
    F.freeze(model)
    clone = copy.deepcopy(model)
    F.unfreeze(clone)
    assert all(p.requires_grad for p in clone.parameters())


def test_a_coarse_split_warns_and_names_the_alternative():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    with pytest.warns(UserWarning, match="coarse.*freeze_matching"):
        F.freeze(Two())


def test_a_tied_lm_head_keeps_its_group():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=8, n_embd=8, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0))
    groups = F.layer_groups(model)
    assert groups[-1].name == "lm_head" and groups[-1].params[0] is model.transformer.wte.weight
