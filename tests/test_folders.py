"""A user's image folders with files that are no readable image (a download cut short, a web page
saved under an image's name, a header claiming billions of pixels): the trainers skip them and say
which; a folder with none readable, and a styles folder with any, are refused before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import hostile_images as hostile
from bench.pipeline import TINY_STYLE_ARGS
from training.gan import train as gan_train
from training.gan.data import load_dataset
from training.style import train as style_train
from training.style.data import TrainingImages, content_source, load_image
from training.style.report import held_out_pictures

DAMAGED = {
    "cut-short.jpg": hostile.jpeg(96, 80)[:300],  # the scan data ends early
    "cut-short.png": hostile.truncated_png(),
    "page.jpg": b"<html><body>404 Not Found</body></html>",
    "empty.webp": hostile.empty(),
    "bomb.png": hostile.huge_header_png(),
}


def _damaged(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in DAMAGED.items():
        (folder / name).write_bytes(data)
    return folder


def _photos(folder: Path, n: int, colour: tuple[int, int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour))
    for i in range(n):
        pixels = np.clip(np.array(colour) + rng.integers(-30, 30, size=(80, 96, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i}.{'png' if i % 2 else 'jpg'}")
    return folder


def test_the_gan_trains_on_the_readable_files_and_names_the_others(tmp_path, capsys):
    _photos(tmp_path / "red", 10, (200, 40, 40))
    _photos(tmp_path / "blue", 10, (40, 40, 200))
    _damaged(tmp_path / "blue")
    (tmp_path / "green").mkdir()
    (tmp_path / "green" / "page.jpg").write_bytes(DAMAGED["page.jpg"])  # a class with nothing readable
    split = load_dataset(f"folder:{tmp_path}", 32, 3)
    assert len(split.train) + len(split.held_out) == 20 and split.train.class_names == ["blue", "red"]
    err = capsys.readouterr().err
    assert f"no readable image in green under {tmp_path}: not a class of this dataset" in err
    assert f"skipped {len(DAMAGED) + 1} unreadable image file(s)" in err
    for name in DAMAGED:  # the first five are named (blue's, in path order); green's is the one more
        assert f"blue/{name} (" in err
    assert "and 1 more" in err


def test_a_gan_folder_of_one_image_classes_is_refused(tmp_path):
    for i in range(8):  # 8 images, but a class of one image is never held out
        _photos(tmp_path / f"day{i}", 1, (20 * i, 100, 100))
    with pytest.raises(ValueError, match=r"0 of its 8 images can be held out, and the measures need 4"):
        load_dataset(f"folder:{tmp_path}", 32, 3)


def test_the_gan_trainer_refuses_a_folder_with_no_readable_image(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gan_train.main(["--dataset", f"folder:{_damaged(tmp_path / 'photos')}", "--runs-root", str(tmp_path / "runs")])
    assert e.value.code == 2
    assert f"none of the {len(DAMAGED)} .jpg/.png/.webp files under {tmp_path / 'photos'} is a readable" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()


def test_style_batches_skip_damaged_files_for_readable_ones(tmp_path, capsys):
    folder = _damaged(_photos(tmp_path / "photos", 2, (30, 160, 60)))
    source = content_source(folder)
    assert len(source) == 2 + len(DAMAGED)  # damaged files are found, and skipped when read
    images = TrainingImages(source, crop=32, batch_size=8, seed=0)
    batches = [images[step] for step in range(4)]  # 32 draws, most of them damaged files
    assert all(b.shape == (8, 3, 32, 32) and np.isfinite(b.numpy()).all() for b in batches)
    err = capsys.readouterr().err
    for name in DAMAGED:  # each drawn, said once in this process however often, and not read again
        assert err.count(f"skipping unreadable image {folder / name} (") == 1


def test_an_unreadable_file_is_replaced_by_a_random_readable_one(tmp_path):
    """Not by its neighbour in the listing, which would then be drawn for every damaged file too."""
    folder = _damaged(tmp_path / "photos")  # sorted, the five damaged files come before the two photos
    Image.fromarray(np.full((64, 64, 3), (220, 30, 30), np.uint8)).save(folder / "photo0.png")
    Image.fromarray(np.full((64, 64, 3), (30, 30, 220), np.uint8)).save(folder / "photo1.png")
    images = TrainingImages(content_source(folder), crop=16, batch_size=8, seed=0, colour=False)
    crops = torch.cat([images[step] for step in range(8)])  # 64 crops, 5 in 7 of them drawn damaged
    red = int((crops[:, 0].mean((1, 2)) > crops[:, 2].mean((1, 2))).sum())
    assert 20 <= red <= 44  # about half each; the next readable file instead would be red in 6 of 7


def test_the_style_trainer_refuses_a_content_dir_with_no_readable_image(tmp_path, capsys):
    folder = _damaged(tmp_path / "photos")
    with pytest.raises(SystemExit) as e:
        style_train.main([*TINY_STYLE_ARGS, "--content-dir", str(folder), "--runs-root", str(tmp_path / "runs")])
    assert e.value.code == 2
    assert f"--content-dir {folder}: none of its {len(DAMAGED)} image files is readable" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_report_leaves_damaged_pictures_out_and_says_which(tmp_path, capsys):
    folder = _damaged(_photos(tmp_path / "mine", 1, (90, 90, 200)))
    contents, _ = held_out_pictures(folder, None)
    assert "photo0.jpg" in contents and not any(name in contents for name in DAMAGED)
    assert f"skipped {len(DAMAGED)} unreadable image file(s) under {folder}" in capsys.readouterr().err


def test_export_refuses_a_styles_folder_with_a_damaged_file_before_writing(tmp_path, tiny_style_run, capsys):
    from training.export import main

    styles = _photos(tmp_path / "styles", 1, (200, 200, 40))
    (styles / "page.jpg").write_bytes(DAMAGED["page.jpg"])
    out = tmp_path / "exports"
    code = main(["--style-run", str(tiny_style_run), "--no-gan", "--styles-dir", str(styles), "--out", str(out)])
    assert code == 2
    assert f"styles folder {styles}: not a readable image: page.jpg (fix or remove it)" in capsys.readouterr().err
    assert not out.exists()


def test_training_reads_pixels_as_the_service_does(tmp_path):
    """16-bit grey scaled (Pillow's own conversion clips it nearly white), transparency over white,
    EXIF orientation applied: in the GAN's folders and the style trainer's alike."""
    folder = tmp_path / "odd"
    folder.mkdir()
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "deep.png")  # mode I;16
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (255, 0, 0, 255)  # left half opaque red, right half fully transparent (black)
    Image.fromarray(rgba).save(folder / "cutout.png")
    tall = Image.fromarray(np.full((64, 32, 3), 90, np.uint8))  # stored 32 wide, 64 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees to show it upright (64 wide, 32 tall)
    tall.save(folder / "phone.jpg", exif=exif)

    deep, cutout, phone = (load_image(folder / n) for n in ("deep.png", "cutout.png", "phone.jpg"))
    assert 120 <= deep.mean() <= 135 and deep[0, 0, 0] == 0 and deep[-1, -1, 0] == 255
    assert (cutout[:, :32] == (255, 0, 0)).all() and (cutout[:, 32:] == 255).all()
    assert phone.shape == (32, 64, 3)

    for copy in range(2):  # the GAN needs 8 images: three more of each
        for name in ("deep.png", "cutout.png", "phone.jpg"):
            (folder / f"{copy}{name}").write_bytes((folder / name).read_bytes())
    split = load_dataset(f"folder:{folder}", 32, 3)
    images = torch.cat([split.train.images, split.held_out.images])
    assert images.dtype == torch.uint8  # the pixels as read, held as they are
    means = [float(x.float().mean()) for x in images]  # each 85-170; Pillow's own: 254 and 42
    assert len(means) == 9 and all(80 < m < 180 for m in means)


def test_a_large_jpeg_decoded_smaller_matches_the_full_decode(tmp_path):
    """The GAN's folder read decodes a JPEG at a fraction of its size (no smaller than twice the
    training side): the square it gives is within 45 dB of the full decode's, resized alike."""
    import skimage.data
    from PIL import ImageOps

    from training.gan.data import _read_square

    path = tmp_path / "photo.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((640, 480), Image.Resampling.BICUBIC).save(path, quality=92)
    with Image.open(path) as img:
        img.draft("RGB", (128, 128))
        assert img.size == (320, 240)  # decoded at 1/2: the full 640 x 480 is never made
    drafted, error = _read_square(path, "RGB", 64)
    with Image.open(path) as img:
        full = np.asarray(ImageOps.fit(img.convert("RGB"), (64, 64), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
    assert error is None and drafted.shape == full.shape == (3, 64, 64)
    mse = float(((drafted.astype(np.float64) - full) ** 2).mean())
    assert 10 * np.log10(255**2 / mse) >= 45


def test_a_large_jpeg_for_the_style_trainer_is_decoded_smaller_and_alike(tmp_path):
    import skimage.data

    path = tmp_path / "phone.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((2048, 1536), Image.Resampling.BICUBIC).save(path, quality=92)
    from training.folders import open_rgb

    assert open_rgb(path, at_least=512).shape == (768, 1024, 3)  # decoded at 1/2: both sides still >= 512
    small = load_image(path, max_side=512)
    with Image.open(path) as img:
        full = img.convert("RGB")
        full.thumbnail((512, 512), Image.Resampling.LANCZOS)
    assert small.shape == (384, 512, 3)
    mse = float(((small.astype(np.float64) - np.asarray(full)) ** 2).mean())
    assert 10 * np.log10(255**2 / mse) >= 45
