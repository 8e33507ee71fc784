"""Image classification datasets by name: the offline animal silhouettes (default) or, for learners who are online,
Oxford-IIIT Pets and Flowers-102 through torchvision, preprocessed the way the chosen backbone expects.

`load_image_dataset("animals", model_name=...)` returns the same DataSplits whatever the name, so a notebook switches
datasets with one word in its config cell. The online ones download into cache_dir("datasets") the first time
(torchvision checks its own MD5 digests of the Pets and Flowers archives) and raise tlkit.settings.OfflineError,
pointing back to "animals", when there is no network. Taught in lesson 03.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from tlkit.data.animals import MEAN as ANIMAL_MEAN, STD as ANIMAL_STD, _cap_per_class, load_animals
from tlkit.data.splits import DataSplits, k_per_class as pick_k_per_class, stratified_split
from tlkit.settings import OfflineError, cache_dir, offline_mode

DEFAULT_DATASET = "animals"
IMAGE_DATASETS = {"animals": "offline", "oxford_pets": "online", "flowers102": "online"}


def available_image_datasets() -> dict[str, str]:
    """Known image datasets and where they come from: {"animals": "offline", "oxford_pets": "online", ...}."""
    return dict(IMAGE_DATASETS)


class _Renormalised(Dataset):
    """Items of a [-1, 1]-normalised image dataset re-normalised to another backbone's mean and std."""

    def __init__(self, base: Dataset, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.base = base
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    @property
    def labels(self) -> np.ndarray:
        """The labels of the underlying dataset."""
        return self.base.labels  # type: ignore[attr-defined]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[i]
        return ((x * ANIMAL_STD + ANIMAL_MEAN) - self.mean) / self.std, y


class _Transformed(Dataset):
    """A subset `indices` of a torchvision dataset of (PIL image, label), with `transform` applied to each image."""

    def __init__(self, base: Any, indices: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.base, self.indices, self.labels, self.transform = base, indices, labels, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[int(self.indices[i])]
        return self.transform(image.convert("RGB")), int(label)


def _transforms(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], augment: bool) -> Callable:
    """torchvision v2 pipeline: (random-resized crop and flip when `augment`, else resize + centre crop), then normalise."""
    from torchvision.transforms import v2

    resize = [v2.RandomResizedCrop(image_size, scale=(0.5, 1.0)), v2.RandomHorizontalFlip()] if augment else \
        [v2.Resize(round(image_size * 256 / 224)), v2.CenterCrop(image_size)]
    return v2.Compose([v2.ToImage(), *resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def _torchvision_splits(name: str, root: Any) -> tuple[Any, Any, list[str]]:
    """(train-and-val source, test source, class names) of an online torchvision dataset; a clear error offline."""
    import torchvision.datasets as tvd

    hint = f"Use dataset={DEFAULT_DATASET!r} (the animal silhouettes install from PyPI and need no network)."

    def make(download: bool) -> tuple[Any, Any]:
        if name == "oxford_pets":
            return tvd.OxfordIIITPet(root, split="trainval", download=download), tvd.OxfordIIITPet(root, split="test", download=download)
        return tvd.Flowers102(root, split="train", download=download), tvd.Flowers102(root, split="test", download=download)

    try:
        train, test = make(download=False)  # already downloaded: no network needed
    except RuntimeError:
        if offline_mode():
            raise OfflineError(f"{name!r} must be downloaded first but offline mode is on (TLKIT_OFFLINE/HF_HUB_OFFLINE). {hint}") from None
        try:
            train, test = make(download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise OfflineError(f"Could not download {name!r} into {root} ({type(err).__name__}: {err}). {hint}") from err
    classes = list(getattr(train, "classes", [])) or [str(i) for i in range(int(np.max(train._labels)) + 1)]
    return train, test, classes


def load_image_dataset(
    name: str = DEFAULT_DATASET,
    *,
    model_name: str = "efficientnet_lite0",
    image_size: int | None = None,
    k_per_class: int | None = None,
    max_per_class: int | None = None,
    augment: bool = False,
    seed: int = 0,
) -> DataSplits:
    """Dataset `name` as DataSplits(train, val, test) normalised for backbone `model_name`. Taught in lesson 03.

    "animals" (default, offline) is tlkit.data.animals.load_animals; "oxford_pets" and "flowers102" download through
    torchvision (val: 10% of their training images). `k_per_class` / `max_per_class` / `augment` / `seed` mean what
    they mean for load_animals; `image_size` defaults to 112 for the silhouettes and the backbone's own size otherwise.
    """
    from tlkit.models.vision import image_preprocess

    if name not in IMAGE_DATASETS:
        known = ", ".join(f"{n} ({s})" for n, s in IMAGE_DATASETS.items())
        raise ValueError(f"Unknown image dataset {name!r}; choose one of: {known}.")
    pre = image_preprocess(model_name)
    if name == "animals":
        splits = load_animals(seed=seed, k_per_class=k_per_class, max_per_class=max_per_class, augment=augment,
                              **({"image_size": image_size} if image_size else {}))
        if tuple(pre.mean) != (ANIMAL_MEAN,) * 3 or tuple(pre.std) != (ANIMAL_STD,) * 3:
            for split in ("train", "val", "test"):
                setattr(splits, split, _Renormalised(getattr(splits, split), pre.mean, pre.std))
            splits.info.update(mean=pre.mean, std=pre.std)
        return splits
    size = image_size or pre.size
    train_src, test_src, classes = _torchvision_splits(name, cache_dir("datasets"))
    labels, test_labels = np.asarray(train_src._labels), np.asarray(test_src._labels)
    train_idx, val_idx, _ = stratified_split(labels, (0.9, 0.1, 0.0), seed=0)
    if k_per_class is not None:
        train_idx = train_idx[pick_k_per_class(labels[train_idx], k_per_class, seed=seed)]
    else:
        train_idx = _cap_per_class(train_idx, labels, max_per_class, seed)
    val_idx = _cap_per_class(val_idx, labels, max_per_class, 0)
    test_idx = _cap_per_class(np.arange(len(test_labels)), test_labels, max_per_class, 0)
    plain = _transforms(size, pre.mean, pre.std, augment=False)
    return DataSplits(
        _Transformed(train_src, train_idx, labels[train_idx], _transforms(size, pre.mean, pre.std, augment) if augment else plain),
        _Transformed(train_src, val_idx, labels[val_idx], plain),
        _Transformed(test_src, test_idx, test_labels[test_idx], plain),
        classes,
        {"source": f"torchvision {name}", "image_size": size, "mean": pre.mean, "std": pre.std,
         "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)}},
    )
