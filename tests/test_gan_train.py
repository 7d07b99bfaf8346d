"""GAN training: datasets, options, run folder contents, and resuming a killed run exactly."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from bench.pipeline import REPO, TINY_GAN_ARGS, train_tiny_gan
from training.export import load_generator
from training.gan.data import load_dataset
from training.gan.evaluate import quality_reference
from training.gan.functions import EMA, d_loss, diff_augment, r1_penalty
from training.gan.loop import build_gan, calibration_batches, gan_step, step_generator
from training.gan.options import ADDED_OPTIONS, GanOptions, build_parser, resolve_options, uses_bf16, with_data
from training.gan.train import main
from training.runs import load_checkpoint, save_checkpoint


def test_run_folder_has_everything(tiny_gan_run):
    for name in (
        "options.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "classifier.pt",
        "judge.pt",
        "loss.png",
        "grid.png",
        "metrics.json",
        "samples/epoch_001.png",
        "samples/epoch_002.png",
    ):
        assert (tiny_gan_run / name).exists(), name
    options = json.loads((tiny_gan_run / "options.json").read_text())
    assert options["conditional"] is True and options["num_classes"] == 4
    records = [json.loads(line) for line in (tiny_gan_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:  # every epoch's quality in both spaces, not only the end's
        for space in ("", "independent_"):
            assert r[f"{space}fid"] >= 0 and 0 <= r[f"{space}precision"] <= 1 and 0 <= r[f"{space}recall"] <= 1
            assert 0 <= r[f"{space}label_agreement"] <= 1
    metrics = json.loads((tiny_gan_run / "metrics.json").read_text())
    keys = {"fid", "fid_vs_baseline", "precision", "recall", "coverage", "baseline_real_vs_real", "feature_space"}
    independent = metrics["independent"]
    assert keys <= set(metrics) and keys | {"label_agreement", "classifier_held_out_accuracy"} <= set(independent)
    assert metrics["feature_space"].startswith("FID-LeNet") and independent["feature_space"].startswith("independent")
    for space in (metrics, independent):  # each its own baseline, at the same sample size
        assert space["fid_vs_baseline"] == pytest.approx(space["fid"] / space["baseline_real_vs_real"]["fid"])
        assert space["samples"] == 24 and space["sets"] == 10
    assert independent["baseline_real_vs_real"]["fid"] != metrics["baseline_real_vs_real"]["fid"]
    # the final measures average ten disjoint sample sets (the quick profile's --eval-sets)
    assert metrics["sets"] == 10 and len(metrics["fid_sets"]) == 10
    assert metrics["calibration_latents"] == 4096
    assert len(set(metrics["fid_sets"])) == 10, "the sets are not different latents"
    assert metrics["fid"] == pytest.approx(np.mean(metrics["fid_sets"]))
    assert sum(metrics["coverage"]["histogram"]) == metrics["sets"] * metrics["samples"]
    # the grid: 4 class rows x 10 seed columns of 32 px tiles with 2 px gaps
    assert Image.open(tiny_gan_run / "grid.png").size == (10 * 32 + 9 * 2, 4 * 32 + 3 * 2)


def test_the_exported_generator_keeps_batchnorm_statistics_of_many_latents(tiny_gan_run):
    """Each epoch estimates the EMA generator's BatchNorm statistics from 16 batches; the end estimates
    them again from --calibration-latents (4096 here, 8 times as many), and those are what the
    checkpoint, and so the export, keeps: closer to the statistics of a large independent draw."""
    generator, stored = load_generator(tiny_gan_run)
    options = GanOptions.from_dict(stored)

    def statistics(batches) -> list[torch.Tensor]:
        ema = EMA(generator, 0.0)
        if batches is not None:
            ema.recalibrate(batches)
        norms = [m for m in ema.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        return [torch.cat([m.running_mean, m.running_var.sqrt()]) for m in norms]

    cpu = torch.device("cpu")
    truth = statistics(calibration_batches(options, cpu, 1024, first_seed=9_000_000))  # latents the run never drew
    kept = statistics(None)
    per_epoch = statistics(calibration_batches(options, cpu))
    assert len(truth) >= 2
    for t, k, e in zip(truth, kept, per_epoch):
        error_kept, error_epoch = (k - t).norm().item(), (e - t).norm().item()
        assert error_kept < 0.6 * error_epoch, (error_kept, error_epoch)


def test_killed_run_resumes_exactly(tmp_path):
    """Kill a run with SIGKILL after its first checkpoint; --resume must end where an uninterrupted run ends."""
    # the learning rates decay over the last two epochs: the resumed run must set them by its epoch,
    # not keep the ones its checkpoint's optimiser state was saved with
    reference = train_tiny_gan(tmp_path / "a", extra=["--epochs", "3", "--lr-decay", "0.67"])
    runs = tmp_path / "b"
    args = [*TINY_GAN_ARGS, "--epochs", "3", "--lr-decay", "0.67", "--runs-root", str(runs), "--name", "killed"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.gan.train", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = runs / "gan" / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the run never wrote a checkpoint"
    epoch_at_kill = load_checkpoint(checkpoint)["epoch"]
    assert epoch_at_kill < 3, "the run finished before it could be killed"
    assert main(["--resume", str(runs / "gan" / "killed")]) == 0
    a, b = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(checkpoint)
    assert b["epoch"] == 3 and b["step"] == a["step"]
    for opt in ("opt_g", "opt_d"):  # the last epoch ran at half the rate (1/2 of the two decaying epochs)
        assert [g["lr"] for g in b[opt]["param_groups"]] == [pytest.approx(1e-4)]
    for key in ("generator", "generator_ema", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    records = [json.loads(line) for line in (runs / "gan" / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]  # no epoch logged twice


def test_a_run_from_before_an_option_existed_resumes_and_exports(tmp_path):
    """A checkpoint written before --aux-classifier, --precision and --r1 existed stores none of
    them: --resume and the export read it as that run trained (no class head, float32, no R1)
    instead of failing on the missing keys."""
    run = train_tiny_gan(tmp_path, extra=["--epochs", "1", "--aux-classifier", "0", "--r1", "0"])
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    options = json.loads(checkpoint["options"])
    for key in ADDED_OPTIONS:
        del options[key]
    save_checkpoint(run / "checkpoint.pt", {**checkpoint, "options": json.dumps(options)})
    _, exported_options = load_generator(run)
    assert exported_options["aux_classifier"] == 0 and exported_options["precision"] == "fp32"
    assert main(["--resume", str(run), "--epochs", "2"]) == 0
    resumed = load_checkpoint(run / "checkpoint.pt")
    assert resumed["epoch"] == 2
    written = json.loads(resumed["options"])
    assert {key: written[key] for key in ADDED_OPTIONS} == {
        "aux_classifier": 0,
        "calibration_latents": 65_536,
        "eval_sets": 1,
        "lr_decay": 0,
        "precision": "fp32",
        "r1": 0,
        "r1_every": 16,
    }
    assert not any(key.startswith("classify.") for key in resumed["discriminator"])
    assert json.loads((run / "metrics.json").read_text())["sets"] == 1  # measured as runs were then
    # a finished run is measured again, with more sets, by resuming it with --eval-sets alone
    assert main(["--resume", str(run), "--eval-sets", "3"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sets"] == 3
    # the calibration changes no training: a run from before it gets today's default
    assert metrics["calibration_latents"] == 65_536
    again = load_checkpoint(run / "checkpoint.pt")
    assert again["step"] == resumed["step"]  # no epoch ran
    for key in ("generator", "discriminator"):
        for name, tensor in resumed[key].items():
            assert torch.equal(tensor, again[key][name]), f"{key}.{name} changed"


def test_dry_run_validates_and_writes_nothing(tmp_path, capsys):
    assert main(["--dry-run", "--runs-root", str(tmp_path), "--profile", "full"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["epochs"] == 60 and printed["g_channels"] == 64
    assert not (tmp_path / "gan").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-size", "48"], "image-size"),
        (["--epochs", "0"], "epochs"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--dataset", "folder:/does/not/exist"], "not a folder"),
        (["--diffaugment", "rotate"], "unknown DiffAugment"),
        (["--lr-d", "3"], "lr-d"),
        (["--dataset", "mnist", "--channels", "3"], "grayscale"),
        (["--aux-classifier", "-1"], "aux-classifier"),
        (["--r1", "-1"], "--r1"),
        (["--r1-every", "0"], "--r1"),
        (["--eval-sets", "0"], "eval-sets"),
        (["--lr-decay", "1.5"], "lr-decay"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main([*args, "--runs-root", str(tmp_path)])
    assert e.value.code == 2  # as the style trainer's bad options
    assert message in capsys.readouterr().err
    assert not (tmp_path / "gan").exists()


def test_resume_refuses_changed_training_options_as_the_style_trainer_does(tiny_gan_run, capsys):
    """The rule both trainers share: a resumed run may change only a few options, and any other
    option given with a new value is refused (before it was silently ignored here)."""
    before = (tiny_gan_run / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["--resume", str(tiny_gan_run), "--epochs", "3", "--lr-g", "0.1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--lr-g 0.1 differs from the run's 0.0002" in err and "it may change --epochs, --device" in err
    assert (tiny_gan_run / "checkpoint.pt").read_bytes() == before  # nothing ran
    with pytest.raises(SystemExit) as e:
        main(["--resume", str(tiny_gan_run), "--eval-sets", "0"])
    assert e.value.code == 2 and "--eval-sets must be at least 1" in capsys.readouterr().err


def _write_images(folder, n, size, mode, fmt, colour):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.new(mode, size, colour if mode == "RGB" else colour[0])
        img.save(folder / f"img{i}.{fmt}")


def test_folder_dataset_recursive_labels_and_formats(tmp_path):
    _write_images(tmp_path / "cats" / "deep", 6, (50, 40), "RGB", "png", (255, 0, 0))
    _write_images(tmp_path / "dogs", 6, (40, 60), "L", "jpg", (128,))
    _write_images(tmp_path / "dogs", 4, (64, 64), "RGB", "webp", (0, 0, 255))
    split = load_dataset(f"folder:{tmp_path}", 32, 3)
    assert split.train.class_names == ["cats", "dogs"]
    assert split.train.images.shape[1:] == (3, 32, 32)
    # 10% of each class is one image each: topped up to the 4 the measures need, from the larger class
    assert len(split.train) + len(split.held_out) == 16 and len(split.held_out) == 4
    assert sorted(split.held_out.labels.tolist()) == [0, 1, 1, 1]
    assert split.train.images.dtype == torch.uint8  # a quarter of float32's memory
    cats = split.train.floats()[split.train.labels == 0]
    assert torch.allclose(cats[:, 0], torch.ones_like(cats[:, 0]))  # red stays red after resize/crop
    grey = load_dataset(f"folder:{tmp_path}", 32, 1)
    assert grey.train.images.shape[1] == 1


def test_folder_without_class_folders_is_unlabelled(tmp_path):
    _write_images(tmp_path, 8, (32, 32), "RGB", "png", (10, 20, 30))
    split = load_dataset(f"folder:{tmp_path}", 32, 3)
    assert split.train.labels is None and split.train.class_names is None
    assert (len(split.train), len(split.held_out)) == (4, 4)


def test_a_folder_too_small_to_measure_is_refused_before_any_work(tmp_path, capsys):
    _write_images(tmp_path / "photos", 7, (32, 32), "RGB", "png", (10, 20, 30))
    with pytest.raises(SystemExit) as e:
        main(["--dataset", f"folder:{tmp_path / 'photos'}", "--runs-root", str(tmp_path / "runs")])
    assert e.value.code == 2
    assert "has 7 image(s): too few to train a GAN on and measure it by (at least 8" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _photo_tiles(folder, photo, n, fmt):
    """``n`` 80-px tiles of a scikit-image photo, as real image files (resized to 64 px on loading)."""
    import skimage.data

    img = getattr(skimage.data, photo)()
    folder.mkdir(parents=True, exist_ok=True)
    step = (img.shape[1] - 80) // n
    for i in range(n):
        Image.fromarray(img[40 : 40 + 80, i * step : i * step + 80]).save(folder / f"{photo}{i}.{fmt}")


def test_a_folder_of_colour_photos_trains_exports_and_samples_at_64_px(tmp_path):
    """A user's folder (``--dataset folder:PATH``): 64 px RGB, the class names from the sub-folders,
    through the trainer, the export and the service's sampler on a real ONNX Runtime session; and an
    unlabelled folder, scored in generic features, exported unconditional."""
    from service.gan import GanSampler
    from service.manifest import load_manifest
    from training.export import export_all

    photos = tmp_path / "photos"
    _photo_tiles(photos / "coffee", "coffee", 20, "png")
    _photo_tiles(photos / "cat", "chelsea", 20, "jpg")
    tiny = ["--epochs", "1", "--g-channels", "8", "--d-channels", "8", "--batch-size", "16", "--eval-sets", "1"]
    tiny += ["--classifier-epochs", "1", "--calibration-latents", "512", "--runs-root", str(tmp_path / "runs")]
    assert main(["--dataset", f"folder:{photos}", *tiny, "--name", "labelled"]) == 0
    assert main(["--dataset", f"folder:{photos / 'coffee'}", "--quality-vgg", "random", *tiny, "--name", "flat"]) == 0

    for name, labels in (("labelled", ["cat", "coffee"]), ("flat", None)):
        metrics = json.loads((tmp_path / "runs" / "gan" / name / "metrics.json").read_text())
        assert np.isfinite(metrics["fid"]) and np.isfinite(metrics["baseline_real_vs_real"]["fid"])
        assert ("classifier_held_out_accuracy" in metrics) == (labels is not None)
        assert metrics["feature_space"].startswith("generic: VGG") == (labels is None)
        independent = metrics["independent"]["feature_space"]  # labelled: the judge; else EfficientNet-Lite0
        assert independent.startswith("independent: residual CNN" if labels else "independent: EfficientNet")
        assert np.isfinite(metrics["independent"]["fid_vs_baseline"])
        out = tmp_path / f"exports_{name}"
        export_all(tmp_path / "runs" / "gan" / name, None, out, None, log=lambda line: None)
        entry = load_manifest(out).models.generator  # checksums verified
        assert (entry.image_size, entry.channels, entry.class_labels) == (64, 3, labels)
        session = ort.InferenceSession(str(out / entry.path), providers=["CPUExecutionProvider"])
        sampler = GanSampler(session, entry)
        z = np.random.default_rng(0).standard_normal((2, entry.latent_dim)).astype(np.float32)
        images = sampler.run(np.concatenate([z, z]), [0, 0, 1, 1] if labels else None)
        assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
        if labels:  # the label reaches the generator: the same latents, another class, other pixels
            assert np.array_equal(images[0], sampler.run(z[:1], [0])[0]) and not np.array_equal(images[0], images[2])


def test_mnist_is_padded_to_32_and_split_stratified():
    split = load_dataset("mnist", 32, 1)
    assert split.train.images.shape == (4500, 1, 32, 32) and len(split.held_out) == 500
    assert np.bincount(split.held_out.labels.numpy()).tolist() == [50] * 10
    assert split.train.images.dtype == torch.uint8 and split.train.images[:, :, :2].max() == 0  # black padding
    floats = split.train.floats()
    assert floats.dtype == torch.float32 and floats.min() == -1.0 and floats.max() == 1.0


def test_a_step_trains_both_models_and_leaves_d_trainable():
    """D is frozen only for the generator's backward: after a step both models have moved, D is
    trainable again, and D's gradients are those of its own loss (none leaked in from G's pass)."""
    # the plain losses (the class head and R1 add terms of their own, tested below)
    o = resolve_options(build_parser().parse_args([*TINY_GAN_ARGS, "--aux-classifier", "0", "--r1", "0"]))
    data = load_dataset(o.dataset, o.image_size, o.channels)
    o = replace(with_data(o, data), d_skip_below=0.0)
    gan = build_gan(o, torch.device("cpu"), None)
    assert gan.g.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    g0 = [p.detach().clone() for p in gan.g.parameters()]
    d0 = [p.detach().clone() for p in gan.d.parameters()]
    real, y = data.train.floats()[: o.batch_size], data.train.labels[: o.batch_size]
    gan_step(gan, o, real.contiguous(memory_format=torch.channels_last), y, step_generator(0, 1, torch.device("cpu")))
    assert all(p.requires_grad for p in gan.d.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(g0, gan.g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, gan.d.parameters()))
    # D's gradients left after the step are its own loss's: recompute that from the same starting
    # point and noise, with nothing after it (G's pass through D, were D not frozen, would add to them).
    fresh = build_gan(o, torch.device("cpu"), None)
    rng = step_generator(0, 1, torch.device("cpu"))
    policy = "" if o.diffaugment == "none" else o.diffaugment
    bs = o.batch_size
    z = torch.randn(bs, o.latent_dim, generator=rng)
    half = torch.randint(0, o.num_classes, (bs - bs // 2,), generator=rng)
    fake_y = torch.cat([half, half[: bs // 2]])
    fake = fresh.g(z, fake_y)
    loss = d_loss(
        o.loss,
        fresh.d(diff_augment(real, policy, rng), y),
        fresh.d(diff_augment(fake.detach(), policy, rng), fake_y),
        o.label_smoothing,
    )
    loss.backward()
    for p, q in zip(gan.d.parameters(), fresh.d.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7)


def test_precision_bf16_runs_the_passes_in_bfloat16_and_keeps_the_weights_float32():
    """--precision bf16 (what auto picks on CUDA; CPU autocast runs the same code here): G's and D's
    passes run in bfloat16, the weights, their gradients' updates and the EMA stay float32, and the
    step's losses differ from the float32 step's by bfloat16 rounding only."""
    cpu = torch.device("cpu")
    o = resolve_options(build_parser().parse_args(TINY_GAN_ARGS))
    assert o.precision == "auto" and uses_bf16(o, torch.device("cuda")) and not uses_bf16(o, cpu)
    data = load_dataset(o.dataset, o.image_size, o.channels)
    o = replace(with_data(o, data), d_skip_below=0.0)
    real = data.train.floats()[: o.batch_size].contiguous(memory_format=torch.channels_last)
    y = data.train.labels[: o.batch_size]
    scalars, dtypes = {}, {}
    for precision in ("fp32", "bf16"):
        gan = build_gan(replace(o, precision=precision), cpu, None)
        seen = dtypes[precision] = set()
        for model in (gan.g, gan.d):
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    m.register_forward_hook(lambda _m, _i, out, seen=seen: seen.add(out.dtype))
        scalars[precision] = gan_step(gan, o, real, y, step_generator(0, 1, cpu))["scalars"]
        weights = [*gan.g.parameters(), *gan.d.parameters(), *gan.ema.model.parameters()]
        assert all(p.dtype == torch.float32 for p in weights)
    assert dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    assert torch.isfinite(scalars["bf16"]).all()
    assert not torch.equal(scalars["bf16"], scalars["fp32"])
    torch.testing.assert_close(scalars["bf16"], scalars["fp32"], rtol=0.05, atol=0.02)


def test_lazy_r1_acts_on_every_nth_step_only():
    """``--r1 G --r1-every N``: on a step that is a multiple of N, D's update adds G/2 * N times the
    R1 penalty's gradient; on other steps the update is the plain one."""
    o = resolve_options(build_parser().parse_args([*TINY_GAN_ARGS, "--r1", "5", "--r1-every", "4"]))
    data = load_dataset(o.dataset, o.image_size, o.channels)
    o = replace(with_data(o, data), d_skip_below=0.0)
    cpu = torch.device("cpu")
    real = data.train.floats()[: o.batch_size].contiguous(memory_format=torch.channels_last)
    y = data.train.labels[: o.batch_size]

    def d_grads(r1: float, step: int) -> list[torch.Tensor]:
        gan = build_gan(replace(o, r1=r1), cpu, None)
        gan.step = step
        gan_step(gan, replace(o, r1=r1), real, y, step_generator(0, step, cpu))
        return [p.grad.clone() for p in gan.d.parameters()]

    for p, q in zip(d_grads(5.0, 3), d_grads(0.0, 3)):  # not an R1 step: the same update
        torch.testing.assert_close(p, q)
    with_r1, plain = d_grads(5.0, 4), d_grads(0.0, 4)
    assert any(not torch.allclose(p, q) for p, q in zip(with_r1, plain))
    # the difference is G/2 * N * grad R1, taken from a fresh D at the same start
    fresh = build_gan(o, cpu, None)
    sharp = real.detach().requires_grad_(True)
    (5.0 / 2 * 4 * r1_penalty(sharp, fresh.d(sharp, y))).backward()
    for p, q, r in zip(with_r1, plain, fresh.d.parameters()):  # (the head's bias has no say in the gradient)
        torch.testing.assert_close(p - q, torch.zeros_like(p) if r.grad is None else r.grad, rtol=1e-3, atol=1e-6)


