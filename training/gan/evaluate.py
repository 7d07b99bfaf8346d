"""The GAN's quality measures during and after training: the two feature spaces a run is scored in
(FID-LeNet and an independent one that shares only the data), the evaluation samples from fixed
seeds, and the fixed-seed sample grid (``metrics.py`` has the maths)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from service.sampling import latents_for_seeds
from training.gan.data import DatasetSplit
from training.gan.functions import as_float
from training.gan.metrics import (
    LeNet,
    Reference,
    ResidualJudge,
    classifier_featurizer,
    train_classifier,
    train_judge,
    vgg_featurizer,
)
from training.gan.model import Generator
from training.gan.options import CLASSIFIER_SEED, EVAL_SEED, JUDGE_SEED, JUDGE_SPLIT_SEED, GanOptions
from training.runs import load_checkpoint, save_checkpoint

# The measures logged after every epoch (metrics.jsonl; the independent space's prefixed
# ``independent_``); metrics.json has them all at the end.
EPOCH_MEASURES = ("fid", "fid_vs_baseline", "precision", "recall", "label_agreement")


@torch.no_grad()
def generate(
    g: Generator, z: np.ndarray, labels: np.ndarray | None, device: torch.device, batch: int = 500
) -> torch.Tensor:
    out = []
    for i in range(0, len(z), batch):
        zt = torch.from_numpy(z[i : i + batch]).to(device)
        lt = None if labels is None else torch.from_numpy(labels[i : i + batch]).long().to(device)
        out.append(g(zt, lt).cpu())
    return torch.cat(out)


def grid_inputs(o: GanOptions) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The fixed-seed sample grid: columns are seeds 0..9, rows are classes (or 8x8 seeds 0..63)."""
    if o.num_classes:
        cols = 10
        rows = min(o.num_classes, 10)
        seeds = list(range(cols)) * rows
        labels = np.repeat(np.arange(rows), cols)
        return latents_for_seeds(seeds, o.latent_dim), labels, cols
    return latents_for_seeds(list(range(64)), o.latent_dim), None, 8


def quality_reference(
    o: GanOptions, run: Path, data: DatasetSplit, device: torch.device, log: Callable[[str], None]
) -> Reference:
    """The feature space for FID and precision/recall, with the real-vs-real baseline.

    Labelled data: a LeNet classifier trained once per run on the training split from
    ``CLASSIFIER_SEED`` whatever the run's seed (kept in the run folder, so a resumed run reuses
    it); its held-out accuracy is the reference's ``held_out_accuracy``. Unlabelled data: generic
    VGG features, labelled as such.
    """
    if not o.num_classes:
        from training.vgg import load_vgg

        vgg, info = load_vgg(o.quality_vgg, log=log)
        space = f"generic: VGG ({info['source']}) relu4_1 channel means — no classifier for unlabelled data"
        return Reference(vgg_featurizer(vgg.to(device), device), space, data.train.images, data.held_out.images, 0)
    model = kept_or_trained(
        run / "classifier.pt",
        LeNet(o.channels, o.image_size, o.num_classes),
        lambda: train_classifier(
            data.train.images, data.train.labels, o.num_classes, o.classifier_epochs, device, CLASSIFIER_SEED
        ),
        device,
    )
    accuracy = held_out_accuracy(model, data, device)
    space = (
        f"FID-LeNet: classifier trained on the {o.dataset} training split "
        f"(held-out accuracy {accuracy:.4f}), 128-d penultimate layer"
    )
    log(space)
    reference = Reference(
        classifier_featurizer(model, device), space, data.train.images, data.held_out.images, o.num_classes
    )
    reference.held_out_accuracy = accuracy
    return reference


def evaluation_samples(
    o: GanOptions, g: Generator, n: int, device: torch.device, first_seed: int = EVAL_SEED
) -> tuple[torch.Tensor, np.ndarray | None]:
    """``n`` EMA samples from the evaluation seeds ``first_seed`` on, classes cycling when conditional."""
    z = latents_for_seeds(list(range(first_seed, first_seed + n)), o.latent_dim)
    labels = np.arange(n) % o.num_classes if o.num_classes else None
    return generate(g.eval(), z, labels, device), labels


