"""Export a module through the public ``torch.onnx.export`` and prove it against ONNX Runtime.

The file is written to a temporary name, checked on fixed inputs with an ONNX Runtime CPU
session (max |PyTorch - ONNX Runtime| must not exceed ``atol``), and only then moved into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from service.manifest import Fp16Arithmetic, Fp16Parity, Parity, Tensor, Variant, sha256_file

OPSET = 18
CPU = "CPUExecutionProvider"  # where every parity is checked at export


# Messages the exporter prints on every export that say nothing about the model: torchvision's
# ops are not registered (no torchvision here, none used), a pytree deprecation inside torch, and
# dynamic axes that share a name by design (batch). Anything else the exporter says is kept.
_KNOWN_NOISE = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (UserWarning, r"# The axis name: \w+ will not be used, since it shares the same shape constraints"),
)
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"  # "torchvision is not installed. Skipping ..."


@contextlib.contextmanager
def _without_known_exporter_noise() -> Iterator[None]:
    registration = logging.getLogger(_REGISTRATION_LOGGER)
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category, message in _KNOWN_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        registration.setLevel(level)


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

    def entry_fields(self, **parity: Any) -> dict[str, Any]:
        """The start of this model's ``ModelEntry``: its file (beside the manifest) and checksum, the
        opset, inputs, outputs and parity (``parity``: further ``Parity`` fields, e.g. the seeds checked)."""
        return {
            "path": self.path.name,
            "sha256": sha256_file(self.path),
            "opset": self.opset,
            "inputs": [Tensor(**t) for t in self.inputs],
            "outputs": [Tensor(**t) for t in self.outputs],
            "parity": Parity(max_abs_diff=self.max_abs_diff, atol=self.atol, checked_on=CPU, **parity),
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
        with torch.no_grad(), _without_known_exporter_noise():
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
        session = ort.InferenceSession(str(tmp), providers=[CPU])
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


FP16_MIN_PSNR_DB = 35.0  # an fp16 variant is served only when its images are at least this close to fp32 PyTorch


def fp16_variant(source: Path, path: Path) -> list[str]:
    """Write an fp16 copy of the fp32 graph ``source`` to ``path`` (ONNX Runtime's converter, its
    default fp32 block list; fp32 inputs and outputs, so a variant takes and returns exactly what
    its fp32 model does); returns the op types that run in fp16.

    Everything else is in fp16 too, the style statistics included: the converter casts a blocked
    op's output back to fp16 for the next op, so blocking the statistics and the Newton-Schulz
    transform still passes their values (covariances past 65504) through fp16. Whether a variant
    is served is decided by ``fp16_parity``, in fp16 arithmetic."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    ops = {node.op_type for node in model.graph.node}
    converted = convert_float_to_float16(model, keep_io_types=True)
    # The converter adds one Cast per fp32 consumer of an fp16 tensor, identical down to the name
    # and output, which ONNX Runtime refuses ("two nodes with same node name"): keep one of each.
    seen, nodes = set(), []
    for node in converted.graph.node:
        key = node.SerializeToString()
        if node.op_type != "Cast" or key not in seen:
            seen.add(key)
            nodes.append(node)
    del converted.graph.node[:]
    converted.graph.node.extend(nodes)
    infos = {info.name: info for info in converted.graph.value_info}
    del converted.graph.value_info[:]
    converted.graph.value_info.extend(infos.values())
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(converted, str(tmp))
    os.replace(tmp, path)
    return sorted(ops - set(DEFAULT_OP_BLOCK_LIST) - {"Cast", "Shape"})


