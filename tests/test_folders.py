"""Your own data: folders of images/audio and CSV texts load, and every kind of bad input gets one clear message."""

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tlkit.data.folders import (DataFolderError, load_audio_folder, load_image_folder, load_labelled, load_text_csv,
                                make_example_folder)


def _image(path, size=(20, 30), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0]), dtype=np.uint8)).convert(mode).save(path)


def _images(root, classes=("a", "b"), n=3):
    for c in classes:
        for i in range(n):
            _image(root / c / f"{i}.png", size=(16 + 4 * i, 24), mode="RGB" if i % 2 else "L")
    return root


def test_mixed_sizes_and_modes_load_as_one_tensor(tmp_path):
    data = load_image_folder(_images(tmp_path), image_size=32)
    assert data.inputs.shape == (6, 3, 32, 32) and str(data.inputs.dtype) == "torch.uint8"
    assert data.classes == ["a", "b"] and data.counts() == {"a": 3, "b": 3}
    assert len(data.info["sizes"]) == 3  # three different sizes were found and resized


def test_empty_class_and_unreadable_file_are_all_reported_and_nothing_is_changed(tmp_path):
    root = _images(tmp_path)
    (root / "empty").mkdir()
    bad = root / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataFolderError) as err:
        load_image_folder(root)
    message = str(err.value)
    assert "'empty' has 0 readable image files" in message and "cannot read" in message and "broken.png" in message
    assert "delete or replace" in message and bad.read_bytes() == b"\x89PNG not really"
    (root / "empty").rmdir()
    with pytest.raises(DataFolderError, match="cannot read .*broken.png"):
        load_image_folder(root)


def test_one_class_and_loose_files_say_what_to_do(tmp_path):
    with pytest.raises(DataFolderError, match="at least two"):
        load_image_folder(_images(tmp_path / "one", classes=("a",)))
    loose = tmp_path / "loose"
    _image(loose / "x.png")
    with pytest.raises(DataFolderError, match="no class subfolders"):
        load_image_folder(loose)
    with pytest.raises(DataFolderError, match="not a folder"):
        load_image_folder(tmp_path / "missing")


def test_other_files_are_ignored_but_listed(tmp_path):
    root = _images(tmp_path)
    (root / "a" / "notes.txt").write_text("hello")
    assert load_image_folder(root).info["ignored"] == ["a/notes.txt"]


def test_text_csv_reports_missing_columns_and_skips_empty_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("review,stars\ngood,5\n", encoding="utf-8")
    with pytest.raises(DataFolderError, match="no column 'text'.*columns found: \\['review', 'stars'\\]"):
        load_text_csv(path)
    rows = ["text,label"] + [f"good {i},pos" for i in range(3)] + [f"bad {i},neg" for i in range(3)] + [",neg", "meh,"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = load_text_csv(path)
    assert data.classes == ["neg", "pos"] and len(data) == 6 and data.info["skipped_lines"] == [8, 9]
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataFolderError, match="the file is empty"):
        load_text_csv(path)


def test_text_csv_in_another_encoding_says_how_to_read_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(DataFolderError, match="encoding='latin-1'"):
        load_text_csv(path)


def test_audio_folder_resamples_pads_and_reports_broken_files(tmp_path):
    for c in ("yes", "no"):
        (tmp_path / c).mkdir()
        for i in range(3):
            sf.write(tmp_path / c / f"{i}.wav", np.zeros(8000 + 4000 * i, np.float32), 8000)
    data = load_audio_folder(tmp_path, sample_rate=16_000, clip_seconds=1.0)
    assert data.inputs.shape == (6, 16_000) and data.info["longer_than_clip"] == 4  # 1.5 s and 2 s clips in each class
    (tmp_path / "no" / "3.wav").write_bytes(b"RIFF....WAVE")
    with pytest.raises(DataFolderError, match="cannot read .*3.wav"):
        load_audio_folder(tmp_path)


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown kind 'video'"):
        load_labelled(tmp_path, "video")


@pytest.mark.parametrize("kind", ["images", "texts"])
def test_examples_are_real_and_load(tmp_path, kind):
    data = load_labelled(make_example_folder(kind, tmp_path, n_per_class=4), kind)
    assert len(data.classes) == 3 and set(data.counts().values()) == {4}