def kept_or_trained(path: Path, model: torch.nn.Module, train: Callable[[], torch.nn.Module], device: torch.device):
    """The feature network a run keeps at ``path`` (loaded into ``model``), or ``train()``'s, then kept there:
    a resumed or re-scored run measures in the same space."""
    if path.exists():
        model.load_state_dict(load_checkpoint(path)["model"])
        return model.to(device).eval()
    model = train()
    save_checkpoint(path, {"model": model.state_dict()})
    return model


def held_out_accuracy(model: LeNet | ResidualJudge, data: DatasetSplit, device: torch.device) -> float:
    with torch.no_grad():
        pred = model(as_float(data.held_out.images).to(device)).argmax(1).cpu()
    return float((pred == data.held_out.labels).float().mean())


def independent_reference(
    o: GanOptions, run: Path, data: DatasetSplit, device: torch.device, log: Callable[[str], None]
) -> Reference | None:
    """The second space, sharing nothing with the first but the images: the same images split by
    another seed, and there a ``ResidualJudge`` trained from ``JUDGE_SEED`` (labelled data; kept as
    judge.pt) or, for unlabelled data, ImageNet EfficientNet-Lite0 features (None, said so, when its
    weights package is not installed). Its own real-vs-real baseline at the same sample sizes."""
    split = data.resplit(JUDGE_SPLIT_SEED)
    if not o.num_classes:
        from training.effnet import EffNetWeightsError, load_effnet

        try:
            effnet = load_effnet(device)
        except EffNetWeightsError as e:
            log(f"no independent feature space for unlabelled data: {e}")
            return None
        space = "independent: EfficientNet-Lite0 (ImageNet) stage5 channel means, another split"
        return Reference(effnet_featurizer(effnet, device), space, split.train.images, split.held_out.images, 0)
    model = kept_or_trained(
        run / "judge.pt",
        ResidualJudge(o.channels, o.image_size, o.num_classes),
        lambda: train_judge(
            split.train.images, split.train.labels, o.num_classes, o.classifier_epochs, device, JUDGE_SEED
        ),
        device,
    )
    accuracy = held_out_accuracy(model, split, device)
    space = (
        f"independent: residual CNN on the centre {model.crop} px, trained on another split of {o.dataset} "
        f"(held-out accuracy {accuracy:.4f}), 64-d pooled features"
    )
    log(space)
    reference = Reference(
        classifier_featurizer(model, device), space, split.train.images, split.held_out.images, o.num_classes
    )
    reference.held_out_accuracy = accuracy
    return reference


def effnet_featurizer(effnet, device: torch.device, batch_size: int = 100):
    """Channel means of EfficientNet-Lite0's deepest stage for images in [-1, 1] (grey as RGB, at least 64 px)."""

    @torch.no_grad()
    def featurize(images: torch.Tensor) -> tuple[np.ndarray, None]:
        out = []
        for i in range(0, len(images), batch_size):
            x = (as_float(images[i : i + batch_size].to(device)) + 1) / 2
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=max(64, x.shape[-1]), mode="bilinear", align_corners=False)
            out.append(effnet(x, ["stage5"])["stage5"].mean(dim=(2, 3)).double().cpu())
        return torch.cat(out).numpy(), None

    return featurize


def measure_quality(
    o: GanOptions, g: Generator, references: list[Reference], n: int, device: torch.device, sets: int = 1
) -> list[dict]:
    """For each space in ``references``: FID, precision/recall and class coverage of ``sets``
    disjoint sets of ``n`` samples from the evaluation seeds (set k from seed 1,000,000 + k n; each
    epoch's log scores set 0), averaged over the sets, and, for a conditional generator, how often
    the space's classifier reads the label asked for. Every space scores the same samples."""
    scores: list[list[dict]] = [[] for _ in references]
    for k in range(sets):
        images, labels = evaluation_samples(o, g, n, device, EVAL_SEED + k * n)
        for reference, scored in zip(references, scores):
            scored.append(reference.score(images, labels))
    return [reference.merge(scored) for reference, scored in zip(references, scores)]
