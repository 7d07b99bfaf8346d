"""The GAN's quality measures during and after training: the feature space a run is scored in, the
evaluation samples from fixed seeds, and the fixed-seed sample grid (``metrics.py`` has the maths)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from service.sampling import latents_for_seeds
from training.gan.data import DatasetSplit
from training.gan.metrics import LeNet, Reference, classifier_featurizer, train_classifier, vgg_featurizer
from training.gan.model import Generator
from training.gan.options import CLASSIFIER_SEED, EVAL_SEED, GanOptions
from training.runs import load_checkpoint, save_checkpoint

# The measures logged after every epoch (metrics.jsonl); metrics.json has them all at the end.
EPOCH_MEASURES = ("fid", "precision", "recall", "label_agreement")


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
    path = run / "classifier.pt"
    model = LeNet(o.channels, o.image_size, o.num_classes)
    if path.exists():
        model.load_state_dict(load_checkpoint(path)["model"])
        model = model.to(device).eval()
    else:
        model = train_classifier(
            data.train.images, data.train.labels, o.num_classes, o.classifier_epochs, device, CLASSIFIER_SEED
        )
        save_checkpoint(path, {"model": model.state_dict()})
    with torch.no_grad():
        pred = model(data.held_out.images.to(device)).argmax(1).cpu()
    accuracy = float((pred == data.held_out.labels).float().mean())
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


def measure_quality(
    o: GanOptions, g: Generator, reference: Reference, n: int, device: torch.device, sets: int = 1
) -> dict:
    """FID, precision/recall and class coverage of ``sets`` disjoint sets of ``n`` samples from the
    evaluation seeds (set k from seed 1,000,000 + k n; each epoch's log scores set 0), averaged over
    the sets, and, for a conditional generator, how often the classifier agrees with the label asked for."""
    result = reference.evaluate_sets(
        evaluation_samples(o, g, n, device, EVAL_SEED + k * n) for k in range(sets)
    )  # each set featurized once
    if o.num_classes:
        result["classifier_held_out_accuracy"] = reference.held_out_accuracy
    return result
