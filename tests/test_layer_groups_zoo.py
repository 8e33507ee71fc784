"""Layer groups on the models users bring: torchvision, timm, transformers, peft and the course's own, all tiny, on CPU.

For every model: groups follow the forward pass, the head group holds every newly initialised head part, `freeze()`
trains exactly the head, there are at least 3 groups or a warning says why not, `unfreeze()` leaves alone what
someone else froze (Whisper's fixed position table, peft's base weights), and a tied weight drops no group.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from tlkit import freeze as F


@dataclass
class Case:
    """A model, an example input (positional tensor or keyword dict), the parameter-name prefixes of its new head."""

    model: nn.Module
    inputs: torch.Tensor | dict
    head: tuple[str, ...]
    coarse: bool = False  # expected to warn that freezing by group is coarse


def _image(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size)


def _ids(n: int = 6) -> dict:
    return {"input_ids": torch.randint(3, 50, (2, n)), "attention_mask": torch.ones(2, n, dtype=torch.long)}


TEXT = dict(vocab_size=64, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32, num_labels=3)
AUDIO = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
             conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
             classifier_proj_size=8, num_labels=3)
WHISPER = dict(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
               max_source_positions=16, max_target_positions=16, classifier_proj_size=8, num_labels=3,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


# ------------------------------------------------------------------------------------------- torchvision
def tv_resnet18() -> Case:
    import torchvision

    return Case(torchvision.models.resnet18(num_classes=3), _image(), ("fc.",))


def tv_mobilenet_v3_small() -> Case:
    import torchvision

    return Case(torchvision.models.mobilenet_v3_small(num_classes=3), _image(), ("classifier.3.",))


def tv_vgg11_bn() -> Case:
    """vgg11_bn's layout (8 conv-BN-ReLU, 5 max-pools, a 3-Linear classifier) with narrow layers, built on meta first."""
    import torchvision
    from torchvision.models.vgg import make_layers

    with torch.device("meta"):
        model = torchvision.models.vgg11_bn()
    model.features = make_layers([4, "M", 8, "M", 8, 8, "M", 8, 8, "M", 8, 8, "M"], batch_norm=True)
    model.classifier = nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, 16),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(16, 3))
    return Case(model, _image(), ("classifier.6.",))


def tv_efficientnet_b0() -> Case:
    import torchvision

    return Case(torchvision.models.efficientnet_b0(num_classes=3), _image(), ("classifier.",))


def tv_convnext() -> Case:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    cfg = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 16, 1), CNBlockConfig(16, None, 2)]
    return Case(ConvNeXt(cfg, num_classes=3), _image(), ("classifier.2.",))


def tv_vit() -> Case:
    from torchvision.models.vision_transformer import VisionTransformer

    return Case(VisionTransformer(32, 8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3), _image(), ("heads.",))


def tv_swin() -> Case:
    from torchvision.models.swin_transformer import SwinTransformer

    model = SwinTransformer([4, 4], embed_dim=8, depths=[1, 1, 2], num_heads=[1, 2, 2], window_size=[2, 2], num_classes=3)
    return Case(model, _image(), ("head.",))


def tv_densenet() -> Case:
    from torchvision.models.densenet import DenseNet

    return Case(DenseNet(growth_rate=4, block_config=(6, 12, 24, 16), num_init_features=8, bn_size=2, num_classes=3), _image(), ("classifier.",))


def tv_regnet() -> Case:
    import torchvision

    return Case(torchvision.models.regnet_y_400mf(num_classes=3), _image(), ("fc.",))


# ------------------------------------------------------------------------------------------- timm
def _timm(name: str, **kwargs) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=3, **kwargs)


def timm_lite0() -> Case:
    return Case(_timm("tf_efficientnet_lite0"), _image(), ("classifier.",))


def timm_lite1() -> Case:
    return Case(_timm("tf_efficientnet_lite1"), _image(), ("classifier.",))


def timm_lite2() -> Case:
    return Case(_timm("tf_efficientnet_lite2"), _image(), ("classifier.",))


def timm_resnet() -> Case:
    return Case(_timm("resnet18"), _image(), ("fc.",))


def timm_vit_tiny() -> Case:
    return Case(_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, embed_dim=16, num_heads=2), _image(), ("head.",))


