"""The encoder's levels ``relu1_1`` .. ``relu4_1``: their names, block numbers, feature widths and
the input sizes they need. Shared by the decoders, the cascade, the options and the export.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

VGG_WIDTHS = (64, 128, 256, 512)  # conv widths of VGG blocks 1..4
ENCODER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def layer_block(layer: str) -> int:
    """Block number of an encoder layer ``relu{B}_1`` (B in 1..4); raises on anything else."""
    m = re.fullmatch(r"relu([1234])_1", layer)
    if m is None:
        raise ValueError(f"encoder layer must be one of {ENCODER_LAYERS}, not {layer!r}")
    return int(m[1])


def size_multiple(layer: str) -> int:
    """Input H and W must be multiples of this for the decoder to return the input's size."""
    return 2 ** (layer_block(layer) - 1)


def feature_channels(layer: str, widths: Sequence[int] = VGG_WIDTHS) -> int:
    return widths[layer_block(layer) - 1]


def levels_up_to(layer: str) -> list[str]:
    """The cascade's levels, coarse to fine: ``layer`` down to relu1_1."""
    return [f"relu{b}_1" for b in range(layer_block(layer), 0, -1)]
