"""Sample quality in the feature spaces of small classifiers the project trains itself.

FID-LeNet (Fréchet distance of classifier features), k-NN precision/recall (Kynkäänniemi et al.
2019, k=3) and class coverage (histogram of predicted classes, KL to uniform). The same distances
are reported for real held-out images against the training split as the real-vs-real baseline.
An independent space beside it: ``ResidualJudge``, another architecture trained on another split
of the same images (defaults tuned against one space alone overfit it: docs/gan.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from training.gan.functions import as_float


class LeNet(nn.Module):
    """A LeNet-5-style classifier for (N, C, S, S) images in [-1, 1]; ``features`` is the 128-d penultimate layer."""

    def __init__(self, channels: int = 1, image_size: int = 32, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 32, S/2, S/2)
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 64, S/4, S/4)
            nn.AdaptiveAvgPool2d(4),  # (N, 64, 4, 4) for any supported size
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU())  # (N, 128)
        self.out = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int,
    device: torch.device,
    seed: int = 0,
    batch_size: int = 128,
) -> LeNet:
    """Train the evaluation classifier on the training split (small shifts as augmentation)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = LeNet(images.shape[1], images.shape[-1], num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(images), batch_size):
            idx = order[i : i + batch_size]
            x = as_float(images[idx])
            shift = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=shift, dims=(2, 3)).to(device)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


