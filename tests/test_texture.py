"""The style's texture: the periodic detail tile synthesised from a style image (service/texture.py)
and how the stylizer adds it (training/style/model.py ``add_texture``), on real bundled pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.style import mix_stats, resize_long_side
from service.texture import BANDS, analyse, detail_tile, pyramid, synthesize
from training.style.data import bundled_images
from training.style.model import add_texture


@pytest.fixture(scope="module")
def styles() -> dict[str, np.ndarray]:
    """Two bundled pictures at the side the service analyses styles at: stars on black, and a
    smooth colour wheel."""
    return {
        name: resize_long_side(img, 512) for name, img in bundled_images(["hubble_deep_field", "colorwheel"]).items()
    }


def kurtosis(x: np.ndarray) -> float:
    x = x.ravel() - x.mean()
    return float((x**4).mean() / (x**2).mean() ** 2)


def test_the_tile_is_deterministic_zero_mean_and_periodic(styles):
    """Shifting the noise by a multiple of the pyramid's coarsest step shifts the tile by as much,
    wrapping round: the tile is one period of a texture, so repeating it leaves no seam."""
    tile = detail_tile(styles["hubble_deep_field"])
    assert tile.shape == (3, 256, 256) and tile.dtype == np.float32
    np.testing.assert_array_equal(tile, detail_tile(styles["hubble_deep_field"]))
    assert abs(float(tile.mean())) < 1e-4 and float(tile.std()) > 0.01
    axes, targets = analyse(styles["hubble_deep_field"])
    noise = np.random.default_rng(3).standard_normal((3, 128, 128)).astype(np.float32)
    step = 2**BANDS
    shifted = synthesize(axes, targets, np.roll(noise, (step, 3 * step), axis=(1, 2)))
    np.testing.assert_allclose(
        shifted, np.roll(synthesize(axes, targets, noise), (step, 3 * step), axis=(1, 2)), atol=1e-5
    )


def test_the_tile_has_the_style_s_sparse_detail_not_gaussian_grain(styles):
    """The deep field's fine band is a few bright points on black (heavy tails); the tile's fine
    band has the same quantiles in the style's colour axes, and so the same heavy tails."""
    axes, targets = analyse(styles["hubble_deep_field"])
    tile = detail_tile(styles["hubble_deep_field"])
    fine = pyramid((axes @ tile.reshape(3, -1)).reshape(tile.shape), wrap=True)[0]
    q = np.quantile(fine.reshape(3, -1), (np.arange(256) + 0.5) / 256, axis=1).T
    main = np.argmax([t.std() for t in targets[0]])  # the axis that carries the stars
    spread = targets[0][main, -3] - targets[0][main, 2]
    assert np.abs(q[main] - targets[0][main]).max() < 0.25 * spread
    assert kurtosis(fine[main]) > 8  # a Gaussian's is 3


def test_a_smooth_style_gives_almost_no_texture_and_a_flat_one_none(styles):
    stars, wheel = detail_tile(styles["hubble_deep_field"]), detail_tile(styles["colorwheel"])
    assert wheel.std() < 0.2 * stars.std()
    flat = detail_tile(np.full((40, 70, 3), 128, np.uint8))
    assert not flat.any()


@pytest.mark.parametrize("shape", [(1, 300), (300, 1), (2, 2)])
def test_thin_and_tiny_style_images_give_a_finite_tile(shape):
    pixels = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    tile = detail_tile(resize_long_side(pixels, 512))
    assert tile.shape == (3, 256, 256) and np.isfinite(tile).all()


def test_the_texture_goes_where_the_image_is_smooth_and_scales_with_strength(styles):
    """Where the stylised image is flat the tile is added at (nearly) the full gain; where it has
    strong detail of its own, far less; strength 0 adds nothing; a zero tile changes nothing."""
    tile = torch.from_numpy(detail_tile(styles["hubble_deep_field"]))[None]
    image = torch.full((1, 3, 96, 300), 0.5)
    image[..., 150:] += 0.3 * torch.sign(torch.sin(torch.arange(150.0) * 2.0))  # stripes 1-2 px wide
    image = image.clamp(0, 1)
    out = add_texture(image, tile, torch.ones(1), gain=1.0)
    change = (out - image).abs()
    flat, busy = slice(10, 140), slice(160, 290)  # columns; the tile repeats after 256
    assert float(change[..., flat].sum()) > 0.9 * float(tile[..., :96, flat].abs().sum())  # (clamping aside)
    assert float(change[..., busy].mean()) < 0.25 * float(change[..., flat].mean())
    half = add_texture(image, tile, torch.full((1,), 0.5), gain=1.0)
    inside = (out > 0) & (out < 1)  # not clamped at full strength
    torch.testing.assert_close((half - image)[inside], 0.5 * (out - image)[inside], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(add_texture(image, tile, torch.zeros(1)), image)
    torch.testing.assert_close(add_texture(image, torch.zeros_like(tile), torch.ones(1)), image)


def test_blending_styles_mixes_their_tiles_by_weight(styles):
    a, b = (detail_tile(s) for s in styles.values())
    stats_a = [np.zeros(2, np.float32), np.eye(2, dtype=np.float32), a]
    stats_b = [np.ones(2, np.float32), 2 * np.eye(2, dtype=np.float32), b]
    mixed = mix_stats([stats_a, stats_b], [3, 1])
    np.testing.assert_allclose(mixed[2], 0.75 * a + 0.25 * b, atol=1e-6)
    np.testing.assert_allclose(mixed[0], [0.25, 0.25])  # the statistics as before