def test_the_aux_classifier_learns_the_real_labels():
    """With ``--aux-classifier`` D has a class head trained on the real images' labels (the generator
    is pushed towards what it reads); without it there is no head to ask."""
    o = resolve_options(build_parser().parse_args([*TINY_GAN_ARGS, "--aux-classifier", "1"]))
    data = load_dataset(o.dataset, o.image_size, o.channels)
    o = replace(with_data(o, data), d_skip_below=0.0)
    gan = build_gan(o, torch.device("cpu"), None)
    # images whose class is their brightness, so that a few steps can learn it
    y = torch.arange(16) % o.num_classes
    noise = 0.1 * torch.randn(16, o.channels, o.image_size, o.image_size, generator=torch.Generator().manual_seed(0))
    real = (y.float() / (o.num_classes - 1) * 1.6 - 0.8)[:, None, None, None] + noise
    real = real.contiguous(memory_format=torch.channels_last)

    def class_loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(gan.d(real, y, classes=True)[1], y))

    before = class_loss()
    for step in range(40):
        gan_step(gan, o, real, y, step_generator(0, step, torch.device("cpu")))
    after = class_loss()
    assert after < 0.5 * before  # these 16 images' labels, learned
    plain = build_gan(replace(o, aux_classifier=0.0), torch.device("cpu"), None)
    assert plain.d.classify is None
    with pytest.raises(ValueError, match="no class head"):
        plain.d(real, y, classes=True)


def test_runs_of_different_seeds_are_scored_by_the_same_classifier(tmp_path):
    data = load_dataset("fake", 32, 1)
    o = with_data(resolve_options(build_parser().parse_args([*TINY_GAN_ARGS, "--runs-root", str(tmp_path)])), data)
    weights = []
    for seed in (0, 1):
        (tmp_path / str(seed)).mkdir()
        reference = quality_reference(replace(o, seed=seed), tmp_path / str(seed), data, torch.device("cpu"), print)
        weights.append(load_checkpoint(tmp_path / str(seed) / "classifier.pt")["model"])
        assert reference.baseline["fid"] >= 0
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_options_round_trip_through_a_checkpoint_and_an_unknown_one_is_named(tiny_gan_run):
    checkpoint = load_checkpoint(tiny_gan_run / "checkpoint.pt")
    stored = json.loads(checkpoint["options"])
    options = GanOptions.from_dict(stored)
    assert options.to_dict() == stored and options.num_classes == 4 and options.class_names == stored["class_names"]
    with pytest.raises(ValueError, match="unknown GAN option.*gamma"):
        GanOptions.from_dict({**stored, "gamma": 1.0})
