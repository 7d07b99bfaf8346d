"""Patch matching (training/style/patches.py) against plain numpy loops on small tensors, and the
property it is there for: a style's stripes reach a flat photo through the served graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.style.patches import (
    OFFSETS,
    best_patches,
    grid_size,
    home_patches,
    overlap_average,
    patch_tones,
    pixel_patches,
    tone_penalty,
    whitened,
)


def numpy_best(content: np.ndarray, style: np.ndarray, stride: int, lights=None, tone: float = 0.0) -> np.ndarray:
    """For each content position, the argmax over style patch centres of <content patch, style
    patch / |style patch|>: 3x3 patches, the content mirrored by one position at its edges. With
    ``lights`` (the content's (h, w) and the style's (nh, nw) patch lights) less ``tone`` times the
    mean query length times the squared distance of the style patch's light from the content's
    light standardised and laid onto the style's spread, in units of 0.25."""
    c, h, w = content.shape
    padded = np.pad(content, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    nh, nw = grid_size(*style.shape[1:], stride)
    queries = [padded[:, i : i + 3, j : j + 3].ravel() for i in range(h) for j in range(w)]
    mean_length = np.mean([np.linalg.norm(q) for q in queries])
    best = np.zeros(h * w, dtype=np.int64)
    for i in range(h):
        for j in range(w):
            query = queries[i * w + j]
            scores = []
            for u in range(nh):
                for v in range(nw):
                    patch = style[:, u * stride : u * stride + 3, v * stride : v * stride + 3].ravel()
                    score = query @ patch / np.linalg.norm(patch)
                    if lights is not None:
                        ours, theirs = lights
                        z = (ours[i, j] - ours.mean()) / ours.std(ddof=1)
                        wanted = theirs.mean() + theirs.std(ddof=1) * z
                        score -= tone * mean_length * ((theirs[u, v] - wanted) / 0.25) ** 2
                    scores.append(score)
            best[i * w + j] = int(np.argmax(scores))
    return best


@pytest.mark.parametrize("stride", [1, 2])
def test_best_patches_finds_what_a_plain_search_finds(stride):
    rng = np.random.default_rng(stride)
    content = rng.normal(size=(1, 4, 5, 7)).astype(np.float32)
    style = rng.normal(size=(1, 4, 9, 8)).astype(np.float32)
    best, nw = best_patches(torch.from_numpy(content), torch.from_numpy(style), stride)
    assert nw == grid_size(9, 8, stride)[1]
    np.testing.assert_array_equal(best[0].numpy(), numpy_best(content[0], style[0], stride))


@pytest.mark.parametrize("stride", [1, 2])
def test_matching_with_the_tone_term_finds_what_a_plain_search_finds(stride):
    rng = np.random.default_rng(10 + stride)
    content = rng.normal(size=(1, 4, 5, 7)).astype(np.float32)
    style = rng.normal(size=(1, 4, 9, 8)).astype(np.float32)
    nh, nw = grid_size(9, 8, stride)
    ours, theirs = rng.uniform(size=(5, 7)), rng.uniform(size=(nh, nw))
    tones = (torch.from_numpy(ours.reshape(1, -1)).float(), torch.from_numpy(theirs.reshape(1, -1)).float())
    best, _ = best_patches(torch.from_numpy(content), torch.from_numpy(style), stride, tones=tones, tone=0.3)
    expected = numpy_best(content[0], style[0], stride, (ours, theirs), 0.3)
    np.testing.assert_array_equal(best[0].numpy(), expected)
    assert (expected != numpy_best(content[0], style[0], stride)).any()  # the term decides some matches


def test_patch_tones_are_the_mean_light_of_each_patchs_pixels():
    rng = np.random.default_rng(3)
    image = rng.uniform(size=(1, 3, 20, 28)).astype(np.float32)
    cell = 2
    light = image[0].mean(0).reshape(10, cell, 14, cell).mean((1, 3))  # per feature position
    theirs = patch_tones(torch.from_numpy(image), cell, stride=2)[0].numpy().reshape(grid_size(10, 14, 2))
    np.testing.assert_allclose(theirs[1, 2], light[2:5, 4:7].mean(), rtol=1e-5)
    padded = np.pad(light, 1, mode="reflect")
    ours = patch_tones(torch.from_numpy(image), cell)[0].numpy().reshape(10, 14)
    np.testing.assert_allclose(ours[0, 13], padded[0:3, 13:16].mean(), rtol=1e-5)


def test_the_tone_term_lays_a_dark_and_light_style_onto_the_photos_dark_and_light_and_asks_nothing_of_stripes():
    """A style of a dark and a light half, its features noise: with the tone term the photo's dark
    half takes patches from the style's dark half and its light half from the light one; without
    it the structure alone decides and both halves mix. A style of stripes finer than a patch has
    one light at the patches' size: the term then changes no match."""
    rng = np.random.default_rng(7)
    style_feat = torch.from_numpy(rng.normal(size=(1, 8, 12, 16)).astype(np.float32))
    content_feat = torch.from_numpy(rng.normal(size=(1, 8, 10, 10)).astype(np.float32))
    cell = 2
    style_image = torch.full((1, 3, 24, 32), 0.85)
    style_image[..., :16] = 0.15  # the left half dark: patch centres in columns 1..6
    photo = torch.full((1, 3, 20, 20), 0.9)
    photo[..., :10, :] = 0.2  # the top half dark
    tones = (patch_tones(photo, cell), patch_tones(style_image, cell, 1))
    nh, nw = grid_size(12, 16, 1)
    dark_photo = np.arange(100).reshape(10, 10) < 40  # rows 0..3: away from the edge between the halves
    light_photo = np.arange(100).reshape(10, 10) >= 60

    def dark_share(best: torch.Tensor, where: np.ndarray) -> float:
        centre_col = best[0].numpy() % nw + 1
        return float((centre_col[where.ravel()] <= 6).mean())

    plain, _ = best_patches(content_feat, style_feat)
    toned, _ = best_patches(content_feat, style_feat, tones=tones, tone=0.5)
    assert dark_share(toned, dark_photo) == 1.0 and dark_share(toned, light_photo) == 0.0
    assert 0.2 < dark_share(plain, dark_photo) < 0.8 and 0.2 < dark_share(plain, light_photo) < 0.8

    stripes = torch.full((1, 3, 24, 32), 0.85)
    stripes[..., ::2] = 0.15  # one pixel wide: every patch (6 x 6 px) the same light
    flat_tones = (patch_tones(photo, cell), patch_tones(stripes, cell, 1))
    assert float(tone_penalty(*flat_tones).abs().max()) < 1e-6
    striped, _ = best_patches(content_feat, style_feat, tones=flat_tones, tone=0.5)
    np.testing.assert_array_equal(striped.numpy(), plain.numpy())


def test_flat_regions_fall_back_on_whole_squares_of_the_style_dealt_out_of_order():
    """``home_patches``: each block x block square of content positions copies a square of the style's
    grid whole (its arrangement: neighbours stay neighbours), and neighbouring squares do not continue
    one another (the style's composition is not laid over the photo)."""
    nh, nw, block = 20, 24, 4
    home = home_patches(12, 16, nh, nw, block, torch.device("cpu")).reshape(12, 16).numpy()
    origins = {}
    for r0 in range(0, 12, block):
        for c0 in range(0, 16, block):
            square = home[r0 : r0 + block, c0 : c0 + block]
            origin = square[0, 0]
            expected = origin + np.arange(block)[:, None] * nw + np.arange(block)[None, :]
            np.testing.assert_array_equal(square, expected)
            origins[r0 // block, c0 // block] = divmod(int(origin), nw)
    continued = [origins[r, c + 1] == (origins[r, c][0], origins[r, c][1] + block) for r, c in origins if c + 1 < 4]
    assert not any(continued) and len(set(origins.values())) > len(origins) // 2


def test_a_flat_photo_takes_the_style_squares_and_structure_overrides_them():
    """With the prior, a position whose patch has no structure (a flat photo, whatever its tone) takes
    its ``home_patches`` patch; a patch with structure still takes its best match."""
    rng = np.random.default_rng(0)
    style = torch.from_numpy(rng.normal(size=(1, 4, 16, 17)).astype(np.float32))
    nh, nw = grid_size(16, 17, 1)
    flat = torch.full((1, 4, 6, 9), 0.7)
    best, _ = best_patches(flat, style, 1, prior=0.2, block=3)
    np.testing.assert_array_equal(best[0].numpy(), home_patches(6, 9, nh, nw, 3, torch.device("cpu")).numpy())
    # a copy of one style patch planted in the flat photo is found where it is
    planted = flat.clone()
    planted[0, :, 1:4, 4:7] = style[0, :, 2:5, 1:4] * 10  # the patch centred at style (3, 2)
    best, _ = best_patches(planted, style, 1, prior=0.2, block=3)
    assert int(best[0, 2 * 9 + 5]) == (3 - 1) * nw + (2 - 1)


def numpy_overlap(grid: np.ndarray, best: np.ndarray, nw: int, stride: int, h: int, w: int, cell: int) -> np.ndarray:
    """``pixel_patches`` / ``overlap_average`` written as a loop over output pixels."""
    k, hs, ws = grid.shape  # values per feature position, as cell x cell blocks of k / cell^2 channels
    channels = k // (cell * cell)
    blocks = grid.reshape(channels, cell, cell, hs, ws)
    centres = best.reshape(h, w)
    out = np.zeros((channels, h * cell, w * cell))
    for y in range(h * cell):
        for x in range(w * cell):
            i, dy, j, dx = y // cell, y % cell, x // cell, x % cell
            total, weights = 0.0, 0.0
            for a, b in OFFSETS:
                centre = centres[min(max(i - a, 0), h - 1), min(max(j - b, 0), w - 1)]
                u, v = (centre // nw) * stride + 1 + a, (centre % nw) * stride + 1 + b
                if cell == 1:
                    weight = 1.0
                else:
                    weight = max(0.0, 1.5 * cell - abs(a * cell + dy - (cell - 1) / 2))
                    weight *= max(0.0, 1.5 * cell - abs(b * cell + dx - (cell - 1) / 2))
                total = total + weight * blocks[:, dy, dx, u, v]
                weights += weight
            out[:, y, x] = total / weights
    return out


@pytest.mark.parametrize("cell", [1, 4])
def test_overlap_average_is_the_plain_weighted_mean_of_the_nine_proposals(cell):
    rng = np.random.default_rng(cell)
    hs, ws, h, w, stride = 6, 7, 3, 5, 2
    nh, nw = grid_size(hs, ws, stride)
    best = rng.integers(0, nh * nw, size=h * w)
    if cell == 1:
        grid = rng.normal(size=(3, hs, ws))
        got = overlap_average(torch.from_numpy(grid)[None], torch.from_numpy(best)[None], nw, stride, h, w)[0]
    else:
        picture = rng.normal(size=(3, hs * cell, ws * cell))
        grid = torch.nn.functional.pixel_unshuffle(torch.from_numpy(picture)[None], cell)[0].numpy()
        got = pixel_patches(torch.from_numpy(picture)[None], torch.from_numpy(best)[None], nw, stride, h, w, cell)[0]
    np.testing.assert_allclose(got.numpy(), numpy_overlap(grid, best, nw, stride, h, w, cell), atol=1e-9)


def test_whitened_features_have_unit_covariance():
    feat = torch.randn(1, 6, 20, 30, dtype=torch.float64) * torch.arange(1, 7, dtype=torch.float64)[None, :, None, None]
    f = whitened(feat, 1e-6).reshape(6, -1)
    cov = f @ f.T / f.shape[1]
    np.testing.assert_allclose(f.mean(1).numpy(), 0, atol=1e-9)
    np.testing.assert_allclose(cov.numpy(), np.eye(6), atol=1e-3)


def stripe_share(image: np.ndarray, period: int) -> float:
    """The share of the spectrum's AC power (of the column profile of the image's luma) at the
    frequency of vertical stripes ``period`` pixels apart (and its two neighbouring bins), the profile's
    straight-line trend (a gradient's) taken out first."""
    profile = (image.astype(np.float64) @ [0.299, 0.587, 0.114]).mean(0)
    power = np.abs(np.fft.rfft(profile - profile.mean())) ** 2
    k = len(profile) // period
    return float(power[k - 1 : k + 2].sum() / power[1:].sum())


def test_the_served_graph_puts_a_styles_stripes_into_a_flat_photo_and_the_statistics_alone_do_not(
    exports_dir, manifest
):
    """A flat photo (one slow swell of colour) in the style of vertical stripes 16 px apart: the stylised
    picture's column profile has most of its power at that period through the served graph; the
    same decoders with the statistics transform alone (the stylizer before patches) paint none."""
    from service.manifest import load_manifest
    from service.runtime import open_session
    from service.style import StyleTransfer
    from training.style.export import load_style_modules
    from training.style.options import load_style_checkpoint
    from training.style.patterns import stripes

    cpu = ["CPUExecutionProvider"]
    sessions = [open_session(exports_dir / manifest["models"][r]["path"], cpu) for r in ("style_encoder", "stylizer")]
    st = StyleTransfer(exports_dir, load_manifest(exports_dir).style, *sessions)
    period = 16
    style = stripes(512, 512, period=period, angle=0.0)
    y, x = np.mgrid[0:128, 0:128]
    wave = 20 * np.sin(2 * np.pi * (x + y / 2) / 128)  # one slow swell across the picture
    flat = np.stack([110 + wave, 140 + wave / 2, 170 - wave], -1).round().astype(np.uint8)
    assert stripe_share(style, period) > 0.8 and stripe_share(flat, period) < 0.01

    painted = st.stylize(flat, st.style_stats(style), 1.0, False, 128)
    assert stripe_share(painted, period) > 0.5

    ckpt = load_style_checkpoint(manifest["style"]["run"] + "/checkpoint.pt")
    *_, encoder, cascade = load_style_modules(
        ckpt, manifest["style"]["levels"], log=lambda s: None, coarse_scales=[8], fine_scales=[4, 2]
    )
    with torch.no_grad():
        to_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
        before = cascade(to_tensor(flat), torch.ones(1), *encoder(to_tensor(style)))
    assert stripe_share((before[0].permute(1, 2, 0).numpy() * 255).round(), period) < 0.1
