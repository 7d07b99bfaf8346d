"""Export a module through the public ``torch.onnx.export`` and prove it against ONNX Runtime.

The file is written to a temporary name, checked on fixed inputs with an ONNX Runtime CPU
session (max |PyTorch - ONNX Runtime| must not exceed ``atol``), and only then moved into place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch

OPSET = 18


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch module within tolerance."""


@dataclass
class ExportResult:
    path: Path
    opset: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    max_abs_diff: float
    atol: float

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "opset": self.opset,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "parity": {"max_abs_diff": self.max_abs_diff, "atol": self.atol, "checked_on": "CPUExecutionProvider"},
        }


def export_checked(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Mapping[str, Mapping[int, Any]],
    check_inputs: Sequence[tuple[torch.Tensor, ...]],
    atol: float = 1e-4,
) -> ExportResult:
    """Export ``module`` (eval mode, CPU) to ``path`` and verify it on every tuple in ``check_inputs``.

    ``dynamic_shapes`` maps an input name to ``{axis: torch.export.Dim}``; ``check_inputs`` should
    use shapes other than the example's so the dynamic axes are exercised.
    """
    import onnxruntime as ort

    module = module.eval().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                example_inputs,
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                dynamic_shapes=tuple(dict(dynamic_shapes.get(name, {})) for name in input_names),
                verbose=False,
            )
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        max_diff = 0.0
        for inputs in check_inputs:
            with torch.no_grad():
                expected = module(*inputs)
            expected = expected if isinstance(expected, (tuple, list)) else (expected,)
            feed = {name: t.cpu().numpy() for name, t in zip(input_names, inputs)}
            got = session.run(list(output_names), feed)
            for e, g in zip(expected, got):
                if tuple(e.shape) != g.shape:
                    raise ParityError(f"{path.name}: output shape {g.shape} != PyTorch {tuple(e.shape)}")
                max_diff = max(max_diff, float(np.max(np.abs(e.cpu().numpy().astype(np.float64) - g))))
        if not max_diff <= atol:
            raise ParityError(f"{path.name}: max |PyTorch - ONNX Runtime| = {max_diff:.3g} > {atol:g}")
        result = ExportResult(
            path=path,
            opset=OPSET,
            inputs=[_value_info(v) for v in model.graph.input],
            outputs=[_value_info(v) for v in model.graph.output],
            max_abs_diff=max_diff,
            atol=atol,
        )
        os.replace(tmp, path)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
    return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape}