def timm_convnext() -> Case:
    return Case(_timm("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 16, 16)), _image(), ("head.",))


def timm_swin() -> Case:
    model = _timm("swin_tiny_patch4_window7_224", img_size=32, window_size=2, embed_dim=8, depths=(1, 1, 2), num_heads=(1, 2, 2))
    return Case(model, _image(), ("head.",))


# ------------------------------------------------------------------------------------------- transformers
def hf_bert() -> Case:
    from transformers import BertConfig, BertForSequenceClassification

    return Case(BertForSequenceClassification(BertConfig(**TEXT)), _ids(), ("classifier.",))


def hf_distilbert() -> Case:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(vocab_size=64, dim=16, n_layers=3, n_heads=2, hidden_dim=32, max_position_embeddings=32, num_labels=3)
    return Case(DistilBertForSequenceClassification(cfg), _ids(), ("pre_classifier.", "classifier."))


def hf_roberta() -> Case:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    return Case(RobertaForSequenceClassification(RobertaConfig(**TEXT, pad_token_id=1)), _ids(), ("classifier.",))


def hf_albert() -> Case:
    from transformers import AlbertConfig, AlbertForSequenceClassification

    model = AlbertForSequenceClassification(AlbertConfig(**TEXT, embedding_size=8))
    return Case(model, _ids(), ("classifier.",), coarse=True)


def hf_deberta_v2() -> Case:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    cfg = DebertaV2Config(**TEXT, relative_attention=True, position_buckets=8, norm_rel_ebd="layer_norm", conv_kernel_size=3,
                          pos_att_type=["p2c", "c2p"])
    return Case(DebertaV2ForSequenceClassification(cfg), _ids(), ("pooler.", "classifier."))


def hf_electra() -> Case:
    from transformers import ElectraConfig, ElectraForSequenceClassification

    return Case(ElectraForSequenceClassification(ElectraConfig(**TEXT, embedding_size=8)), _ids(), ("classifier.",))


def hf_wav2vec2() -> Case:
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    return Case(Wav2Vec2ForSequenceClassification(Wav2Vec2Config(**AUDIO)), torch.randn(2, 800), ("projector.", "classifier."))


def hf_hubert() -> Case:
    from transformers import HubertConfig, HubertForSequenceClassification

    return Case(HubertForSequenceClassification(HubertConfig(**AUDIO)), torch.randn(2, 800), ("projector.", "classifier."))


def hf_whisper_classifier() -> Case:
    from transformers import WhisperConfig, WhisperForAudioClassification

    return Case(WhisperForAudioClassification(WhisperConfig(**WHISPER)), torch.randn(2, 8, 32), ("projector.", "classifier."))


def hf_whisper_encoder() -> Case:
    from transformers import WhisperConfig, WhisperModel

    encoder = WhisperModel(WhisperConfig(**WHISPER)).encoder  # a bare encoder: its last group is the final LayerNorm
    return Case(encoder, torch.randn(2, 8, 32), ("layer_norm.",))


def hf_gpt2_lm() -> Case:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)  # lm_head.weight is wte.weight
    return Case(GPT2LMHeadModel(cfg), {"input_ids": torch.randint(0, 64, (2, 6))}, ("lm_head.",))


def hf_t5() -> Case:
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0)
    ids = torch.randint(0, 64, (2, 6))
    return Case(T5ForConditionalGeneration(cfg), {"input_ids": ids, "decoder_input_ids": ids}, ("lm_head.",))


# ------------------------------------------------------------------------------------------- course models and others
def course_image_classifier() -> Case:
    from tlkit.models.vision import build_classifier

    return Case(build_classifier(num_classes=3, pretrained=False), _image(), ("head.",))


def course_small_cnn() -> Case:
    from tlkit.models.vision import small_cnn

    return Case(small_cnn(3, in_channels=1, width=4), torch.randn(2, 1, 16, 16), ("8.",))


def course_speech_classifier() -> Case:
    from transformers import WhisperConfig, WhisperModel

    from tlkit.models.whisper import SpeechClassifier

    return Case(SpeechClassifier(WhisperModel(WhisperConfig(**WHISPER)).encoder, 3), torch.randn(2, 8, 20), ("head.",))


def course_hf_speech_classifier() -> Case:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from tlkit.models.whisper import HFSpeechClassifier

    return Case(HFSpeechClassifier(Wav2Vec2Model(Wav2Vec2Config(**AUDIO)), 3), torch.randn(2, 800), ("head.",))


def course_scratch_text() -> Case:
    from tlkit.models.text import build_scratch_text_classifier

    model = build_scratch_text_classifier(3, vocab_size=64, num_layers=2, hidden_size=16, num_heads=2, max_length=32)
    return Case(model, _ids(), ("classifier.",))


def plain_sequential() -> Case:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    return Case(model, torch.randn(2, 6), ("4.",))