def psnr_db(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR (dB) of ``b`` against ``a``, both in a range of width ``peak``; inf when identical."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(peak * peak / mse))


def _accumulating_in_fp32(base: type) -> type:
    """``base`` (a reference evaluator op) with float16 inputs computed in float32 and the result
    rounded to float16, as a GPU's matrix products and convolutions do (fp32 accumulators)."""

    def _run(self, *inputs, **attributes):
        if not any(getattr(x, "dtype", None) == np.float16 for x in inputs):
            return base._run(self, *inputs, **attributes)
        wide = [x.astype(np.float32) if getattr(x, "dtype", None) == np.float16 else x for x in inputs]
        return tuple(y.astype(np.float16) for y in base._run(self, *wide, **attributes))

    return type(base.__name__, (base,), {"op_domain": "", "_run": _run})


def fp16_arithmetic_scores(
    path: Path, reference: Sequence[np.ndarray], feeds: Sequence[Mapping[str, np.ndarray]], output: str, peak: float
) -> list[float]:
    """PSNR of the fp16 graph at ``path`` computed in float16 arithmetic against ``reference``;
    -inf where an output is not finite. ONNX's reference evaluator (numpy) runs the graph: every
    op's result is a float16, so a value past 65504 becomes inf; matrix products and convolutions
    add up in float32 before their result is rounded, as cuBLAS and cuDNN do (and numpy's own
    float16 products, without BLAS, would take minutes for 512-channel covariances).

    ONNX Runtime's CPU provider cannot tell: it has no fp16 kernel for most ops and computes them in
    float32 between casts, so an fp16 variant that overflows on a GPU passes there (measured: the
    stylizer gave 39 dB on the CPU provider and all-NaN images on CUDA, an H200)."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.ops.op_conv import Conv
    from onnx.reference.ops.op_conv_transpose import ConvTranspose
    from onnx.reference.ops.op_matmul import MatMul
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(path))
    # the converter appends its casts; ONNX Runtime does not mind, the reference evaluator does
    OnnxModel.graph_topological_sort(model.graph)
    evaluator = ReferenceEvaluator(model, new_ops=[_accumulating_in_fp32(op) for op in (MatMul, Conv, ConvTranspose)])
    scores = []
    with np.errstate(all="ignore"):
        for ref, feed in zip(reference, feeds, strict=True):
            (out,) = evaluator.run([output], dict(feed))
            scores.append(psnr_db(ref, out, peak) if np.isfinite(out).all() else float("-inf"))
    return scores


def fp16_parity(
    path: Path,
    reference: Sequence[np.ndarray],
    feeds: Sequence[Mapping[str, np.ndarray]],
    output: str,
    peak: float,
    converted_ops: list[str],
    arithmetic: tuple[Sequence[np.ndarray], Sequence[Mapping[str, np.ndarray]]],
) -> Variant:
    """The fp16 variant at ``path`` scored against fp32 PyTorch outputs: run on an ONNX Runtime CPU
    session over ``feeds`` (against ``reference``), and in fp16 arithmetic
    (``fp16_arithmetic_scores``) over ``arithmetic`` = (reference, feeds), small inputs since the
    reference evaluator is slow. Within its bound only when both are: the manifest's
    ``variants.fp16`` entry."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=[CPU])
    scores = [
        psnr_db(ref, session.run([output], dict(feed))[0], peak) for ref, feed in zip(reference, feeds, strict=True)
    ]
    worst = min(scores)
    in_fp16 = min(fp16_arithmetic_scores(path, *arithmetic, output, peak))
    return Variant(
        path=path.name,
        precision="fp16",
        ops_in_fp16=converted_ops,
        parity=Fp16Parity(
            vs="PyTorch fp32",
            min_psnr_db=round(worst, 2) if np.isfinite(worst) else None,
            bound_psnr_db=FP16_MIN_PSNR_DB,
            within_bound=bool(worst >= FP16_MIN_PSNR_DB and in_fp16 >= FP16_MIN_PSNR_DB),
            checked_on=CPU,
            cases=len(scores),
            fp16_arithmetic=Fp16Arithmetic(
                checked_on="ONNX reference evaluator, numpy float16",
                min_psnr_db=round(in_fp16, 2) if np.isfinite(in_fp16) else None,
                finite=bool(np.isfinite(in_fp16)),
                cases=len(arithmetic[1]),
            ),
        ),
    )


def fp16_verdict(parity: Fp16Parity) -> str:
    """The fp16-arithmetic half of a variant's parity and what it decides, for the export's log."""
    arithmetic = parity.fp16_arithmetic
    score = f"{arithmetic.min_psnr_db} dB" if arithmetic.finite else "not finite"
    served = "served" if parity.within_bound else "not served"
    return f"{score} in fp16 arithmetic (bound {parity.bound_psnr_db:g} dB): {served} on CUDA"
