"""AdaIN maths (training/style/functions.py) and networks (training/style/model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.style.functions import (adain, blend, content_loss, gram_matrix, mean_std,
                                      style_loss_gram, style_loss_mean_std, total_variation)
from training.style.model import (Decoder, Encoder, Stylizer, feature_channels, size_multiple,
                                  style_layers)
from training.vgg import VGGFeatures


def _feat(seed: int, shape=(2, 5, 6, 7)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 3 + 1


def test_mean_std_matches_numpy_definition():
    f = _feat(0)
    mean, std = mean_std(f, eps=1e-5)
    a = f.double().numpy()
    np_mean = a.mean(axis=(2, 3))
    np_std = np.sqrt(((a - np_mean[..., None, None]) ** 2).mean(axis=(2, 3)) + 1e-5)
    assert mean.shape == std.shape == (2, 5)
    np.testing.assert_allclose(mean.numpy(), np_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), np_std, rtol=1e-5, atol=1e-6)


def test_adain_output_has_style_statistics():
    content, style = _feat(1), _feat(2, (2, 5, 9, 4)) * 0.5 - 2
    s_mean, s_std = mean_std(style)
    out_mean, out_std = mean_std(adain(content, s_mean, s_std))
    torch.testing.assert_close(out_mean, s_mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_std, s_std, rtol=1e-4, atol=1e-4)


def test_gram_is_symmetric_and_matches_einsum():
    f = _feat(3)
    g = gram_matrix(f)
    n, c, h, w = f.shape
    expected = torch.einsum("nchw,ndhw->ncd", f, f) / (c * h * w)
    assert g.shape == (n, c, c)
    torch.testing.assert_close(g, g.transpose(1, 2))
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-5)


def test_strength_zero_gives_content_features_and_one_gives_adain():
    content, style = _feat(4), _feat(5)
    t = adain(content, *mean_std(style))
    assert torch.equal(blend(t, content, torch.zeros(2)), content)
    torch.testing.assert_close(blend(t, content, torch.ones(2)), t)


def test_stylizer_strength_zero_decodes_the_content_features():
    decoder = Decoder("relu2_1").eval()
    content = _feat(6, (2, 128, 6, 8)).relu()
    mean, std = mean_std(_feat(7, (2, 128, 5, 5)))
    with torch.no_grad():
        out = Stylizer(decoder)(content, mean, std, torch.zeros(2))
        torch.testing.assert_close(out, decoder(content).clamp(0, 1))


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


@pytest.mark.parametrize("layer", ["relu4_1", "relu3_1"])
def test_encoder_decoder_shapes_on_non_square_input(layer):
    vgg = VGGFeatures("vgg16", last_layer=layer).eval()
    m, c = size_multiple(layer), feature_channels(layer)
    image = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        feats = Encoder(vgg)(image)
        assert feats.shape == (2, c, 48 // m, 64 // m)
        out = Decoder(layer)(feats)
    assert out.shape == (2, 3, 48, 64)
    assert style_layers(layer)[-1] == layer and style_layers(layer)[0] == "relu1_1"


def test_stylizer_output_is_an_image_in_unit_range():
    vgg = VGGFeatures("vgg19", last_layer="relu3_1").eval()
    encoder, stylizer = Encoder(vgg), Stylizer(Decoder("relu3_1")).eval()
    with torch.no_grad():
        feats = encoder(torch.rand(3, 3, 48, 64))
        mean, std = mean_std(encoder(torch.rand(3, 3, 32, 32)))
        out = stylizer(feats, mean * 50, std * 50, torch.tensor([1.0, 0.5, 0.0]))
    assert out.shape == (3, 3, 48, 64)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


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


def test_decoder_rejects_unknown_layer():
    with pytest.raises(ValueError, match="encoder layer"):
        Decoder("relu9_1")
