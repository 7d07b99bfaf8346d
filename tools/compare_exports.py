"""Compare two export folders: their manifests field by field, and every ONNX model's outputs bit
for bit on the same fixed inputs (generator latents, a picture, a preset's style). For a change
that must not change behaviour, export the same runs before and after it and compare:

    .venv/bin/python -m training.export --runs-root runs --out /tmp/before   # on the old commit
    .venv/bin/python -m training.export --runs-root runs --out /tmp/after
    .venv/bin/python tools/compare_exports.py /tmp/before /tmp/after

Both manifests are read as JSON, not through the schema, so exports of different manifest
versions compare. Exit status 1 when any output differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.sampling import latents_for_seeds  # noqa: E402
from service.style import preset_keys, style_input, style_inputs  # noqa: E402

IGNORED = {"created"}  # when it was written
SEEDS = list(range(16))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` -> ``{"a.b[0]": 1}``."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}".lstrip(".")).items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def manifest_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The fields that differ, one line each; checksums left out (the outputs are compared instead)."""
    fa, fb = flatten(a), flatten(b)
    lines = []
    for key in sorted(set(fa) | set(fb)):
        if key in IGNORED or key.endswith("sha256"):
            continue
        if key not in fb:
            lines.append(f"only in the first: {key} = {fa[key]!r:.70}")
        elif key not in fa:
            lines.append(f"only in the second: {key} = {fb[key]!r:.70}")
        elif fa[key] != fb[key]:
            lines.append(f"differs: {key}: {fa[key]!r:.50} -> {fb[key]!r:.50}")
    return lines


def picture(h: int, w: int) -> np.ndarray:
    """A fixed (1, 3, h, w) float32 picture in [0, 1]: gradients and a seeded grain."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    grain = np.random.default_rng(0).random((h, w), dtype=np.float32)
    channels = [x / w, y / h, 0.5 + 0.5 * np.sin(x / 7 + y / 11) * grain]
    return np.stack(channels)[None].astype(np.float32)


def feeds(manifest: dict[str, Any], exports: Path, role: str) -> list[dict[str, np.ndarray]]:
    """The fixed inputs each model is run on, from its manifest entry (and the first preset)."""
    entry = manifest["models"][role]
    if role == "generator":
        feed = {"z": latents_for_seeds(SEEDS, entry["latent_dim"])}
        if entry["class_labels"]:  # None: an unconditional generator takes z alone
            feed["label"] = np.arange(len(SEEDS), dtype=np.int64) % len(entry["class_labels"])
        return [feed]
    if role == "style_encoder":
        return [{"image": picture(96, 128)}, {"image": picture(75, 50)}]
    style = manifest["style"]
    patches = "patches" in style
    name = style["presets"][0]["name"]
    with np.load(exports / style["presets_file"]) as npz:
        stats = {
            key: style_input(key, npz[stored])
            for key, stored in zip(style_inputs(style["levels"], patches), preset_keys(name, style["levels"], patches))
        }
    m = entry["size_multiple"]
    return [
        {"content": picture(h, w), "strength": np.array([s], np.float32), **stats}
        for (h, w), s in (((8 * m, 10 * m), 1.0), ((6 * m, 4 * m), 0.5))
    ]


def run(exports: Path, file: str, inputs: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread: the same order of additions in both runs
    session = ort.InferenceSession(str(exports / file), options, providers=["CPUExecutionProvider"])
    return [out for feed in inputs for out in session.run(None, feed)]


def compare_outputs(a: Path, b: Path, ma: dict[str, Any], mb: dict[str, Any]) -> list[tuple[str, bool, float]]:
    """(file, bit for bit equal, max |difference|) for every model and variant both exports hold."""
    rows = []
    for role in sorted(set(ma["models"]) & set(mb["models"])):
        inputs = feeds(ma, a, role)
        entry_a, entry_b = ma["models"][role], mb["models"][role]
        files = [(entry_a["path"], entry_b["path"])] + [
            (entry_a["variants"][v]["path"], entry_b["variants"][v]["path"])
            for v in sorted(set(entry_a.get("variants", {})) & set(entry_b.get("variants", {})))
        ]
        for file_a, file_b in files:
            outs_a, outs_b = run(a, file_a, inputs), run(b, file_b, inputs)
            same = all(x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(outs_a, outs_b))
            worst = max(float(np.nanmax(np.abs(x.astype(np.float64) - y))) for x, y in zip(outs_a, outs_b))
            rows.append((file_a, same, worst))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    args = p.parse_args(argv)
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (args.first, args.second))
    print(f"manifest versions {ma['version']} and {mb['version']}; fields that differ (checksums and 'created' aside):")
    for line in manifest_differences(ma, mb) or ["none"]:
        print(f"  {line}")
    print("model outputs on the same fixed inputs:")
    rows = compare_outputs(args.first, args.second, ma, mb)
    for file, same, worst in rows:
        print(f"  {file}: {'bit for bit equal' if same else f'DIFFERENT (max |difference| {worst:.3g})'}")
    return 0 if all(same for _, same, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
