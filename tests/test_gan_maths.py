"""The GAN maths: losses, DiffAugment, EMA, the seed -> latent contract, truncation and slerp."""

import math

import numpy as np
import pytest
import torch

from bench.pipeline import run_fresh
from service import sampling
from training.gan.functions import EMA, d_loss, diff_augment, g_loss, mode_seeking_loss, r1_penalty


def test_ns_losses_match_their_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    expected_d = -(torch.log(sig(real))).mean() - torch.log(1 - sig(fake)).mean()
    assert torch.allclose(d_loss("ns", real, fake), expected_d, atol=1e-6)
    assert torch.allclose(g_loss("ns", fake), -torch.log(sig(fake)).mean(), atol=1e-6)


def test_label_smoothing_moves_the_real_target():
    real, fake = torch.tensor([10.0]), torch.tensor([-10.0])
    assert d_loss("ns", real, fake, 0.0) < 1e-3
    smoothed = d_loss("ns", real, fake, 0.1)  # target 0.9: a very confident D is penalised
    assert smoothed > 0.9


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert d_loss("hinge", real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1.0) / 2)
    assert g_loss("hinge", fake).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown loss"):
        d_loss("wgan", real, fake)


def test_diffaugment_identity_shapes_and_gradients():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_()
    assert torch.equal(diff_augment(x, ""), x)
    y = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.sum().backward()  # differentiable: G learns through the augmentation
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(x, "rotate")


def test_diffaugment_is_reproducible_and_per_sample():
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    a = diff_augment(x, "translation", torch.Generator().manual_seed(3))
    b = diff_augment(x, "translation", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    same = torch.stack([x[0]] * 8)
    shifted = diff_augment(same, "translation", torch.Generator().manual_seed(1))
    assert len({tuple(s.flatten().tolist()) for s in shifted}) > 1  # each sample draws its own shift


def test_translation_moves_pixels_and_fills_background():
    x = torch.full((1, 1, 8, 8), -1.0)
    x[0, 0, 4, 4] = 1.0
    for seed in range(10):
        y = diff_augment(x, "translation", torch.Generator().manual_seed(seed))
        assert set(y.unique().tolist()) <= {-1.0, 1.0}
        assert (y == 1.0).sum() <= 1  # the dot moves (or leaves the frame); nothing else appears


def test_ema_ramps_and_tracks():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    before = ema.model.weight.clone()
    ema.update(model, step=0)  # ramp: decay min(0.9, 1/10) = 0.1, so 90% of the new value
    assert torch.allclose(ema.model.weight, 0.1 * before + 0.9)
    for step in range(1, 200):
        ema.update(model, step)
    assert torch.allclose(ema.model.weight, torch.ones(1, 2), atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError):
        EMA(model, decay=1.0)


def test_the_latent_contract_gives_the_recorded_numbers():
    """Seeds wrap at 2**32; a seed's latent is fixed for ever (values written down once, from
    numpy's PCG64 standard normal in float32): a change of generator, dtype or order fails here,
    and would change every image a user reproduced from a seed."""
    seeds = sampling.seed_range(2**32 - 2, 4)
    assert seeds == [2**32 - 2, 2**32 - 1, 0, 1]
    z = sampling.latents_for_seeds(seeds, 4, 0.5)
    assert z.dtype == np.float32 and z.shape == (4, 4)
    np.testing.assert_allclose(z[2], 0.5 * np.array([1.1176220, -1.3871249, -0.4265716, -0.8035873]), rtol=1e-6)
    np.testing.assert_allclose(z[1, :3], 0.5 * np.array([-0.3346776, -0.4611296, 0.2072612]), rtol=1e-6)
    # one generator per seed: a seed's latent does not depend on its position in the batch
    assert np.array_equal(sampling.latents_for_seeds([1], 100)[0], sampling.latents_for_seeds([0, 1], 100)[1])


def test_the_service_never_imports_torch_or_training():
    """Training and serving meet at the manifest: every service module, imported in a fresh
    interpreter, loads neither torch nor the training package (the arrow points the other way)."""
    code = (
        "import importlib, pkgutil, sys, service\n"
        "for m in pkgutil.iter_modules(service.__path__): importlib.import_module('service.' + m.name)\n"
        "print(sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'training'}))"
    )
    done = run_fresh(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_truncation_scales_towards_the_mean():
    z1 = sampling.latents_for_seeds([5], 64, 1.0)
    z5 = sampling.latents_for_seeds([5], 64, 0.5)
    assert np.allclose(z5, 0.5 * z1)


def test_slerp_endpoints_norm_and_lerp_fallback():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(128).astype(np.float32), rng.standard_normal(128).astype(np.float32)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    path = sampling.slerp(a, b, np.linspace(0, 1, 9))
    assert np.allclose(path[0], a, atol=1e-5) and np.allclose(path[-1], b, atol=1e-5)
    norms = np.linalg.norm(path, axis=1)
    assert np.allclose(norms, norms[0], rtol=1e-4)  # equal-norm ends: the arc keeps the norm
    assert np.linalg.norm(sampling.lerp(a, b, np.array([0.5]))) < norms[0] * 0.9  # a straight line cuts inside
    # (anti)parallel vectors: the arc is undefined, slerp falls back to lerp
    assert np.allclose(sampling.slerp(a, 2 * a, np.array([0.5])), sampling.lerp(a, 2 * a, np.array([0.5])))
    # halfway on the arc between orthogonal unit vectors has equal components
    mid = sampling.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.5]))[0]
    assert np.allclose(mid, [math.sqrt(0.5)] * 2, atol=1e-6)


