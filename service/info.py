"""What ``info`` says: the models served, their checksums, parity and measured quality, the
provider and precision each session actually runs on, the device, the threads, the queue.

Paths are relative to the export folder (file names only): nothing about the host's layout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from service.gan import MicroBatcher
from service.manifest import Generator
from service.startup import Models


def describe(models: Models, request_threads: int) -> dict[str, Any]:
    manifest, cpus, providers = models.manifest, models.cpus, models.providers
    return {
        "service": "atelier",
        "version": manifest.atelier_version,
        "manifest_version": manifest.version,
        "exported": manifest.created,
        "exports": models.exports.name,  # the folder's name: info never shows host paths
        "device": models.device,
        "providers": {
            "requested": providers.spec,
            "fallback": providers.fallback,
            "cuda_options": providers.cuda_options,
        },
        "cpus": {"count": cpus.count, "source": cpus.source, "request_threads": request_threads},
        "models": _models(models),
        "export_check": models.watch.check(),
        "stylize_queue": models.heavy.describe() if models.style else None,
    }


def _models(models: Models) -> dict[str, Any]:
    out = {}
    for role, entry in models.roles.items():
        out[role] = {
            **entry.model_dump(include={"path", "sha256", "opset", "inputs", "outputs", "parity"}, exclude_unset=True),
            "provider": models.provider(role),
            "precision": models.files[role][1],  # fp16: the export's variant, entry.variants["fp16"]
            **({"precision_fallback": models.precision_fallback[role]} if role in models.precision_fallback else {}),
            "variants": {name: v.model_dump() for name, v in entry.variants.items()},
        }
    generator, style = models.manifest.models.generator, models.manifest.style
    if generator is not None:
        out["generator"].update(_generator(generator, models.gan.batcher))
    if style is not None:
        vgg = style.vgg.model_dump()
        vgg["weights"] = style.vgg.weights and Path(style.vgg.weights.split("#")[0]).name
        out["style_encoder"].update({"vgg": vgg, "levels": style.levels})
        out["stylizer"].update(
            {
                "levels": style.levels,
                "transform": style.transform,
                "default_strength": style.default_strength,
                # where the style's own patches are swapped in and their detail added (None: off)
                "patches": style.patches.model_dump(include={"scale", "cell", "detail_gain"})
                if style.patches
                else None,
                "training": {"metrics": finite(style.metrics)},
                "quality": finite(style.quality.model_dump(exclude_unset=True)),
                "presets": [p.name for p in style.presets],
                "shape_step": models.style.step,  # inputs padded to multiples of this
                "warm_shapes": sorted(f"{h}x{w}" for h, w in models.warm_shapes),
            }
        )
    return out


def _generator(g: Generator, batcher: MicroBatcher | None) -> dict[str, Any]:
    return {
        **g.model_dump(include={"latent_dim", "image_size", "channels", "class_labels", "dataset", "latent"}),
        "metrics": finite(g.metrics),
        "batching": {"enabled": True, "runs": batcher.runs, "calls": batcher.calls} if batcher else {"enabled": False},
    }


def finite(obj: Any) -> Any:
    """JSON has no NaN: unmeasured metrics become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj
