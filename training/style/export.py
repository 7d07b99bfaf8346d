"""Export a trained style run to ONNX (style encoder + cascade stylizer) and write the presets.

``export_style(run_dir, out_dir, styles_dir)`` writes, under ``out_dir``:

- ``style_encoder.onnx``: ``image`` (N, 3, H, W) float32 RGB [0, 1] -> for each level L of the
  cascade, ``mean_L`` (N, C) and ``cov_L`` (N, C, C) of its VGG features: a style's statistics;
- ``stylizer.onnx``: ``content`` (N, 3, H, W) (H, W multiples of ``size_multiple``), ``strength``
  (N,), ``mean_L``, ``cov_L`` for each level -> ``image`` (N, 3, H, W) in [0, 1]: the whole
  cascade (encode, match the statistics, decode; coarse to fine) in one graph, so features never
  leave the device;
- ``style_presets.npz`` (``<name>__<level>__mean`` (C,), ``<name>__<level>__cov`` (C, C),
  float32) computed with the exported style encoder through ONNX Runtime, with patches on
  ``<name>__style`` (Hs, Ws, 3) uint8, the style image as the stylizer takes it, and
  ``presets/<name>.jpg`` thumbnails.

With patches on (``patches`` given, the default), the stylizer is a ``StyleSwapCascade``: its
inputs are ``content``, ``strength``, ``style`` (the style image, sides multiples of the manifest's
``style.patches.cell``), then the statistics.

Parity: both graphs against PyTorch, and the Newton-Schulz transform inside the stylizer against
a float64 eigendecomposition on real features. It returns the manifest fragment; the top-level
``training/export.py`` hashes files and writes the manifest.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.style import STYLE, encode_style, preset_keys, resize_long_side, stats_names, style_picture
from training.folders import UNREADABLE
from training.onnx_export import ExportResult, ParityError, export_checked, fp16_parity, fp16_variant, fp16_verdict
from training.runs import CHECKPOINT, MetricsLog, atomic_write_bytes
from training.style.data import bundled_style_images, find_images, load_image, picture_credits
from training.style.functions import (
    COV_EPS,
    NS_ITERS,
    STYLE_COV_EPS,
    STYLE_STATS_DEFINITION,
    ns_iters,
    transform_matrix,
    transform_matrix_eigh,
)
from training.style.model import (
    MIN_FEATURE_SIDE,
    SHADING_RADIUS,
    Cascade,
    Decoder,
    StyleEncoder,
    build_decoder,
    decoder_config,
    default_scales,
    feature_channels,
    layer_block,
    size_multiple,
)
from training.style.options import load_style_checkpoint
from training.style.swap import DEFAULT_PATCHES, PatchSettings, StyleSwapCascade
from training.vgg import check_same_vgg, factorize_conv, load_vgg, recorded_source

ATOL = 1e-4
# fp32 convolutions accumulate rounding error relative to the magnitude of their outputs; VGG
# features of real weights reach ~1e3 with the HED normalisation (0-255 inputs), so the style
# encoder's statistics are checked relative to their peak (covariances reach ~1e5), and the
# stylizer, whose image passes through several levels, to 1e-3 of the [0, 1] range.
STATS_REL_ATOL = 2e-5
STYLIZER_ATOL = 1e-3
# The Newton-Schulz transform must agree with float64 eigendecompositions to this relative
# (Frobenius) error on real features.
TRANSFORM_RTOL = 1e-2
TRANSFORMS = ("ot", "wct")
STYLE_SIDE = 512  # style images are resized to this long side before their statistics
THUMB_SIDE = 128
# The served encoder's conv1_2 (64 -> 64, 3x3: the costliest convolution of the relu2_1 pyramid
# passes) is factorized to keep this share of its singular values' energy: rank 32 of 64 for
# hed-vgg16, 0.56x its multiply-adds, relu2_1 features within 3.6% of the exact ones on the held-out
# photos (recorded in the manifest); 1 serves the exact convolution.
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
) -> dict[str, Any]:
    """Export the run's style encoder and cascade, and the presets; returns the manifest fragment.

    ``style_side``: long side (px) style images are resized to before their statistics;
    ``transform``: ``ot`` or ``wct``; ``levels``: the cascade's levels, coarse to fine (default:
    every level the run trained a decoder for); ``coarse_scales``: the Laplacian pyramid the
    coarsest level runs on and ``fine_scales`` the sizes the next level paints in it (``Cascade``;
    default ``default_scales``); ``shading_radius``: the coarsest level's pyramid passes keep the
    photo's shading above this scale (``Cascade``); ``conv1_2_energy``: see ``CONV1_2_ENERGY`` (1: the
    exact encoder); ``patches``: where and how the stylizer swaps the style's patches in and adds
    their pixels' detail (``StyleSwapCascade``; None: the statistics transform alone).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    ckpt = load_style_checkpoint(run_dir / CHECKPOINT)
    opt, config = ckpt["options"], ckpt["decoder_config"]
    vgg, info, decoders, encoder, cascade = load_style_modules(
        ckpt, levels, transform, log, coarse_scales, shading_radius, conv1_2_energy, fine_scales
    )
    levels = encoder.levels
    served = decoder_config({d.layer: d for d in decoders})  # the cascade's decoders, as built

    m = cascade.size_multiple
    stylizer = StyleSwapCascade(cascade, patches).eval() if patches else cascade
    cell = stylizer.cell if patches else 0
    enc = export_style_encoder(encoder, out_dir / "style_encoder.onnx", log)
    dec = export_stylizer(encoder, stylizer, m, out_dir / "stylizer.onnx", log)
    fp16 = stylizer_fp16(encoder, stylizer, m, out_dir / "stylizer.onnx", out_dir / "stylizer.fp16.onnx", log)
    transform_error = check_transform(encoder, transform, log)
    presets = write_presets(out_dir, out_dir / "style_encoder.onnx", levels, styles_dir, style_side, log, cell)
    quality = {"reconstruction_psnr_db": held_out_psnr(vgg, decoders, log)}

    vgg_fields = {
        k: info[k] for k in ("source", "arch", "weights", "weights_sha256", "normalization", "random_weights")
    }
    channels = {lv: feature_channels(lv) for lv in levels}
    common = {"levels": levels, "feature_channels": channels, "size_multiple": m}
    models = {
        "style_encoder": {
            "path": "style_encoder.onnx",
            **enc.manifest_fields(),
            "role": "style_encoder",
            **common,
            "vgg": vgg_fields,
            "conv1_2_low_rank": info["conv1_2_low_rank"],  # the stylizer's encoder is the same
            "normalization": info["normalization"],
            "input_range": [0.0, 1.0],
            "color": "RGB",
        },
        "stylizer": {
            "path": "stylizer.onnx",
            **dec.manifest_fields(),
            "role": "stylizer",
            **common,
            "transform_parity": {
                "vs": "float64 eigendecomposition",
                "max_rel_err": transform_error,
                "rtol": TRANSFORM_RTOL,
            },
            "input_range": [0.0, 1.0],
            "output_range": [0.0, 1.0],
            "transform": transform,
            "coarse_scales": cascade.coarse_scales,
            "coarse_scales_rule": "the first level runs on the content shrunk by each factor (4x4 binomial "
            "Gaussian pyramid), smallest first; between factors its output is enlarged (bicubic) and the "
            "Laplacian detail of the content added back; the other levels run at full size (the second also "
            "at fine_scales)",
            "fine_scales": cascade.fine_scales,
            "fine_scales_rule": "the pyramid goes on at these factors with the second level painting them "
            "(its own light and dark), before that level runs at full size",
            "coarse_shading_radius": cascade.shading_radius,
            "coarse_shading_rule": "at each size of the pyramid (radius > 0), the decoded image's luma is replaced, "
            "above two box filters of side 2 * radius + 1, by its input's luma given the decoded image's mean "
            "and std; the change is added to R, G and B",
            "newton_schulz_iters": {
                "content": ns_iters(COV_EPS, max(channels.values())),
                "style": ns_iters(STYLE_COV_EPS, max(channels.values())),
                "most": NS_ITERS,
            },
            "cov_eps": COV_EPS,
            "style_cov_eps": STYLE_COV_EPS,
            "decoder_width": config["width"],
            "decoder_widths": served["widths"],
            "pointwise_entry": served["pointwise_entry"],
            "conv1_2_low_rank": info["conv1_2_low_rank"],
            "strength": "at each full-size level: features = s * T(features) + (1 - s) * features; at each "
            "size of the coarse pyramid: image = s * decoded(T(features)) + (1 - s) * image",
            "variants": {"fp16": fp16},
        },
    }
    return {
        "models": models,
        "assets": ["style_presets.npz"] + [p["thumbnail"] for p in presets],
        "style": {
            "vgg": vgg_fields,
            **common,
            "transform": transform,
            "style_stats": STYLE_STATS_DEFINITION,
            "style_image_side": style_side,
            "style_image_resize": f"Pillow LANCZOS to long side {style_side} px (up or down, aspect "
            "kept), RGB float32 / 255, then the style encoder",
            "presets_file": "style_presets.npz",
            "presets": presets,
            **({"patches": patch_fields(stylizer.settings, cell)} if patches else {}),
            "training": opt,
            "run": str(run_dir.resolve()),
            "metrics": training_metrics(run_dir, ckpt),
            "quality": quality,
        },
    }


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


