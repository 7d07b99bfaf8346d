"""The GPU path as far as a CPU machine can check it: the container's bento carries the CUDA
wheels, the models and a non-root user; `ATELIER_PROVIDERS=cuda` refuses to start without CUDA,
naming what is missing; `cuda,cpu` falls back and says so in info and /metrics; CUDA provider
options are checked on any machine."""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx
import pytest
import requests

from bench import hostile_images as hi
from bench.pipeline import REPO, Server
from service.manifest import load_manifest, sha256_file
from service.runtime import choose_providers, cuda_problem
from tests.helpers import wait_until

NO_CUDA = cuda_problem()


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of each ``name[extras]==version`` line of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        if m := re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z,]+\])?==(\S+)", line.strip()):
            out[m[1].lower()] = m[3]
    return out


def test_the_bentos_requirements_are_the_services_plus_the_cuda_wheels():
    service, bento = pins(REPO / "requirements-service.txt"), pins(REPO / "requirements-bento.txt")
    assert bento == service
    assert "onnxruntime-gpu[cuda,cudnn]==" in (REPO / "requirements-bento.txt").read_text()


def test_the_bento_builds_offline_with_the_models_the_cuda_wheels_and_a_non_root_user(bento):
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime-gpu[cuda,cudnn]==1.31.1" in requirements
    assert "torch" not in requirements  # the container serves on ONNX Runtime alone
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "requirements.txt" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users  # the server runs as an unprivileged user
    assert {f.name for f in (bento / "src" / "service" / "playground").iterdir()} == {
        "index.html",
        "playground.css",
        "playground.js",
    }  # the page ships in the bento
    manifest = load_manifest(bento / "src" / "exports")  # every model's sha256 verified in the bento
    assert {"generator", "style_encoder", "stylizer"} <= set(manifest.models.roles())


# As in the container (the image sets it): BentoML does not respawn a worker whose start failed,
# so `bentoml serve` exits non-zero (outside a container it retries every ~10 s, logging the reason).
CONTAINER = {"BENTOML_CONTAINERIZED": "true"}


@pytest.mark.skipif(NO_CUDA is None, reason="CUDA can start here: the refusal cannot be shown")
def test_strict_cuda_refuses_to_start_without_cuda_and_names_what_is_missing(exports_dir, tmp_path):
    with pytest.raises(RuntimeError, match="bentoml serve exited with [1-9]"):
        Server(
            exports_dir, tmp_path / "serve.log", startup_timeout=60, env={"ATELIER_PROVIDERS": "cuda", **CONTAINER}
        ).__enter__()
    log = (tmp_path / "serve.log").read_text()
    assert "ATELIER_PROVIDERS=cuda: CUDA cannot start" in log
    assert re.search(r"lib[\w.+-]+\.so(\.\d+)*", log), log  # the library the loader could not find


@pytest.mark.skipif(NO_CUDA is None, reason="CUDA runs here: nothing falls back")
def test_the_cpu_fallback_is_reported_in_info_and_metrics(server):
    info = requests.post(f"{server.url}/info", json={}, timeout=10).json()
    assert info["providers"]["requested"] == "cuda,cpu"
    assert "CUDAExecutionProvider unavailable" in info["providers"]["fallback"]
    assert {m["provider"] for m in info["models"].values()} == {"CPUExecutionProvider"}
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert re.search(r"^atelier_provider_fallback(\{[^}]*\})? 1\.0$", metrics, re.MULTILINE), metrics[-2000:]
    running = re.findall(r"^atelier_execution_provider\{([^}]*)\} 1\.0$", metrics, re.MULTILINE)
    assert any('role="stylizer"' in labels and 'provider="CPUExecutionProvider"' in labels for labels in running)


