"""Export: a safe round trip, refused pickles, one-call prediction, ONNX parity (and a broken export caught), latency, card."""

import errno
import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tlkit import export
from tlkit._support import atomic
from tlkit.checkpoint import CheckpointError

CLASSES = ["cat", "dog", "cow"]
IMAGE_PRE = {"kind": "image", "size": 8, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a lost buffer would show
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model.eval()


def build(config):
    assert config["model_name"] == "tiny" and config["num_classes"] == 3
    return tiny_model(seed=123)  # other weights: loading must overwrite all of them


@pytest.fixture()
def saved(tmp_path):
    model = tiny_model()
    folder = export.save_for_inference(tmp_path / "tiny", model, preprocessing=IMAGE_PRE, class_names=CLASSES,
                                       model_name="tiny", metrics={"test_accuracy": 0.9})
    return model, folder


# ---------------------------------------------------------------------------------------------- save / load
def test_round_trip_gives_identical_outputs(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["SHA256SUMS", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["class_names"] == CLASSES and config["metrics"] == {"test_accuracy": 0.9} and config["preprocessing"] == IMAGE_PRE
    loaded = export.load_for_inference(folder, build, "cpu")
    x = torch.randn(5, 3, 8, 8)
    assert not loaded.model.training
    assert torch.equal(loaded.model(x), model(x))
    assert loaded.class_names == CLASSES and loaded.preprocessing == IMAGE_PRE


def test_pickled_files_are_refused(tmp_path):
    model = tiny_model()
    for name in ("model.pt", "model.pth", "model.pkl"):
        torch.save(model, tmp_path / name)
        with pytest.raises(export.UnsafeFormatError, match="pickle"):
            export.load_for_inference(tmp_path / name, build, "cpu")
    with pytest.raises(export.UnsafeFormatError, match="can run any code"):
        export.load_for_inference(tmp_path, build, "cpu")  # a folder holding only pickles


class Boom:
    def __reduce__(self):
        return (print, ("this would have run code",))


def test_a_pickle_disguised_as_safetensors_is_refused_without_running_it(saved, capsys):
    _, folder = saved
    (folder / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(export.UnsafeFormatError, match="holds a pickle"):
        export.load_for_inference(folder, build, "cpu")
    assert "would have run" not in capsys.readouterr().out


def test_tampered_weights_and_escaping_paths_are_refused(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["weights_file"] = "../elsewhere.safetensors"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(export.UnsafeFormatError, match="inside the folder"):
        export.load_for_inference(folder, build, "cpu")
    config["weights_file"] = "model.safetensors"
    config["weights_sha256"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="SHA-256"):
        export.load_for_inference(folder, build, "cpu")


def test_wrong_architecture_and_bad_arguments_are_explained(saved, tmp_path):
    _, folder = saved
    with pytest.raises(CheckpointError, match="do not fit"):
        export.load_for_inference(folder, lambda cfg: nn.Sequential(nn.Linear(2, 3)), "cpu")
    with pytest.raises(ValueError, match="folder, not a file"):
        export.save_for_inference(tmp_path / "m.pt", tiny_model(), preprocessing={}, class_names=CLASSES, model_name="tiny")
    with pytest.raises(TypeError, match="JSON"):
        export.save_for_inference(tmp_path / "m", tiny_model(), preprocessing={"f": print}, class_names=CLASSES, model_name="tiny")
    with pytest.raises(FileNotFoundError, match="save_for_inference"):
        export.load_for_inference(tmp_path / "nothing", build, "cpu")


def same_outputs(loaded, model) -> bool:
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(loaded.model(x), model.eval()(x))


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_full_disk_during_a_re_export_keeps_the_old_export(saved, monkeypatch):
    """Before: the new weights replaced the old ones first, so a failure before config.json left a folder that failed to load."""
    model, folder = saved
    real_write = export.atomic_write

    def full_disk(path, write):
        if path.name == "config.json":  # the new weights are written already
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, write)

    monkeypatch.setattr(export, "atomic_write", full_disk)
    with pytest.raises(CheckpointError, match=r"disk is full.*previous export.*intact"):
        export.save_for_inference(folder, tiny_model(seed=7), preprocessing=IMAGE_PRE, class_names=CLASSES, model_name="tiny")
    monkeypatch.undo()
    assert same_outputs(export.load_for_inference(folder, build, "cpu"), model)
    assert _leftovers(folder.parent) == [], "the half-written new export is removed"


def test_a_kill_between_the_two_renames_is_recovered_on_load(saved, monkeypatch):
    """Without an atomic exchange the old folder waits at a backup name for an instant; a crash there is repaired."""
    model, folder = saved
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # as on macOS, Windows, or a file system without it
    real_replace = os.replace

    def killed(src, dst):
        if os.fspath(dst) == os.fspath(folder) and ".new-" in os.fspath(src):
            raise KeyboardInterrupt  # the process dies: no clean-up code after this runs
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        export.save_for_inference(folder, tiny_model(seed=7), preprocessing=IMAGE_PRE, class_names=CLASSES, model_name="tiny")
    monkeypatch.undo()
    assert not folder.exists() and atomic.backup_name(folder).is_dir()  # the old export, complete, at its backup name
    assert same_outputs(export.load_for_inference(folder, build, "cpu"), model)


def test_re_export_replaces_everything_and_keeps_other_files(saved):
    _, folder = saved
    (folder / "README.md").write_text("# card")
    new = tiny_model(seed=7)
    export.save_for_inference(folder, new, preprocessing=IMAGE_PRE, class_names=CLASSES, model_name="tiny")
    assert same_outputs(export.load_for_inference(folder, build, "cpu"), new)
    assert (folder / "README.md").read_text() == "# card" and _leftovers(folder.parent) == []


def test_a_foreign_folder_is_not_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no tlkit export"):
        export.save_for_inference(tmp_path / "mine", tiny_model(), preprocessing=IMAGE_PRE, class_names=CLASSES, model_name="tiny")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_manifest_covers_the_config_too(saved):
    """Before: only the weights had a digest; an edited config.json (other class names) loaded silently."""
    _, folder = saved
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    config["class_names"] = ["dog", "cat", "cow"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json does not match the SHA-256 in SHA256SUMS"):
        export.load_for_inference(folder, build, "cpu")
    (folder / "SHA256SUMS").unlink()
    with pytest.raises(CheckpointError, match="No SHA256SUMS"):
        export.load_for_inference(folder, build, "cpu")


def test_a_version_1_export_without_manifest_still_loads(saved):
    model, folder = saved
    (folder / "SHA256SUMS").unlink()
    config = json.loads((folder / "config.json").read_text())
    config["version"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    assert same_outputs(export.load_for_inference(folder, build, "cpu"), model)


def test_the_course_small_cnn_export_loads(tmp_path):
    """Before: small_cnn's safetensors header is 0x0b80 bytes long, so its first byte 0x80 was taken for a pickle."""
    from tlkit.models.vision import small_cnn

    model = small_cnn(10, in_channels=1).eval()
    folder = export.save_for_inference(tmp_path / "cnn", model, preprocessing={"kind": "tensor"},
                                       class_names=[str(i) for i in range(10)], model_name="small_cnn")
    assert (folder / "model.safetensors").read_bytes()[:1] == b"\x80"  # the case that was refused
    loaded = export.load_for_inference(folder, lambda cfg: small_cnn(cfg["num_classes"], in_channels=1), "cpu")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_is_safetensors_parses_the_header(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "ok.safetensors")
    assert export.is_safetensors(tmp_path / "ok.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "short").write_bytes(b"\x80\x04")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])  # a tensor's bytes run past the end
    assert not any(export.is_safetensors(tmp_path / n) for n in ("pickle.safetensors", "short", "cut.safetensors"))
    with pytest.raises(export.UnsafeFormatError, match="holds a pickle"):
        export.refuse_unsafe(tmp_path / "pickle.safetensors")


# ---------------------------------------------------------------------------------------------- prediction
def test_predict_one_applies_the_saved_preprocessing(saved):
    model, folder = saved
    loaded = export.load_for_inference(folder, build, "cpu")
    image = np.random.default_rng(0).integers(0, 256, size=(4, 4), dtype=np.uint8)  # a grey image, smaller than size 8
    pred = export.predict_one(loaded, image, top_k=2)
    x = torch.nn.functional.interpolate(torch.tensor(image, dtype=torch.float32)[None, None], size=(8, 8), mode="bilinear",
                                        align_corners=False).round() / 255.0
    with torch.no_grad():
        probs = model(((x - 0.5) / 0.5).expand(1, 3, 8, 8)).softmax(-1)[0]
    assert pred.label == CLASSES[int(probs.argmax())]
    assert pred.probability == pytest.approx(float(probs.max()), abs=1e-6)
    assert len(pred.top_k) == 2 and pred.top_k[0][1] >= pred.top_k[1][1]


def test_predict_one_with_a_custom_preprocess(saved):
    _, folder = saved
    loaded = export.load_for_inference(folder, build, "cpu")
    pred = export.predict_one(loaded, "ignored", preprocess=lambda raw: torch.zeros(1, 3, 8, 8))
    assert pred.label in CLASSES and 0 < pred.probability <= 1
    with pytest.raises(ValueError, match="preprocessing kind"):
        export.preprocess_input({"kind": "audio"}, np.zeros(3))


# ---------------------------------------------------------------------------------------------- ONNX
def test_onnx_export_matches_pytorch_for_any_batch_size(tmp_path):
    model = tiny_model()
    path = export.export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "tiny.onnx")
    diff = export.onnx_parity(model, path, torch.randn(7, 3, 8, 8), atol=1e-5)
    assert 0.0 <= diff <= 1e-5


def test_parity_catches_a_stale_export(tmp_path):
    model = tiny_model()
    path = export.export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "tiny.onnx")
    with torch.no_grad():
        model[-1].bias.add_(0.1)  # the model changed after the export: the file no longer matches it
    with pytest.raises(export.ParityError, match="differ"):
        export.onnx_parity(model, path, torch.randn(4, 3, 8, 8), atol=1e-5)
    assert export.onnx_parity(model, path, torch.randn(4, 3, 8, 8), raise_on_failure=False) == pytest.approx(0.1, abs=1e-5)


def test_parity_catches_a_fixed_batch_export(tmp_path):
    model = tiny_model()
    path = export.export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "fixed.onnx", dynamic_batch=False)
    assert export.onnx_parity(model, path, torch.randn(2, 3, 8, 8), atol=1e-5) <= 1e-5
    with pytest.raises(Exception):  # onnxruntime refuses a batch of 3 for a model exported with a fixed batch of 2
        export.onnx_parity(model, path, torch.randn(3, 3, 8, 8))


def test_export_keeps_the_model_in_its_mode(tmp_path):
    model = tiny_model().train()
    export.export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "t.onnx")
    assert model.training


# ---------------------------------------------------------------------------------------------- latency and card
def test_measure_latency_reports_times_and_counts_calls():
    calls = []
    stats = export.measure_latency(lambda x: calls.append(len(x)), torch.zeros(4, 2), repeats=5, warmup=2)
    assert len(calls) == 7
    assert stats["batch_size"] == 4 and stats["repeats"] == 5
    assert 0 <= stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert stats["per_item_ms"] == pytest.approx(stats["median_ms"] / 4)


def test_model_card_has_the_required_sections(tmp_path):
    info = {"model_name": "tiny", "intended_use": "Teaching.", "data": ["silhouettes", "10 classes"],
            "metrics": {"test accuracy": 0.91234}, "limits": ["fails on inverted images"], "license": "MIT"}
    text = export.write_model_card(tmp_path / "MODEL_CARD.md", info).read_text()
    assert text.startswith("# Model card: tiny")
    for heading in ("## Intended use", "## Data", "## Metrics", "## Limits", "## License"):
        assert heading in text
    assert "| test accuracy | 0.9123 |" in text and "- fails on inverted images" in text
    with pytest.raises(ValueError, match="limits"):
        export.write_model_card(tmp_path / "bad.md", {"intended_use": "x", "data": "y", "metrics": {"a": 1}})


def test_onnx_export_of_a_model_without_parameters(tmp_path):
    """Before: next(model.parameters()) raised a bare StopIteration."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = export.export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "pool.onnx", exporter="torchscript")
    assert export.onnx_parity(model, path, torch.randn(5, 3, 8, 8), atol=1e-6) <= 1e-6


class DataDependent(nn.Module):
    """A forward pass with a Python `if` on a tensor: the tracer freezes whichever branch the example took."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


def test_tracer_warnings_are_passed_on_not_hidden(tmp_path):
    """Before: every warning of the export was silenced, including the tracer's warning that the graph is input-specific."""
    model = DataDependent()
    with pytest.warns(torch.jit.TracerWarning, match="onnx_parity"):
        path = export.export_onnx(model, torch.ones(2, 4), tmp_path / "dd.onnx", exporter="torchscript")
    with pytest.raises(export.ParityError):  # and the warning was right: negative inputs take the other branch
        export.onnx_parity(model, path, -torch.ones(2, 4), atol=1e-5)


def test_a_clean_export_warns_about_nothing_of_the_model(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        export.export_onnx(tiny_model(), torch.randn(2, 3, 8, 8), tmp_path / "tiny.onnx", exporter="torchscript")