def patch_fields(settings: PatchSettings, cell: int) -> dict[str, Any]:
    """The manifest's ``style.patches``: the stylizer's ``style`` input, its cell and the settings
    (what they mean: docs/style-transfer.md, "The style's shapes")."""
    return {"input": STYLE, "cell": cell, **settings.to_json()}


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
        "rule": "conv1_2's weight as a 64 x 576 matrix, truncated SVD: a 3x3 convolution into rank channels, "
        "then a 1x1 one back to 64",
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


# ----------------------------------------------------------------------------- ONNX


def export_style_encoder(encoder: StyleEncoder, path: Path, log: Callable[[str], None]) -> ExportResult:
    """``image`` (N, 3, H, W) -> mean and cov per level; dynamic batch, height and width."""
    dims = _dims()
    example = (_images(2, 96, 128, seed=1),)
    checks = [(_images(1, 72, 56, seed=2),), (_images(3, 64, 88, seed=3),)]
    with torch.no_grad():
        peak = max(float(t.abs().max()) for c in checks for t in encoder(*c))
    atol = max(ATOL, STATS_REL_ATOL * peak)
    result = export_checked(
        encoder,
        example,
        path,
        ["image"],
        stats_names(encoder.levels),
        {"image": {0: dims["batch"], 2: dims["height"], 3: dims["width"]}},
        checks,
        atol=atol,
    )
    log(
        f"exported {path.name}: max |torch - ORT| {result.max_abs_diff:.3g} "
        f"(atol {atol:.3g}, peak |statistic| {peak:.3g})"
    )
    return result


