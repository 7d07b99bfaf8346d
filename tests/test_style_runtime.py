"""The style model on real ONNX Runtime sessions of a tiny export: I/O binding, resident preset
statistics and shape buckets (the CUDA path's mechanics, run here on CPU ``OrtValue``s)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from bench.hostile_images import gradient
from service.manifest import load_manifest
from service.runtime import open_session
from service.style import (
    STYLE,
    StyleTransfer,
    _to_input,
    mix_stats,
    pad_for_cascade,
    padded_size,
    stats_names,
    style_input,
    style_picture,
)


@pytest.fixture(scope="module")
def sessions(exports_dir):
    manifest = load_manifest(exports_dir)
    cpu = ["CPUExecutionProvider"]
    encoder = open_session(exports_dir / manifest.models.style_encoder.path, cpu)
    stylizer = open_session(exports_dir / manifest.models.stylizer.path, cpu)
    return exports_dir, manifest.style, encoder, stylizer


def style(sessions, bucket: int | None = None) -> StyleTransfer:
    exports, style_section, encoder, stylizer = sessions
    return StyleTransfer(exports, style_section, encoder, stylizer, bucket=bucket)


def test_io_binding_and_resident_presets_give_the_pixels_of_a_plain_run(sessions):
    st = style(sessions)
    name, stats = next(iter(st.presets.items()))
    x = _to_input(pad_for_cascade(gradient(53, 37), st.multiple))
    feed = {
        "content": x,
        "strength": np.array([0.8], np.float32),
        **{n: style_input(n, s) for n, s in zip(st.stats_names, stats)},
    }
    (plain,) = st.stylizer.run(["image"], feed)
    assert isinstance(st.resident[name][0], ort.OrtValue) and st.resident[name][0].device_name() == "cpu"
    np.testing.assert_array_equal(st.run_stylizer(st.stylizer, x, stats, 0.8), plain)  # host statistics
    np.testing.assert_array_equal(st.run_stylizer(st.stylizer, x, st.resident[name], 0.8), plain)  # resident ones
    np.testing.assert_array_equal(
        st.stylize(gradient(53, 37), name, 0.8, False, 512), st.stylize(gradient(53, 37), stats, 0.8, False, 512)
    )


@pytest.mark.parametrize("h, w", [(1, 1), (1, 700), (700, 1), (37, 53), (65, 63), (64, 128), (129, 511)])
def test_shape_buckets_pad_to_multiples_of_64_and_crop_back_exactly(sessions, h, w):
    st = style(sessions, bucket=64)
    content = gradient(w, h)
    H, W = st.padded_size(h, w)
    assert H % 64 == 0 and W % 64 == 0 and H - 64 < max(h, 64) and W - 64 < max(w, 64)
    out = st.stylize(content, next(iter(st.presets)), 1.0, False, 1024)
    assert out.shape == (h, w, 3)
    padded = pad_for_cascade(content, st.multiple, 64)
    assert padded.shape[:2] == (H, W) and np.array_equal(padded[:h, :w], content)
    whole = st.stylize(padded, next(iter(st.presets)), 1.0, False, 1024)  # the bucket's shape, nothing to pad
    np.testing.assert_array_equal(out, whole[:h, :w])  # the output is the top-left of the padded run


def test_buckets_bound_the_shapes_a_max_side_can_produce(sessions):
    st = style(sessions, bucket=64)
    shapes = st.bucket_shapes(512)
    assert len(shapes) == 15 and shapes[0] == (512, 512)  # (512, 64k) and (64k, 512), k = 1..8
    assert all(512 in hw and hw[0] % 64 == 0 and hw[1] % 64 == 0 for hw in shapes)
    plain = style(sessions)  # CPU default: padded only to the cascade's stride and minimum size
    assert plain.step == plain.multiple < 64
    # short sides from the minimum (4 multiples) to 512, each way round, the square once
    assert len(plain.bucket_shapes(512)) == 2 * (512 // plain.multiple - 4) + 1 > len(shapes)
    assert padded_size(1, 1, plain.multiple) == (4 * plain.multiple,) * 2


def test_a_run_that_shrinks_the_arena_gives_the_same_pixels(sessions):
    st = style(sessions)
    name = next(iter(st.presets))
    x = _to_input(pad_for_cascade(gradient(600, 500), st.multiple))  # over 512x512: shrunk after the run
    np.testing.assert_array_equal(
        st.run_stylizer(st.stylizer, x, st.resident[name], 1.0, shrink_arena=True),
        st.run_stylizer(st.stylizer, x, st.resident[name], 1.0),
    )


def test_a_style_carries_its_picture_and_the_stylizer_paints_from_it(sessions):
    """The session's export has patches on: presets and uploads carry the style's picture after their
    statistics (the picture the style encoder saw, its sides multiples of the cell), and the
    stylizer takes the style's shapes from it: another picture gives another result at strength 1,
    the same at strength 0."""
    st = style(sessions)
    assert st.cell and st.stats_names == [*stats_names(st.levels), STYLE]
    assert STYLE in {i.name for i in st.stylizer.get_inputs()}
    picture = gradient(90, 70)
    stats = st.style_stats(picture)
    assert len(stats) == 2 * len(st.levels) + 1
    np.testing.assert_array_equal(stats[-1], style_picture(picture, st.style_side, st.cell))
    assert stats[-1].shape[0] % st.cell == 0 and stats[-1].shape[1] % st.cell == 0
    name, preset = next(iter(st.presets.items()))
    assert preset[-1].dtype == np.uint8 and preset[-1].shape[0] % st.cell == 0
    content = gradient(48, 40)
    other = [*preset[:-1], np.ascontiguousarray(preset[-1][::-1, ::-1])]  # the same statistics, turned round
    painted = st.stylize(content, name, 1.0, False, 512)
    assert not np.array_equal(painted, st.stylize(content, other, 1.0, False, 512))
    np.testing.assert_array_equal(
        st.stylize(content, name, 0.0, False, 512), st.stylize(content, other, 0.0, False, 512)
    )


def test_blended_pictures_are_strips_as_wide_as_their_weights(sessions):
    st = style(sessions)
    a, b = (st.style_stats(gradient(w, h)) for w, h in ((120, 90), (60, 110)))
    mixed = mix_stats([a, b], [3, 1], st.cell)
    canvas = mixed[-1]
    assert canvas.shape[0] == a[-1].shape[0] and canvas.shape[1] % st.cell == 0
    strip = round(a[-1].shape[1] * 0.75 / st.cell) * st.cell
    left = (a[-1].shape[1] - strip) // 2
    np.testing.assert_array_equal(canvas[:, :strip], a[-1][:, left : left + strip])
    assert canvas.shape[1] == strip + max(4 * st.cell, round(a[-1].shape[1] * 0.25 / st.cell) * st.cell)
