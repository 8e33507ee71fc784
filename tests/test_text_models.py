"""Tests for tlkit.models.text: offline MiniLM, its tokenizer, mean pooling, classifier heads and clear errors."""

from __future__ import annotations

import pytest
import torch

from tlkit.models import text


@pytest.fixture(scope="module")
def backbone():
    return text.load_text_backbone("minilm-l6")


def _embed(model, tokenizer, sentences):
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        return text.mean_pooled_encoder(model).eval()(batch["input_ids"], batch["attention_mask"])


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="minilm-l6.*") as err:
        text.load_text_backbone("roberta-hyper")
    assert all(name in str(err.value) for name in text.KNOWN_TEXT_MODELS)
    assert set(text.available_text_models()) == set(text.KNOWN_TEXT_MODELS)


def test_online_name_while_offline_names_the_offline_default(monkeypatch, tmp_path):
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(text.TextModelUnavailableError, match="minilm-l6"):
        text.load_text_tokenizer("distilbert-base-uncased")


def test_offline_backbone_loads_with_its_own_tokenizer(backbone):
    model, tokenizer = backbone
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert tokenizer.vocab_size == model.config.vocab_size == 30522
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(22.7e6, rel=0.01)


def test_related_sentences_are_closer_than_unrelated(backbone):
    emb = _embed(*backbone, ["My flight was delayed for three hours.", "The plane left hours late.",
                             "I baked a chocolate cake for my sister."])
    assert emb.shape == (3, 384)
    cos = torch.nn.functional.cosine_similarity
    related, unrelated = cos(emb[0], emb[1], dim=0), cos(emb[0], emb[2], dim=0)
    assert related > 0.4 and related > unrelated + 0.3


def test_mean_pooling_ignores_padding(backbone):
    model, tokenizer = backbone
    alone = _embed(model, tokenizer, ["great phone"])
    padded = _embed(model, tokenizer, ["great phone", "a much longer sentence that forces a lot of padding onto the first one"])
    assert torch.allclose(alone[0], padded[0], atol=1e-4)


def test_classifier_has_a_new_head_and_the_pretrained_body(backbone):
    model = text.build_text_classifier("minilm-l6", num_labels=3, classes=["negative", "neutral", "positive"])
    assert model.config.id2label[2] == "positive"
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, backbone[0].embeddings.word_embeddings.weight)
    batch = backbone[1](["good", "bad service"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 3)
    with pytest.raises(ValueError, match="one name per label"):
        text.build_text_classifier("minilm-l6", num_labels=2, classes=["a", "b", "c"])


def test_scratch_classifier_is_small_random_and_uses_the_same_vocabulary():
    torch.manual_seed(0)
    model = text.build_scratch_text_classifier(num_labels=3, num_layers=2, hidden_size=64, num_heads=4)
    assert model.config.vocab_size == 30522 and model.config.num_hidden_layers == 2
    ids = torch.randint(0, 30522, (2, 10))
    assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (2, 3)
    with pytest.raises(ValueError, match="divisible"):
        text.build_scratch_text_classifier(hidden_size=66, num_heads=4)


def test_cached_online_model_loads_offline_without_the_network(monkeypatch, tmp_path):
    """TLKIT_OFFLINE=1 with the model in the Hugging Face cache: it loads from there, and no socket is ever opened."""
    import socket

    from transformers import AutoTokenizer, BertConfig, BertModel

    snapshot = tmp_path / "hub" / "models--bert-base-uncased" / "snapshots" / ("0" * 40)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(snapshot)
    AutoTokenizer.from_pretrained(str(text.minilm_path())).save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)

    def refuse(*args, **kwargs):
        raise AssertionError(f"network use attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model, tokenizer = text.load_text_backbone("bert-base-uncased")
    assert model.config.hidden_size == 32 and tokenizer("hello")["input_ids"][0] == tokenizer.cls_token_id