class _OutHead(nn.Module):
    """A hand-written CNN whose head is called `out`, its layers plain attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, affine=False)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        x = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu())).relu()
        return self.out(x.mean(dim=(2, 3)))


def head_named_out() -> Case:
    return Case(_OutHead(), _image(12), ("out.",))


def peft_lora_bert() -> Case:
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    base = BertForSequenceClassification(BertConfig(**TEXT))
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]))
    return Case(model, _ids(), ("base_model.model.classifier.modules_to_save.",))


def peft_lora_whisper() -> Case:
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperConfig, WhisperForAudioClassification

    base = WhisperForAudioClassification(WhisperConfig(**WHISPER))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["projector", "classifier"]))
    return Case(model, torch.randn(2, 8, 32), ("base_model.model.projector.modules_to_save.", "base_model.model.classifier.modules_to_save."))


ZOO: dict[str, Callable[[], Case]] = {f.__name__: f for f in [
    tv_resnet18, tv_mobilenet_v3_small, tv_vgg11_bn, tv_efficientnet_b0, tv_convnext, tv_vit, tv_swin, tv_densenet, tv_regnet,
    timm_lite0, timm_lite1, timm_lite2, timm_resnet, timm_vit_tiny, timm_convnext, timm_swin,
    hf_bert, hf_distilbert, hf_roberta, hf_albert, hf_deberta_v2, hf_electra, hf_wav2vec2, hf_hubert, hf_whisper_classifier,
    hf_whisper_encoder, hf_gpt2_lm, hf_t5,
    course_image_classifier, course_small_cnn, course_speech_classifier, course_hf_speech_classifier, course_scratch_text,
    plain_sequential, head_named_out, peft_lora_bert, peft_lora_whisper,
]}


# ------------------------------------------------------------------------------------------- checks
class _FirstUse(TorchFunctionMode):
    """Records the order in which parameters are first read by any torch operation during a forward pass."""

    def __init__(self, params: set[int]) -> None:
        super().__init__()
        self.params, self.order = params, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        stack = [*args, *(kwargs or {}).values()]
        while stack:
            a = stack.pop(0)
            if isinstance(a, (list, tuple)):
                stack = list(a) + stack
            elif isinstance(a, torch.Tensor) and id(a) in self.params and id(a) not in self.order:
                self.order.append(id(a))
        return func(*args, **(kwargs or {}))


def _run(case: Case) -> None:
    with torch.no_grad():
        case.model(**case.inputs) if isinstance(case.inputs, dict) else case.model(case.inputs)


def _by_name(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}


@pytest.fixture(scope="module", params=list(ZOO))
def case(request) -> Case:
    torch.manual_seed(0)
    built = ZOO[request.param]()
    built.model.eval()
    return built


def test_the_zoo_is_large_enough():
    assert len(ZOO) >= 25


def test_groups_follow_the_forward_pass(case):
    groups = F.layer_groups(case.model)
    tied = {id(p) for p, n in _counts(case.model).items() if n > 1}
    index = {id(p): i for i, g in enumerate(groups) for p in g.params if id(p) not in tied}
    mode = _FirstUse(set(index))
    with mode:
        _run(case)
    seen = [index[i] for i in mode.order]
    firsts = sorted(set(seen), key=seen.index)
    names = [groups[i].name for i in firsts]
    assert firsts == sorted(firsts), f"groups are read in the order {names}"


def _counts(model: nn.Module) -> dict:
    counts: dict = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                counts[p] = counts.get(p, 0) + 1
    return counts


def test_each_parameter_in_one_group_and_no_group_empty(case):
    groups = F.layer_groups(case.model)
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(case.model.parameters()))
    assert all(g.params for g in groups)


def test_the_head_group_holds_every_new_head_part(case):
    names = _by_name(case.model)
    head = {names[id(p)] for p in F.layer_groups(case.model)[-1].params}
    expected = {n for n in names.values() if n.startswith(case.head)}
    tied = {names[id(p)] for p, n in _counts(case.model).items() if n > 1}
    assert expected and expected <= head | tied, f"missing from the head: {sorted(expected - head)}"
    fixed = {n for n, p in case.model.named_parameters() if not p.requires_grad}  # e.g. peft's frozen original classifier
    extra = {n for n in head if not n.startswith(case.head) and n not in tied | fixed}
    assert not extra, f"the head also holds {sorted(extra)}"


def test_freeze_trains_exactly_the_head_and_unfreeze_respects_others(case):
    model = case.model
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}  # frozen by design (Whisper, peft)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F.freeze(model)
    coarse = [w for w in caught if "coarse" in str(w.message)]
    assert bool(coarse) == case.coarse, [str(w.message) for w in caught]
    assert len(F.layer_groups(model)) >= 3 or coarse
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n, p in model.named_parameters() if id(p) in {id(q) for q in F.layer_groups(model)[-1].params}}
    assert trainable == head - fixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F.unfreeze(model)
    after = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert after == fixed, f"unfreeze changed what was frozen by design: {sorted(after ^ fixed)[:5]}"