def stylizer_names(stylizer: Cascade | StyleSwapCascade) -> list[str]:
    """The stylizer graph's input names, in its forward's order."""
    styles = stats_names(stylizer.levels)
    return ["content", "strength", *([STYLE] if isinstance(stylizer, StyleSwapCascade) else []), *styles]


def export_stylizer(
    encoder: StyleEncoder, cascade: Cascade | StyleSwapCascade, multiple: int, path: Path, log: Callable[[str], None]
) -> ExportResult:
    """``content``, ``strength`` (``style``), mean and cov per level -> ``image``; dynamic N, H, W."""
    dims = _dims(multiple)

    def fit(side: int) -> int:  # the next multiple, and at least as many as the service pads thin images to
        return max(MIN_FEATURE_SIDE, -(-side // multiple)) * multiple

    cell = cascade.cell if isinstance(cascade, StyleSwapCascade) else 0
    example = _stylizer_inputs(encoder, 2, fit(96), fit(160), seed=4, cell=cell)
    checks = [
        _stylizer_inputs(encoder, 1, fit(160), fit(56), seed=5, cell=cell),
        _stylizer_inputs(encoder, 3, fit(64), fit(192), seed=6, cell=cell),
    ]
    names = stylizer_names(cascade)
    shapes = {name: {0: dims["batch"]} for name in names}
    shapes["content"] = {0: dims["batch"], 2: dims["height"], 3: dims["width"]}
    if cell:
        style_dims = _dims(cell, "style_")
        shapes[STYLE] = {0: dims["batch"], 2: style_dims["height"], 3: style_dims["width"]}
    result = export_checked(cascade, example, path, names, ["image"], shapes, checks, atol=STYLIZER_ATOL)
    log(f"exported {path.name}: max |torch - ORT| {result.max_abs_diff:.3g} (atol {STYLIZER_ATOL:g})")
    return result


def stylizer_fp16(
    encoder: StyleEncoder,
    cascade: Cascade | StyleSwapCascade,
    multiple: int,
    source: Path,
    path: Path,
    log: Callable[[str], None],
    side: int = 256,
) -> dict[str, Any]:
    """The stylizer's fp16 variant and its parity: PSNR against the fp32 PyTorch cascade on the
    held-out photos (long side ``side``) in two bundled styles, at full strength."""
    from training.style import data

    ops = fp16_variant(source, path)
    styles = list(data.bundled_style_images().values())[:2]
    photos = list(data.held_out_photos().values())
    cell = cascade.cell if isinstance(cascade, StyleSwapCascade) else 0

    def pairs(
        photos: list[np.ndarray], styles: list[np.ndarray], photo_side: int
    ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
        reference, feeds = [], []
        with torch.no_grad():
            for photo in photos:
                x = data.resize_long_side(data.to_tensor(photo)[None], photo_side, multiple)
                for style in styles:
                    picture = data.to_tensor(np.array(style_picture(style, side, cell)))[None]
                    stats = encoder(picture)
                    inputs = (x, torch.ones(1), *((picture,) if cell else ()), *stats)
                    reference.append(cascade(*inputs).numpy())
                    feeds.append(dict(zip(stylizer_names(cascade), (t.numpy() for t in inputs))))
        return reference, feeds

    reference, feeds = pairs(photos, styles, side)
    # fp16 arithmetic on one pair at 128 px: the reference evaluator takes seconds a pair
    entry = fp16_parity(path, reference, feeds, "image", 1.0, ops, arithmetic=pairs(photos[:1], styles[:1], 128))
    log(
        f"{path.name}: PSNR vs PyTorch fp32 >= {entry['parity']['min_psnr_db']} dB on {len(feeds)} held-out pairs, "
        f"{fp16_verdict(entry['parity'])}"
    )
    return entry


def check_transform(encoder: StyleEncoder, kind: str, log: Callable[[str], None]) -> float:
    """Max relative (Frobenius) error of the float32 Newton-Schulz transform matrix against a
    float64 eigendecomposition, at every level, on the statistics of two different images."""
    with torch.no_grad():
        content = encoder(_images(1, 96, 72, seed=7))
        style = encoder(_images(1, 80, 112, seed=8))
    worst = 0.0
    for i in range(len(encoder.levels)):
        fast = transform_matrix(content[2 * i + 1], style[2 * i + 1], kind).double()
        exact = transform_matrix_eigh(content[2 * i + 1], style[2 * i + 1], kind)
        worst = max(worst, float(torch.linalg.matrix_norm(fast - exact) / torch.linalg.matrix_norm(exact)))
    if not worst <= TRANSFORM_RTOL:
        raise ParityError(
            f"{kind} transform: Newton-Schulz vs float64 eigh relative error {worst:.3g} > {TRANSFORM_RTOL:g}"
        )
    log(f"{kind} transform: Newton-Schulz vs float64 eigh, max relative error {worst:.2g}")
    return worst


def _dims(multiple: int = 1, prefix: str = "") -> dict[str, Any]:
    from torch.export import Dim

    if multiple == 1:
        height, width = Dim(f"{prefix}height", min=8, max=8192), Dim(f"{prefix}width", min=8, max=8192)
    else:  # H and W are multiples of ``multiple`` by contract: say so, and the pools stay exact
        height = multiple * Dim(f"{prefix}h", min=2, max=8192 // multiple)
        width = multiple * Dim(f"{prefix}w", min=2, max=8192 // multiple)
    return {"batch": Dim("batch", min=1, max=1024), "height": height, "width": width}


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth random images (N, 3, H, W) in [0, 1]: low-frequency noise looks more like photos."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 8), max(2, w // 8), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def _stylizer_inputs(
    encoder: StyleEncoder, n: int, h: int, w: int, seed: int, cell: int = 0
) -> tuple[torch.Tensor, ...]:
    """Images of one set, strengths in [0, 1], (with ``cell`` the style images,) the statistics of another set."""
    styles = _images(n, w, h, seed + 100)
    with torch.no_grad():
        stats = encoder(styles)
    strength = torch.linspace(1.0, 0.25, n) if n > 1 else torch.ones(1)
    return (_images(n, h, w, seed), strength, *((styles,) if cell else ()), *stats)


# ----------------------------------------------------------------------------- presets


def preset_name(stem: str, taken: set[str]) -> str:
    """File stem -> lower-case [a-z0-9_-] name, unique among ``taken`` (adds -2, -3, ...)."""
    base = re.sub(r"[^a-z0-9_-]+", "_", stem.lower()).strip("_-") or "style"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name


def check_styles_dir(styles_dir: Path) -> None:
    """Refuse a styles folder with a file Pillow cannot open (each file there becomes a preset the
    service promises, so one is not silently left out): a ValueError naming the files."""
    bad = []
    for path in find_images(styles_dir):
        try:
            load_image(path)  # as the export reads it
        except UNREADABLE:
            bad.append(path.relative_to(styles_dir).as_posix())
    if bad:
        raise ValueError(f"styles folder {styles_dir}: not a readable image: {', '.join(bad)} (fix or remove it)")


def collect_styles(styles_dir: Path | None) -> list[tuple[str, str, np.ndarray]]:
    """(name, source, HxWx3 uint8) for every bundled style image, then every image in ``styles_dir``."""
    out: list[tuple[str, str, np.ndarray]] = []
    taken: set[str] = set()
    for name, img in bundled_style_images().items():
        name = preset_name(name, taken)
        taken.add(name)
        out.append((name, f"bundled:{name}", img))
    for path in find_images(styles_dir) if styles_dir else []:
        name = preset_name(path.stem, taken)
        taken.add(name)
        out.append((name, f"file:{path.relative_to(styles_dir).as_posix()}", load_image(path)))
    return out


def thumbnail_jpeg(img: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(resize_long_side(img, side)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_presets(
    out_dir: Path,
    encoder_onnx: Path,
    levels: Sequence[str],
    styles_dir: Path | None,
    side: int,
    log: Callable[[str], None],
    cell: int = 0,
) -> list[dict[str, str]]:
    """Statistics (through the exported style encoder on ONNX Runtime), with patches on (``cell``)
    the style picture (uint8), and thumbnails of every preset."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(encoder_onnx), providers=["CPUExecutionProvider"])
    arrays: dict[str, np.ndarray] = {}
    presets = []
    credits = picture_credits()
    for name, source, img in collect_styles(styles_dir):
        arrays.update(zip(preset_keys(name, levels, bool(cell)), encode_style(session, img, side, levels, cell)))
        thumb = f"presets/{name}.jpg"
        atomic_write_bytes(out_dir / thumb, thumbnail_jpeg(img))
        credit = credits.get(source.removeprefix("bundled:")) if source.startswith("bundled:") else None
        presets.append({"name": name, "thumbnail": thumb, "source": source, **({"credit": credit} if credit else {})})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out_dir / "style_presets.npz", buf.getvalue())
    log(f"presets: {len(presets)} ({', '.join(p['name'] for p in presets)})")
    return presets


def training_metrics(run_dir: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """Last logged losses, the step count and the training time of the run."""
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    last = records[-1] if records else {}
    return {
        "steps": ckpt["step"],
        "train_seconds": round(float(ckpt.get("train_seconds", 0.0)), 1),
        **{k: v for k, v in last.items() if k == "loss" or k.startswith(("psnr_", "steps_per_s"))},
    }
