"""Universal style-transfer maths (training/style/functions.py) and networks (training/style/model.py, decoder.py),
and the service's style mixing (service/style.py), each against an independent expectation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.style import MIN_FEATURE_SIDE as SERVED_MIN_FEATURE_SIDE
from service.style import mix_stats, pad_for_cascade
from training.style.decoder import MIN_FEATURE_SIDE, Decoder, build_decoder, decoder_config, padding_plan
from training.style.functions import (
    COV_EPS,
    NS_ITERS,
    STYLE_COV_EPS,
    blend,
    content_loss,
    feature_stats,
    gram_matrix,
    mean_std,
    ns_iters,
    regularised,
    sqrt_and_inv_sqrt,
    statistics_map,
    style_factor,
    style_loss_gram,
    style_loss_mean_std,
    total_variation,
    transform_matrix,
    transform_matrix_eigh,
)
from training.style.levels import feature_channels, levels_up_to, size_multiple
from training.style.model import Cascade, StyleEncoder, check_scales, default_scales
from training.style.pyramid import enlarge, half_size, keep_shading, laplacian_pyramid, luma
from training.vgg_net import VGGFeatures


def _feat(seed: int, shape=(2, 5, 6, 7)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 3 + 1


def _correlated(seed: int, n: int = 1, c: int = 6, hw: int = 400) -> torch.Tensor:
    """Features (n, c, hw/20, 20): a random, far from diagonal, well-conditioned covariance and a
    non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(c, c, generator=g))[0]
    mix = rotation * torch.linspace(1, 3, c)  # covariance eigenvalues 1..9, random eigenvectors
    base = torch.randn(n, c, hw, generator=g)
    return (mix @ base + torch.randn(c, 1, generator=g) * 4).reshape(n, c, hw // 20, 20).double()


def test_mean_std_matches_numpy_definition():
    f = _feat(0)
    mean, std = mean_std(f, eps=1e-5)
    a = f.double().numpy()
    np_mean = a.mean(axis=(2, 3))
    np_std = np.sqrt(((a - np_mean[..., None, None]) ** 2).mean(axis=(2, 3)) + 1e-5)
    np.testing.assert_allclose(mean.numpy(), np_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), np_std, rtol=1e-5, atol=1e-6)