def test_generator_output_to_uint8_rounds_like_training():
    from training.imaging import to_uint8 as train_to_uint8

    x = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    assert np.array_equal(sampling.to_uint8(x), train_to_uint8(torch.from_numpy(x)))


def test_r1_penalty_is_the_squared_gradient_norm_at_the_real_images():
    """For D(x) = sum(w * x^2) the gradient is 2 w x: the penalty is the batch mean of |2 w x|^2,
    and its own gradient reaches w (the graph is kept)."""
    w = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]], requires_grad=True)
    x = torch.tensor([[[[1.0, 1.0], [2.0, 0.0]]], [[[0.0, -1.0], [1.0, 1.0]]]], requires_grad=True)
    penalty = r1_penalty(x, (w * x**2).flatten(1).sum(1))
    expected = ((2 * w * x) ** 2).flatten(1).sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item())  # (4+16+4+0 + 0+16+1+36) / 2 = 38.5
    assert penalty.item() == pytest.approx(38.5)
    penalty.backward()
    # d/dw mean_n sum 4 w^2 x^2 = 8 w mean_n x^2
    torch.testing.assert_close(w.grad, 8 * w.detach() * (x.detach() ** 2).mean(0, keepdim=True))


def test_mode_seeking_loss_rewards_different_images_for_different_latents():
    z1, z2 = torch.zeros(4, 8), torch.ones(4, 8)
    same = mode_seeking_loss(torch.zeros(4, 1, 4, 4), torch.zeros(4, 1, 4, 4), z1, z2)
    apart = mode_seeking_loss(torch.zeros(4, 1, 4, 4), torch.ones(4, 1, 4, 4), z1, z2)
    assert apart.item() == pytest.approx(1.0, rel=1e-4)  # |x1 - x2| / |z1 - z2| = 1
    assert same.item() > 1e4  # collapsed: a huge penalty


def test_minibatch_std_lets_the_discriminator_see_a_collapsed_batch():
    from training.gan.model import Discriminator

    d = Discriminator(32, 1, 8, num_classes=0, minibatch_std=True).eval()
    varied = torch.rand(8, 1, 32, 32) * 2 - 1
    collapsed = varied[:1].expand(8, -1, -1, -1)
    features = {}
    d.head.register_forward_hook(lambda m, inp, out: features.setdefault(len(features), inp[0]))
    d(varied), d(collapsed)
    spread_varied, spread_collapsed = features[0][:, -16:], features[1][:, -16:]  # the extra channel
    assert torch.all(spread_collapsed == 0) and torch.all(spread_varied > 0)