class _Residual(nn.Module):
    """Two 3x3 convolutions with BatchNorm around a shortcut (a 1x1 projection where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        same = stride == 1 and cin == cout
        self.skip = (
            nn.Identity() if same else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class ResidualJudge(nn.Module):
    """The independent space's classifier: a small residual network (He et al. 2016) reading the
    centre 7/8 of (N, C, S, S) images in [-1, 1] (28 of 32 px: MNIST's own digit area), as the
    issue's outside judge read the served samples. 3x3 convolutions, BatchNorm, shortcuts and global
    average pooling where LeNet has 5x5 convolutions, max pooling and a fully-connected layer;
    ``features`` is the 64-d pooled output."""

    def __init__(self, channels: int = 1, image_size: int = 32, num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        self.crop = round(image_size * 7 / 8)
        w0, w1, w2 = widths
        self.stem = nn.Sequential(nn.Conv2d(channels, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU())
        self.blocks = nn.Sequential(
            _Residual(w0, w0, 1),  # (N, w0, 28, 28) at 32 px
            _Residual(w0, w1, 2),  # (N, w1, 14, 14)
            _Residual(w1, w2, 2),  # (N, w2, 7, 7)
        )
        self.out = nn.Linear(w2, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        top = (x.shape[-1] - self.crop) // 2
        x = x[..., top : top + self.crop, top : top + self.crop]
        return self.blocks(self.stem(x)).mean(dim=(2, 3))  # (N, w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


def train_judge(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int,
    device: torch.device,
    seed: int,
    batch_size: int = 64,
) -> ResidualJudge:
    """Train the independent space's classifier on its own split: each image shifted by up to 2 px
    (its own draw; the border filled with black), read at the centre as the judge reads."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ResidualJudge(images.shape[1], images.shape[-1], num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    side = images.shape[-1]
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(images), batch_size):
            idx = order[i : i + batch_size]
            padded = F.pad(as_float(images[idx]), (2, 2, 2, 2), value=-1.0)
            dy, dx = torch.randint(0, 5, (2, len(idx)), generator=g)
            x = torch.stack([padded[k, :, t : t + side, u : u + side] for k, (t, u) in enumerate(zip(dy, dx))])
            loss = F.cross_entropy(model(x.to(device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def classify(
    model: LeNet | ResidualJudge, images: torch.Tensor, device: torch.device, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D) float64, predicted classes (N,))."""
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(as_float(images[i : i + batch_size].to(device)))
        feats.append(f.double().cpu())
        preds.append(model.out(f).argmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(preds).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # near-singular covariances of poor samples
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# Precision and recall's k: each point's ball reaches its k-th nearest neighbour, so a set needs k + 1 points.
NEIGHBOURS = 3


# Distances are computed in blocks of rows of at most this many entries (256 MB of float64), so a
# folder's 45,000 training features need no 16 GB matrix; MNIST's 4,500 fit in one block.
PAIRWISE_BLOCK = 1 << 25


def _row_blocks(a: np.ndarray, b: np.ndarray):
    """(slice of ``a``'s rows, their distances to every row of ``b``), block by block."""
    rows = max(1, PAIRWISE_BLOCK // max(1, len(b)))
    for start in range(0, len(a), rows):
        yield slice(start, start + rows), _pairwise(a[start : start + rows], b)


def knn_radii(x: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour within the same set."""
    radii = np.empty(len(x))
    for rows, d in _row_blocks(x, x):
        radii[rows] = np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself
    return radii


def ball_coverage(ref: np.ndarray, ref_radii: np.ndarray, query: np.ndarray) -> float:
    """Share of ``query`` points inside at least one k-NN ball of ``ref``."""
    inside = np.empty(len(query), dtype=bool)
    for rows, d in _row_blocks(query, ref):
        inside[rows] = (d <= ref_radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = NEIGHBOURS, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019): each set's share inside the other's k-NN balls."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    return ball_coverage(real, real_radii, fake), ball_coverage(fake, knn_radii(fake, k), real)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def class_coverage(predictions: np.ndarray, num_classes: int) -> dict[str, object]:
    """Histogram of predicted classes, the number of classes seen and KL(histogram || uniform) in nats."""
    hist = np.bincount(predictions, minlength=num_classes).astype(np.float64)
    p = hist / hist.sum()
    nz = p > 0
    kl = float((p[nz] * np.log(p[nz] * num_classes)).sum())
    return {"histogram": hist.astype(int).tolist(), "classes_seen": int(nz.sum()), "kl_to_uniform": kl}


Featurizer = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray | None]]


def classifier_featurizer(model: LeNet | ResidualJudge, device: torch.device) -> Featurizer:
    return lambda images: classify(model, images, device)


def vgg_featurizer(vgg: nn.Module, device: torch.device, batch_size: int = 100) -> Featurizer:
    """Generic features for unlabelled data: channel means of VGG relu4_1 (512-d), no class predictions."""

    @torch.no_grad()
    def featurize(images: torch.Tensor) -> tuple[np.ndarray, None]:
        out = []
        for i in range(0, len(images), batch_size):
            x = (as_float(images[i : i + batch_size].to(device)) + 1) / 2  # [-1, 1] -> [0, 1]
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=max(64, x.shape[-1]), mode="bilinear", align_corners=False)
            out.append(vgg(x)[vgg.last_layer].mean(dim=(2, 3)).double().cpu())
        return torch.cat(out).numpy(), None

    return featurize


class Reference:
    """Features of the real images, computed once per run, and the real-vs-real baseline.

    Generated sets should have as many images as the held-out split, so both sides of each
    comparison carry the same small-sample bias.
    """

    def __init__(
        self,
        featurize: Featurizer,
        feature_space: str,
        train_images: torch.Tensor,
        held_out_images: torch.Tensor,
        num_classes: int,
    ):
        self.featurize, self.feature_space, self.num_classes = featurize, feature_space, num_classes
        self.held_out_accuracy: float | None = None  # a classifier's, when the space is one's
        self.train_features, _ = featurize(train_images)
        self.train_radii = knn_radii(self.train_features)
        self.baseline = self._measures(*featurize(held_out_images))

    def _measures(self, features: np.ndarray, predictions: np.ndarray | None) -> dict[str, object]:
        precision, recall = precision_recall(self.train_features, features, real_radii=self.train_radii)
        result: dict[str, object] = {
            "fid": frechet_distance(features, self.train_features),
            "precision": precision,
            "recall": recall,
        }
        if predictions is not None:
            result["coverage"] = class_coverage(predictions, self.num_classes)
        return result

    def evaluate_sets(self, sets: Iterable[tuple[torch.Tensor, np.ndarray | None]]) -> dict[str, object]:
        """The measures of several disjoint sample sets, each the held-out split's size, averaged
        over the sets: one set's FID at this size depends on the latents drawn as much as on the
        generator (docs/gan.md, "Ten sample sets"); the mean of K sets estimates the same quantity
        with a spread about sqrt(K) times smaller."""
        return self.merge([self.score(images, labels) for images, labels in sets])

    def score(self, images: torch.Tensor, labels: np.ndarray | None) -> dict[str, object]:
        """One set's measures (``_scored``), with what ``merge`` needs of its predictions."""
        features, predicted = self.featurize(images)
        return {**self._scored(features, predicted, labels), "_predicted": predicted, "_asked": labels}

    def merge(self, scores: list[dict[str, object]]) -> dict[str, object]:
        """The sets' ``score``s as one: means, each set's FID in ``fid_sets`` and their spread, FID as a
        multiple of the baseline's; coverage and label agreement over all the samples."""
        predictions, asked = [r["_predicted"] for r in scores], [r["_asked"] for r in scores]
        results = [{k: v for k, v in r.items() if not k.startswith("_")} for r in scores]
        fids = [r["fid"] for r in results]
        merged = {
            **results[0],
            "fid": float(np.mean(fids)),
            "fid_sets": fids,
            "fid_std": float(np.std(fids)),
            "fid_vs_baseline": float(np.mean(fids) / self.baseline["fid"]),
            "precision": float(np.mean([r["precision"] for r in results])),
            "recall": float(np.mean([r["recall"] for r in results])),
            "sets": len(results),
        }
        if predictions[0] is not None:
            merged["coverage"] = class_coverage(np.concatenate(predictions), self.num_classes)
        if predictions[0] is not None and asked[0] is not None:
            merged["label_agreement"] = float((np.concatenate(predictions) == np.concatenate(asked)).mean())
        if self.held_out_accuracy is not None:
            merged["classifier_held_out_accuracy"] = self.held_out_accuracy
        return merged

    def _scored(
        self, features: np.ndarray, predictions: np.ndarray | None, labels: np.ndarray | None
    ) -> dict[str, object]:
        """FID, precision/recall (k=3) and class coverage of one set's features, beside the real-vs-real
        baseline; with the ``labels`` they were asked for (and a classifier), how often it agrees."""
        result = {
            **self._measures(features, predictions),
            "baseline_real_vs_real": self.baseline,
            "samples": int(len(features)),
            "feature_space": self.feature_space,
        }
        if labels is not None and predictions is not None:
            result["label_agreement"] = float((predictions == labels).mean())
        return result