def test_a_wrong_provider_name_is_refused_at_start(exports_dir, tmp_path):
    with pytest.raises(RuntimeError, match="bentoml serve exited with [1-9]"):
        Server(
            exports_dir, tmp_path / "serve.log", startup_timeout=60, env={"ATELIER_PROVIDERS": "tpu", **CONTAINER}
        ).__enter__()
    assert "ATELIER_PROVIDERS='tpu': use a comma-separated list of cuda, cpu" in (tmp_path / "serve.log").read_text()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cudnn_conv_algo_search=FAST", "cudnn_conv_algo_search='FAST': cudnn_conv_algo_search takes EXHAUSTIVE, "),
        ("prefer_nhwc", "'prefer_nhwc' is not key=value"),
        ("gpu_memory_limit=1000", "'gpu_memory_limit=1000' is not key=value with one of device_id, gpu_mem_limit"),
        ("gpu_mem_limit=2GB", "gpu_mem_limit='2GB': gpu_mem_limit takes bytes"),
    ],
)
def test_wrong_cuda_options_are_named(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        choose_providers("cpu", cuda_options=spec)


def test_cuda_options_are_read_on_any_machine():
    spec = " cudnn_conv_algo_search=HEURISTIC, gpu_mem_limit=4294967296,prefer_nhwc=1 ,"
    assert choose_providers("cpu", cuda_options=spec).cuda_options == {
        "cudnn_conv_algo_search": "HEURISTIC",
        "gpu_mem_limit": "4294967296",
        "prefer_nhwc": "1",
    }
    # unset, cuDNN's default algorithms (CUDA_DEFAULTS, chosen on an H200), which a setting overrides
    assert choose_providers("cpu").cuda_options == {"cudnn_conv_algo_search": "DEFAULT"}
    assert choose_providers("cpu", cuda_options="use_tf32=0").cuda_options == {
        "cudnn_conv_algo_search": "DEFAULT",
        "use_tf32": "0",
    }


def test_a_wrong_cuda_option_is_refused_at_start(exports_dir, tmp_path):
    env = {"ATELIER_CUDA_OPTIONS": "cudnn_conv_algo_search=FAST", **CONTAINER}
    with pytest.raises(RuntimeError, match="bentoml serve exited with [1-9]"):
        Server(exports_dir, tmp_path / "serve.log", startup_timeout=60, env=env).__enter__()
    assert "ATELIER_CUDA_OPTIONS: cudnn_conv_algo_search='FAST'" in (tmp_path / "serve.log").read_text()


def test_the_cuda_defaults_on_cpu_warm_buckets_and_batched_samples_answer_as_unbatched(exports_dir, server, tmp_path):
    """Shape buckets (a CUDA default) and sample batching (opt-in), forced on here: same answers,
    exact sizes; CUDA provider options are shown (and left unused by the CPU)."""
    env = {
        "ATELIER_SHAPE_BUCKET": "64",
        "ATELIER_SAMPLE_BATCHING": "1",
        "ATELIER_CUDA_OPTIONS": "cudnn_conv_algo_search=HEURISTIC,use_tf32=0",
    }
    gpu_like = Server(exports_dir, tmp_path / "serve.log", env=env)
    with gpu_like:
        info = requests.post(f"{gpu_like.url}/info", json={}, timeout=10).json()
        assert info["providers"]["cuda_options"] == {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}
        stylizer = info["models"]["stylizer"]
        assert stylizer["shape_step"] == 64
        assert {"256x256", "384x512", "512x384", "512x512"} <= set(stylizer["warm_shapes"])  # before ready

        def samples(target, seed):
            r = requests.post(f"{target.url}/sample", json={"n": 1 + seed % 3, "seed": seed}, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()["images"]

        with ThreadPoolExecutor(16) as pool:
            batched = list(pool.map(lambda s: samples(gpu_like, s), range(32)))
        assert batched == [samples(server, s) for s in range(32)]  # the unbatched server's PNGs, byte for byte
        batching = requests.post(f"{gpu_like.url}/info", json={}, timeout=10).json()["models"]["generator"]["batching"]
        assert batching["enabled"] and batching["calls"] >= 32 and batching["runs"] <= batching["calls"]

        r = requests.post(
            f"{gpu_like.url}/stylize", files={"content": hi.png(53, 37)}, data={"style_name": "wheat_field"}, timeout=60
        )
        assert r.status_code == 200 and r.headers["X-Atelier-Size"] == "53x37"  # padded to 64x64, cropped back

        def all_warm():
            shapes = requests.post(f"{gpu_like.url}/info", json={}, timeout=10).json()["models"]["stylizer"]
            return len(shapes["warm_shapes"]) == 22  # long side 512: 15 shapes, long side 256: 7

        wait_until(all_warm, 120, "the background warm-up of every shape")


def test_an_fp16_variant_giving_nan_on_its_provider_is_refused_at_start(exports_dir, tmp_path):
    """The generator's fp16 variant made to output NaN (its image times NaN, checksums updated: a
    variant whose export checks passed, as the stylizer's passed on the CPU provider before it gave
    NaN on CUDA). The service runs each fp16 model once at start: under ATELIER_PRECISION=fp16 it
    refuses to start, naming the model; under auto (fp32 on the CPU) it serves."""
    exports = Path(shutil.copytree(exports_dir, tmp_path / "exports"))
    manifest = json.loads((exports / "manifest.json").read_text())
    variant = exports / manifest["models"]["generator"]["variants"]["fp16"]["path"]
    model = onnx.load(str(variant))
    (last,) = [n for n in model.graph.node if "image" in n.output]
    last.output[list(last.output).index("image")] = "image_before_nan"
    nan = onnx.helper.make_tensor("nan", onnx.TensorProto.FLOAT, [], [float("nan")])
    model.graph.initializer.append(nan)
    model.graph.node.append(onnx.helper.make_node("Mul", ["image_before_nan", "nan"], ["image"]))
    onnx.save(model, str(variant))
    for asset in manifest["assets"]:
        if asset["path"] == variant.name:
            asset["sha256"] = sha256_file(variant)
    # the tiny stylizer's fp16 variant recorded as within its bound, whatever its export measured, so
    # that ATELIER_PRECISION=fp16 reaches the check at start (the CPU computes it in float32: finite)
    parity = manifest["models"]["stylizer"]["variants"]["fp16"]["parity"]
    parity["within_bound"] = True
    parity["fp16_arithmetic"].update(finite=True, min_psnr_db=40.0)
    (exports / "manifest.json").write_text(json.dumps(manifest))

    env = {"ATELIER_PRECISION": "fp16", **CONTAINER}
    with pytest.raises(RuntimeError, match="bentoml serve exited with [1-9]"):
        Server(exports, tmp_path / "fp16.log", startup_timeout=120, env=env).__enter__()
    log = (tmp_path / "fp16.log").read_text()
    assert "ATELIER_PRECISION=fp16: generator's fp16 variant gave non-finite values (100% of its output)" in log
    with Server(exports, tmp_path / "auto.log") as auto:
        r = requests.post(f"{auto.url}/sample", json={"n": 2, "seed": 1}, timeout=60)
        assert r.status_code == 200, r.text
        info = requests.post(f"{auto.url}/info", json={}, timeout=10).json()
        assert info["models"]["generator"]["precision"] == "fp32"