def test_feature_stats_match_numpy_mean_and_biased_covariance():
    f = _feat(1, (2, 4, 5, 3))
    mean, cov = feature_stats(f)
    for i in range(2):
        x = f[i].reshape(4, -1).double().numpy()
        np.testing.assert_allclose(mean[i].numpy(), x.mean(axis=1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cov[i].numpy(), np.cov(x, bias=True), rtol=1e-4, atol=1e-4)


def test_newton_schulz_roots_square_back_and_invert():
    a = regularised(feature_stats(_correlated(2))[1])
    root, inv_root = sqrt_and_inv_sqrt(a, iters=25)
    torch.testing.assert_close(root @ root, a, rtol=1e-6, atol=1e-6 * float(a.abs().max()))
    torch.testing.assert_close(inv_root @ a @ inv_root, torch.eye(6, dtype=a.dtype)[None], rtol=0, atol=1e-6)


@pytest.mark.parametrize("eps", [COV_EPS, STYLE_COV_EPS])
def test_newton_schulz_iterations_follow_the_regularisation(eps):
    """The worst spectrum ``regularised`` allows (flat, with one empty direction left only the
    regularisation): after ``ns_iters(eps, C)`` iterations its inverse root whitens it exactly
    (float64 maths here), four fewer do not, so the count is what convergence needs, not a guess."""
    c = 64
    u = torch.randn(c, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(c, dtype=torch.float64)
    a = regularised((eye - u @ u.T / (u.T @ u))[None], eps)

    def whitening_error(iters: int) -> float:
        inv_root = sqrt_and_inv_sqrt(a, iters)[1]
        return float(torch.linalg.matrix_norm(inv_root @ a @ inv_root - eye, ord=2))

    k = ns_iters(eps, c)
    assert k < NS_ITERS
    assert whitening_error(k) < 1e-9
    assert whitening_error(k - 4) > 1e-4


def _moved(content, style_mean, style_cov, strength, kind="wct", iters=NS_ITERS, eps=COV_EPS, style_eps=STYLE_COV_EPS):
    """``content`` (N, C, H, W) through ``statistics_map`` of its own statistics: m f + b."""
    n, c, h, w = content.shape
    factor = style_factor(style_cov, kind, iters, style_eps)
    m, b = statistics_map(*feature_stats(content), style_mean, factor, strength, kind, iters, eps)
    return (m @ content.reshape(n, c, h * w) + b).reshape(n, c, h, w)


@pytest.mark.parametrize("kind", ["ot", "wct"])
def test_transform_gives_the_content_the_style_covariance(kind):
    content, style = _correlated(3), _correlated(4) * 0.5 - 2
    s_mean, s_cov = feature_stats(style)
    out = _moved(content, s_mean, s_cov, torch.ones(1), kind, iters=30, eps=1e-5, style_eps=1e-5)
    o_mean, o_cov = feature_stats(out)
    torch.testing.assert_close(o_mean, s_mean)
    # the regularisation (1e-5 of the norm on the diagonal) is the only difference left
    assert float((o_cov - s_cov).norm() / s_cov.norm()) < 1e-4


def test_ot_map_is_symmetric_and_moves_the_features_least():
    """The Monge map between Gaussians is the symmetric positive definite one; of all linear maps
    giving the style's covariance it displaces the (centred) features least — WCT moves them more."""
    content, style = _correlated(5), _correlated(6)
    c_cov, s_cov = feature_stats(content)[1], feature_stats(style)[1]
    ot, wct = transform_matrix(c_cov, s_cov, "ot", 30), transform_matrix(c_cov, s_cov, "wct", 30)
    torch.testing.assert_close(ot, ot.transpose(1, 2))
    assert float(torch.linalg.eigvalsh(ot).min()) > 0
    centred = content.reshape(1, 6, -1) - feature_stats(content)[0][..., None]
    moved = {k: float(((a @ centred - centred) ** 2).sum()) for k, a in (("ot", ot), ("wct", wct))}
    assert moved["ot"] < moved["wct"]


@pytest.mark.parametrize("kind", ["ot", "wct"])
def test_newton_schulz_transform_matches_float64_eigendecomposition(kind):
    content, style = _correlated(7, c=16, hw=800), _correlated(8, c=16, hw=800)
    c_cov, s_cov = feature_stats(content.float())[1], feature_stats(style.float())[1]
    fast, exact = transform_matrix(c_cov, s_cov, kind).double(), transform_matrix_eigh(c_cov, s_cov, kind)
    assert float((fast - exact).norm() / exact.norm()) < 1e-3


def test_strength_zero_keeps_the_content_features_and_blend_interpolates():
    content, style = _correlated(9).float(), _correlated(10).float()
    s_mean, s_cov = feature_stats(style)
    torch.testing.assert_close(_moved(content, s_mean, s_cov, torch.zeros(1)), content)
    t = _moved(content, s_mean, s_cov, torch.ones(1))
    torch.testing.assert_close(blend(t, content, torch.full((1,), 0.25)), 0.25 * t + 0.75 * content)


def test_mixing_two_styles_equals_the_statistics_of_their_pooled_features():
    """Blend weights proportional to the number of positions = the statistics of both feature maps
    pooled together: an expectation computed without the mixing formula."""
    a, b = _correlated(11, hw=400), _correlated(12, hw=200) + 3
    stats = [[t[0].float().numpy() for t in feature_stats(x)] for x in (a, b)]
    pooled = torch.cat([a.reshape(1, 6, -1), b.reshape(1, 6, -1)], dim=2).reshape(1, 6, 30, 20)
    mean, cov = (t[0].numpy() for t in feature_stats(pooled))
    mixed = mix_stats(stats, [400, 200])
    np.testing.assert_allclose(mixed[0], mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(mixed[1], cov, rtol=1e-4, atol=1e-3)
    assert mix_stats(stats[:1], [1.0]) is stats[0]


def test_pad_for_cascade_mirrors_up_to_the_stride_and_the_minimum_and_keeps_the_input():
    x = np.random.default_rng(0).integers(0, 255, (3, 21, 3), np.uint8)
    padded = pad_for_cascade(x, 4)
    assert padded.shape == (16, 24, 3)  # 3 -> at least 4 features x 4; 21 -> 24
    assert np.array_equal(padded[:3, :21], x)
    assert np.array_equal(padded[3:6, :21], x[::-1])  # mirrored, not zeros
    assert pad_for_cascade(x[:, :20].repeat(8, axis=0), 4).shape == (24, 20, 3)


def test_gram_is_symmetric_and_matches_einsum():
    f = _feat(3)
    g = gram_matrix(f)
    n, c, h, w = f.shape
    expected = torch.einsum("nchw,ndhw->ncd", f, f) / (c * h * w)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-5)


def test_total_variation_of_constant_image_is_zero_and_positive_otherwise():
    assert float(total_variation(torch.full((1, 3, 8, 9), 0.3))) == 0.0
    assert float(total_variation(torch.rand(1, 3, 8, 9))) > 0.0


def test_losses_are_zero_for_identical_features_and_positive_otherwise():
    a, b = [_feat(8), _feat(9, (2, 5, 3, 3))], [_feat(10), _feat(11, (2, 5, 4, 4))]
    assert float(content_loss(a[0], a[0])) == 0.0
    assert float(style_loss_mean_std(a, a)) == 0.0
    assert float(style_loss_gram({"x": a[0]}, {"x": a[0]})) == 0.0
    assert float(style_loss_mean_std(a, b)) > 0.0
    assert float(style_loss_gram(a, b)) > 0.0
    with pytest.raises(ValueError):
        style_loss_mean_std({"x": a[0]}, {"y": a[0]})


@pytest.mark.parametrize("layer", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
def test_decoder_inverts_the_shape_of_each_level_on_non_square_input(layer):
    vgg = VGGFeatures("vgg16", last_layer=layer).eval()
    m, c = size_multiple(layer), feature_channels(layer)
    image = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        feats = vgg(image)[layer]
        assert feats.shape == (2, c, 48 // m, 64 // m)
        assert Decoder(layer, width=0.5)(feats).shape == (2, 3, 48, 64)


def _mirroring_once(decoder: Decoder, feat: torch.Tensor) -> torch.Tensor:
    """``decoder`` on ``feat`` (untransformed: the identity map) as a full-size stage runs it."""
    n, c = feat.shape[:2]
    return decoder.forward_mapped(feat, torch.eye(c).expand(n, c, c), torch.zeros(n, c, 1), mirror_once=True)


def _border_distance(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None]
    return torch.minimum(torch.minimum(ys, h - 1 - ys), torch.minimum(xs, w - 1 - xs))


@pytest.mark.parametrize("pointwise", [False, True])
@pytest.mark.parametrize(("layer", "ring"), [("relu1_1", 1), ("relu2_1", 2), ("relu3_1", 6), ("relu4_1", 18)])
def test_a_decoder_mirrors_its_input_once_and_decodes_as_mirroring_before_every_convolution_away_from_the_border(
    layer, ring, pointwise
):
    """``mirror_once`` runs the decoder with one reflection pad for several convolutions
    (``padding_plan``): away from a thin border ring (deeper decoders: wider) the image is what
    mirroring before every convolution gives, up to float rounding; it differs in the ring (the
    later convolutions see mirrored input, not a mirrored output)."""
    torch.manual_seed(0)
    decoder = Decoder(layer, width=0.25, pointwise_entry=pointwise).eval()
    feat = _feat(21, (1, feature_channels(layer), 12, 16)).relu()
    with torch.no_grad():
        once, every = _mirroring_once(decoder, feat), decoder(feat)
    assert once.shape == every.shape == (1, 3, 12 * size_multiple(layer), 16 * size_multiple(layer))
    diff = (once - every).abs().amax(1)[0]
    distance = _border_distance(*diff.shape)
    scale = every.abs().max()
    assert diff[distance >= ring].max() < 1e-5 * scale
    assert diff[distance < ring].max() > 1e-2 * scale  # the plan is in use: the ring differs
    # fewer Pad operations than 3x3 convolutions, hence the saving
    pads = sum(isinstance(m, torch.nn.ReflectionPad2d) for m in decoder.net)
    assert len(decoder.padding) < pads


@pytest.mark.parametrize("layer", ["relu1_1", "relu2_1", "relu3_1", "relu4_1"])
def test_the_padding_plan_never_mirrors_more_than_the_smallest_input_allows(layer):
    """The service pads thin images to ``MIN_FEATURE_SIDE`` features a side; a reflection pad must
    be smaller than its input, so the plan splits where one pad would be too wide (relu4_1's 6-pixel
    margin goes after its first upsampling), and the smallest input decodes."""
    decoder = Decoder(layer, width=0.25).eval()
    ups = [i for i, m in enumerate(decoder.net) if isinstance(m, torch.nn.Upsample)]
    for index, margin in decoder.padding.items():
        assert isinstance(decoder.net[index], torch.nn.ReflectionPad2d)
        assert 0 < margin < MIN_FEATURE_SIDE * 2 ** sum(u < index for u in ups)
    m = size_multiple(layer)
    smallest = torch.rand(1, feature_channels(layer), MIN_FEATURE_SIDE, MIN_FEATURE_SIDE + 1)
    with torch.no_grad():
        out = _mirroring_once(decoder, smallest)
    assert out.shape == (1, 3, MIN_FEATURE_SIDE * m, (MIN_FEATURE_SIDE + 1) * m)
    # the margin's bound is the service's: the smallest input it sends the stylizer
    assert MIN_FEATURE_SIDE == SERVED_MIN_FEATURE_SIDE
    # by hand: the margin each layer after a pad uses up, halved (rounding up) back across an upsampling
    planned = {"relu1_1": {0: 2}, "relu2_1": {0: 2}, "relu3_1": {0: 3}, "relu4_1": {0: 1, 4: 6}}
    assert decoder.padding == planned[layer]
    unlimited = {**planned, "relu4_1": {0: 4}}  # inputs wide enough: one pad for the whole decoder
    assert padding_plan(decoder.net, min_side=64) == unlimited[layer]


def test_cascade_at_strength_zero_is_the_chain_of_reconstructions():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", last_layer="relu2_1").eval()
    levels = levels_up_to("relu2_1")
    assert levels == ["relu2_1", "relu1_1"]
    decoders = [Decoder(level, width=0.25).eval() for level in levels]
    image = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        stats = StyleEncoder(vgg, levels)(torch.rand(1, 3, 20, 28))
        out = Cascade(vgg, decoders)(image, torch.zeros(1), *stats)
        x = image
        for level, decoder in zip(levels, decoders):  # full-size levels mirror once (padding_plan)
            x = _mirroring_once(decoder, vgg(x, [level])[level]).clamp(0, 1)
    torch.testing.assert_close(out, x)
    assert [s.shape for s in stats] == [(1, 128), (1, 128, 128), (1, 64), (1, 64, 64)]


def test_half_size_blurs_before_it_drops_pixels():
    flat = torch.full((1, 3, 16, 24), 0.3)
    torch.testing.assert_close(half_size(flat), torch.full((1, 3, 8, 12), 0.3))
    # the finest checkerboard would alias to a flat 0 or 1 if pixels were only dropped; blurred, it is grey
    checker = ((torch.arange(16)[:, None] + torch.arange(24)[None, :]) % 2).float().expand(1, 3, 16, 24)
    assert torch.allclose(half_size(checker)[..., 1:-1, 1:-1], torch.tensor(0.5))
    # a horizontal ramp stays a ramp, half as long (the blur is symmetric: no shift)
    ramp = torch.linspace(0, 1, 24).expand(1, 3, 16, 24)
    pair_means = ramp[0, 0, 0].reshape(-1, 2).mean(1)
    torch.testing.assert_close(half_size(ramp)[0, 0, 4, 1:-1], pair_means[1:-1])


def test_enlarge_is_bicubic_interpolation_as_a_convolution():
    image = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(0))
    twice = torch.nn.functional.interpolate(image, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(enlarge(image, 2), twice)  # edges included
    torch.testing.assert_close(
        enlarge(image, 4), torch.nn.functional.interpolate(twice, scale_factor=2, mode="bicubic", align_corners=False)
    )
    assert enlarge(image, 1) is image


def test_laplacian_pyramid_runs_the_stage_smallest_first_and_gives_the_image_back_unchanged():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 48)
    seen = []

    def identity(x, scale):
        seen.append((scale, tuple(x.shape[2:])))
        return x

    out = laplacian_pyramid(image, [8, 4, 2], identity)
    assert seen == [(8, (4, 6)), (4, (8, 12)), (2, (16, 24))]
    torch.testing.assert_close(out, image, rtol=0, atol=1e-5)  # the bands add back exactly
    # a stage that changes the small copy changes the output's coarse part, not its finest detail
    # (values kept clear of 0 and 1, so that no clamping hides the difference)
    mid = 0.3 + 0.4 * image
    darker = laplacian_pyramid(mid, [4], lambda x, _: 0.5 * x + 0.1)

    def fine(t):  # what 8x8 block means leave out
        return t - torch.nn.functional.avg_pool2d(t, 8).repeat_interleave(8, 2).repeat_interleave(8, 3)

    assert float(darker.mean()) < 0.75 * float(mid.mean())
    assert float((fine(darker) - fine(mid)).abs().mean()) < 0.1 * float(fine(mid).abs().mean())


def test_keep_shading_gives_the_painted_colours_the_photos_light_and_dark_and_keeps_their_texture():
    torch.manual_seed(0)
    h, w = 16, 40
    ramp = torch.linspace(0.0, 1.0, w).expand(1, 1, h, w)  # left to right
    photo = (0.2 + 0.6 * ramp).expand(1, 3, h, w) + 0.02 * torch.randn(1, 3, h, w)  # grey, bright on the right
    # painted: orange, dark on the right (the photo's shading reversed), with a fine checkerboard
    checker = 0.05 * ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 * 2 - 1).float()
    base = (0.7 - 0.4 * ramp) + checker
    painted = torch.cat([base + 0.2, base, base - 0.2], 1)
    out = keep_shading(painted, photo, radius=2)

    def columns(y):  # the luma's column means, away from the edges the box filters replicate
        return luma(y)[0, 0, :, 4:-4].mean(0)

    # the light and dark now run as in the photo: bright on the right
    assert float(torch.corrcoef(torch.stack([columns(out), columns(photo)]))[0, 1]) > 0.95
    assert float(columns(out)[-4:].mean() - columns(out)[:4].mean()) > 0.2
    # the painted colours' differences (their hue) are unchanged: one value was added to R, G and B
    for a, b in ((0, 1), (1, 2)):
        torch.testing.assert_close(out[:, a] - out[:, b], painted[:, a] - painted[:, b], rtol=0, atol=1e-5)
    # the fine texture survives: the checkerboard is still there at nearly full contrast
    fine = luma(out)[0, 0, 4:-4, 4:-4] - luma(photo)[0, 0, 4:-4, 4:-4]
    fine = fine - torch.nn.functional.avg_pool2d(fine[None, None], 3, stride=1, padding=1)[0, 0]
    assert float((fine * checker[4:-4, 4:-4]).mean()) > 0.8 * float((checker * checker).mean()) * (8 / 9)


def test_cascade_coarse_scales_set_the_size_multiple_and_keep_the_shape():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", last_layer="relu2_1").eval()
    levels = levels_up_to("relu2_1")
    decoders = [Decoder(level, width=0.25).eval() for level in levels]
    cascade = Cascade(vgg, decoders, coarse_scales=[4, 2])
    assert cascade.size_multiple == 8 and Cascade(vgg, decoders).size_multiple == 2
    with torch.no_grad():
        stats = StyleEncoder(vgg, levels)(torch.rand(1, 3, 20, 28))
        out = cascade(torch.rand(1, 3, 32, 40), torch.ones(1), *stats)
    assert out.shape == (1, 3, 32, 40) and 0 <= float(out.min()) and float(out.max()) <= 1
    # the pyramid keeps the photo's shading by default (radius 2); 0 switches that off
    with torch.no_grad():
        image = torch.rand(1, 3, 32, 40)
        kept = cascade(image, torch.ones(1), *stats)
        repainted = Cascade(vgg, decoders, coarse_scales=[4, 2], shading_radius=0)(image, torch.ones(1), *stats)
    assert cascade.shading_radius == 2 and float((kept - repainted).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="shading radius must be 0"):
        Cascade(vgg, decoders, coarse_scales=[4, 2], shading_radius=-1)
    assert check_scales((16, 8, 4, 2, 1)) == [16, 8, 4, 2, 1]
    for bad in ([], [2, 4], [3], [4, 4], [0]):
        with pytest.raises(ValueError, match="powers of two"):
            check_scales(bad)


def test_cascade_fine_scales_let_the_second_level_paint_the_pyramids_last_sizes():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", last_layer="relu2_1").eval()
    levels = ["relu2_1", "relu1_1"]
    decoders = [Decoder("relu2_1", width=0.25).eval(), Decoder("relu1_1", width=0.25, pointwise_entry=True).eval()]
    seen = []  # (level, feature width, mirrored once) of every decode, in order
    for decoder in decoders:

        def recorded(feat, m, b, mirror_once=False, _decoder=decoder, _decode=decoder.forward_mapped):
            seen.append((_decoder.layer, feat.shape[-1], mirror_once))
            return _decode(feat, m, b, mirror_once)

        decoder.forward_mapped = recorded
    image = torch.rand(1, 3, 64, 96)
    fine = Cascade(vgg, decoders, coarse_scales=[8, 4], fine_scales=[2])
    assert fine.size_multiple == 16 and fine.fine_scales == [2]
    with torch.no_grad():
        stats = StyleEncoder(vgg, levels)(torch.rand(1, 3, 40, 56))
        painted = fine(image, torch.ones(1), *stats)
    # relu2_1 (stride 2) at 1/8 and 1/4 size, relu1_1 at 1/2 in the pyramid, then at full size
    assert seen == [("relu2_1", 6, False), ("relu2_1", 12, False), ("relu1_1", 48, False), ("relu1_1", 96, True)]
    with torch.no_grad():
        coarse_half = Cascade(vgg, decoders, coarse_scales=[8, 4, 2])(image, torch.ones(1), *stats)
        no_half = Cascade(vgg, decoders, coarse_scales=[8, 4])(image, torch.ones(1), *stats)
        # strength 0: every pyramid pass gives its input back, whichever level paints it
        kept = [c(image, torch.zeros(1), *stats) for c in (fine, Cascade(vgg, decoders, coarse_scales=[8, 4, 2]))]
    assert painted.shape == image.shape
    assert float((painted - coarse_half).abs().mean()) > 1e-3 and float((painted - no_half).abs().mean()) > 1e-3
    torch.testing.assert_close(kept[0], kept[1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="second level"):
        Cascade(vgg, decoders[:1], coarse_scales=[8, 4], fine_scales=[2])
    with pytest.raises(ValueError, match="below the coarse ones"):
        Cascade(vgg, decoders, coarse_scales=[8, 4], fine_scales=[4])
    with pytest.raises(ValueError, match="below the coarse ones"):
        Cascade(vgg, decoders, coarse_scales=[1], fine_scales=[2])
    with pytest.raises(ValueError, match="fine scales must be decreasing powers of two"):
        Cascade(vgg, decoders, coarse_scales=[8, 4], fine_scales=[3])
    with pytest.raises(ValueError, match="2 or more"):
        Cascade(vgg, decoders, coarse_scales=[8, 4], fine_scales=[1])
    # the defaults: relu1_1 paints the pyramid's 1/4 and 1/2 sizes when it follows a shallow coarsest level
    assert default_scales(levels) == ([8], [4, 2])
    assert default_scales(["relu2_1"]) == ([8, 4, 2], [])
    assert default_scales(["relu3_1", "relu2_1", "relu1_1"]) == ([1], [])
    assert default_scales(levels, [16, 8, 4, 2]) == ([16, 8, 4, 2], [])  # the earlier pyramid, relu2_1 at 1/2
    assert default_scales(levels, [16, 8]) == ([16, 8], [4, 2]) and default_scales(levels, [1]) == ([1], [])


def test_decoder_input_scale_is_applied_and_saved_with_the_weights():
    torch.manual_seed(0)
    scaled = Decoder("relu2_1", input_scale=0.25).eval()
    plain = Decoder("relu2_1").eval()
    plain.load_state_dict({**scaled.state_dict(), "input_scale": torch.tensor(1.0)})
    feat = _feat(12, (1, 128, 4, 6)).relu()
    with torch.no_grad():
        torch.testing.assert_close(scaled(feat), plain(feat * 0.25))
    restored = Decoder("relu2_1")
    restored.load_state_dict(scaled.state_dict())
    assert float(restored.input_scale) == 0.25


@pytest.mark.parametrize("pointwise", [True, False])
def test_forward_mapped_is_decoding_the_mapped_features(pointwise):
    """The transform folded into the decoder (into its 1x1 entry's weights, or its input scale)
    gives what decoding ``m f + b`` gives."""
    torch.manual_seed(0)
    decoder = Decoder("relu1_1", width=0.25, input_scale=0.3, pointwise_entry=pointwise).eval()
    feat = _feat(13, (2, 64, 10, 14)).relu()
    m = torch.eye(64) + 0.2 * torch.randn(2, 64, 64)
    b = torch.randn(2, 64, 1)
    with torch.no_grad():
        mapped = (m @ feat.reshape(2, 64, -1) + b).reshape(feat.shape)
        torch.testing.assert_close(decoder.forward_mapped(feat, m, b), decoder(mapped), rtol=1e-4, atol=1e-5)


def test_a_pointwise_entry_decoder_starts_with_a_1x1_convolution_into_its_width():
    decoder = Decoder("relu1_1", width=0.25, pointwise_entry=True)
    entry = decoder.net[0]
    assert isinstance(entry, torch.nn.Conv2d) and entry.kernel_size == (1, 1)
    assert (entry.in_channels, entry.out_channels) == (64, 16)
    assert decoder(torch.rand(1, 64, 12, 20)).shape == (1, 3, 12, 20)
    deep = Decoder("relu2_1", width=0.5, pointwise_entry=True)
    assert deep(torch.rand(1, 128, 6, 10)).shape == (1, 3, 12, 20)


def test_build_decoder_rebuilds_saved_decoders_and_reads_configs_from_before_per_level_widths():
    decoders = {
        "relu2_1": Decoder("relu2_1", width=0.5),
        "relu1_1": Decoder("relu1_1", width=0.25, pointwise_entry=True),
    }
    config = decoder_config(decoders)
    assert config == {
        "levels": ["relu2_1", "relu1_1"],
        "widths": {"relu2_1": 0.5, "relu1_1": 0.25},
        "pointwise_entry": ["relu1_1"],
    }
    for level, decoder in decoders.items():
        build_decoder(config, level).load_state_dict(decoder.state_dict())  # strict: the same layers
    old = build_decoder({"levels": ["relu2_1", "relu1_1"], "width": 0.5}, "relu1_1")
    assert not old.pointwise_entry and old.width == 0.5
    old.load_state_dict(Decoder("relu1_1", width=0.5).state_dict())
    with pytest.raises(RuntimeError):
        old.load_state_dict(decoders["relu1_1"].state_dict())


def test_the_full_size_relu1_1_stage_estimates_the_statistics_from_a_sixteenth_of_the_positions():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", last_layer="relu2_1").eval()
    decoders = [Decoder("relu2_1", width=0.25).eval(), Decoder("relu1_1", width=0.25, pointwise_entry=True).eval()]
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 12), size=(64, 96), mode="bilinear")
    with torch.no_grad():
        stats = StyleEncoder(vgg, ["relu2_1", "relu1_1"])(torch.rand(1, 3, 40, 56))
        every = Cascade(vgg, decoders, stats_stride=1)(smooth, torch.ones(1), *stats)
        sixteenth = Cascade(vgg, decoders)(smooth, torch.ones(1), *stats)
    difference = (every - sixteenth).pow(2).mean()
    # a different estimate of nearly the same statistics: > 30 dB apart with these random weights
    assert 0 < difference < 1e-3
    with pytest.raises(ValueError, match="stride"):
        Cascade(vgg, decoders, stats_stride=0)


@pytest.mark.parametrize("stride", [2, 4])
def test_relu1_1_at_every_stride_th_position_is_conv1_1_at_that_stride(stride):
    """The strided statistics read relu1_1 as conv1_1 at that stride: exactly the features at every
    ``stride``-th position, odd sides included."""
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", last_layer="relu2_1").eval()
    cascade = Cascade(vgg, [Decoder("relu2_1", width=0.25), Decoder("relu1_1", width=0.25, pointwise_entry=True)])
    with torch.no_grad():
        for h, w in ((64, 96), (33, 47)):
            x = torch.rand(1, 3, h, w)
            feat = vgg(x, ["relu1_1"])["relu1_1"]
            strided = cascade._every(x, feat, "relu1_1", stride)
            torch.testing.assert_close(strided, feat[:, :, ::stride, ::stride], rtol=1e-5, atol=1e-5)


def test_decoder_rejects_unknown_layer():
    with pytest.raises(ValueError, match="encoder layer"):
        Decoder("relu9_1")
