"""A peer backend of bench/encode.py, run in its own environment (bench/peers.sh) as a worker process.

It loads one sentence-transformers backend once (exporting it from the local model folder first, never from
a hub), then answers the driver round by round, so peers are timed interleaved with the driver's contenders:

    stdin:  {"out": "/tmp/x.npy"}      encode every text, save the (N, H) float32 embeddings there
    stdout: {"seconds": 12.3}          wall time of that encode call (tokenisation included)

The first stdout line is {"ready": true, "versions": {...}, "export": "..."} (or {"error": "..."}).

    .venv-onnx/bin/python bench/peer.py --backend onnx --variant int8 --model DIR --texts texts.json --work DIR

Variants: ``fp32`` (the backend's own export of the folder); ``int8``: ONNX, sentence-transformers'
``export_dynamic_quantized_onnx_model(model, config, ...)`` with the config made for this CPU (``avx512_vnni``,
``avx512``, ``avx2`` or ``arm64``: ``onnx_int8_config``); OpenVINO, the static (calibrated) int8 of
``export_static_quantized_openvino_model``, calibrated as it does (300 texts padded to 384 tokens) but on
AG News *train* texts from ``--calibration`` instead of glue/sst2 from the hub.
"""

import argparse
import contextlib
import fcntl
import io
import json
import os
import platform
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np


def protocol() -> io.TextIOWrapper:
    """The driver's channel, the worker's stdout, kept for the replies alone: everything else written to stdout,
    from Python or native code (an OpenVINO int8 export prints its progress), goes to stderr instead."""
    channel = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    return channel


def reply(obj: dict, channel) -> None:
    channel.write(json.dumps(obj) + "\n")
    channel.flush()


@contextlib.contextmanager
def exclusive(work: Path):
    """Hold ``work`` alone: the variants of one backend share it and start together, so one at a time copies
    the model and exports it (else one deletes or overwrites the other's half-written copy)."""
    with open(work / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def model_copy(model: str, work: Path) -> Path:
    """A plain copy of ``model``: exports and ``save_pretrained`` write into it, the verified folder stays untouched.

    Not links: ``save_pretrained`` rewrites config and tokenizer files in place, through any link.
    """
    copy = work / "model"
    if not (copy / ".copied").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(model, copy, symlinks=False)
        (copy / ".copied").touch()
    return copy


FP32_FILES = {"onnx": "onnx/model.onnx", "openvino": "openvino/openvino_model.xml"}


def load_fp32(folder: Path, backend: str):
    """The backend's own export of the folder, made once and saved beside the weights."""
    from sentence_transformers import SentenceTransformer

    file = FP32_FILES[backend]
    if not (folder / file).is_file():
        SentenceTransformer(str(folder), backend=backend, device="cpu").save_pretrained(str(folder))
    return SentenceTransformer(str(folder), backend=backend, device="cpu", model_kwargs={"file_name": file}), file


def onnx_int8_config(capabilities: dict, machine: str) -> str:
    """The quantisation config of ``export_dynamic_quantized_onnx_model`` made for a CPU with these
    ``torch.cpu.get_capabilities()`` and ``platform.machine()``. A config for an instruction set the CPU lacks
    is no baseline: ``avx512_vnni`` on an AVX2-only AMD EPYC (family 23) gave cosines down to -0.11 to fp32."""
    if machine.lower() in ("arm64", "aarch64"):
        return "arm64"
    if capabilities.get("avx512_vnni"):
        return "avx512_vnni"
    return "avx512" if capabilities.get("avx512_f") else "avx2"


def load_onnx(folder: Path, variant: str):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    fp32, file = load_fp32(folder, "onnx")
    if variant == "fp32":
        return fp32, file
    import torch

    config = onnx_int8_config(torch.cpu.get_capabilities(), platform.machine())
    # sentence-transformers names the file by the weights' type: model_qint8_avx512_vnni.onnx, model_quint8_avx2.onnx
    pattern = f"model_*int8_{config}.onnx"
    if not any((folder / "onnx").glob(pattern)):
        export_dynamic_quantized_onnx_model(fp32, config, str(folder))
    name = str(next((folder / "onnx").glob(pattern)).relative_to(folder))
    return SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs={"file_name": name}), name


def load_openvino(folder: Path, variant: str, calibration: list[str]):
    from sentence_transformers import SentenceTransformer

    fp32, file = load_fp32(folder, "openvino")
    if variant == "fp32":
        return fp32, file
    name = "openvino/openvino_model_qint8_quantized.xml"
    if not (folder / name).is_file():
        # export_static_quantized_openvino_model's steps, with a local calibration set.
        from datasets import Dataset
        from optimum.intel import OVConfig, OVQuantizationConfig, OVQuantizer

        config = OVQuantizationConfig()
        texts = calibration[: config.num_samples or 300]
        features = fp32.tokenizer(texts, padding="max_length", max_length=384, truncation=True)
        dataset = Dataset.from_dict(dict(features))
        quantizer = OVQuantizer.from_pretrained(fp32.transformers_model)
        out = folder / "openvino-int8-export"
        quantizer.quantize(dataset, save_directory=str(out), ov_config=OVConfig(quantization_config=config))
        for suffix in ("xml", "bin"):  # the quantizer writes an openvino/ folder of its own
            shutil.copy(out / "openvino" / f"openvino_model.{suffix}", folder / name.replace(".xml", f".{suffix}"))
    return SentenceTransformer(str(folder), backend="openvino", device="cpu", model_kwargs={"file_name": name}), name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["onnx", "openvino"], required=True)
    p.add_argument("--variant", choices=["fp32", "int8"], required=True)
    p.add_argument("--model", required=True, help="sentence-transformers folder")
    p.add_argument("--texts", required=True, help="JSON list of the texts to encode")
    p.add_argument("--calibration", help="JSON list of calibration texts (OpenVINO int8)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--work", required=True, help="folder for the exported models (reused across runs)")
    args = p.parse_args()
    channel = protocol()
    try:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        texts = json.loads(Path(args.texts).read_text())
        with exclusive(work):
            folder = model_copy(args.model, work)
            start = time.perf_counter()
            if args.backend == "onnx":
                model, file = load_onnx(folder, args.variant)
            else:
                model, file = load_openvino(folder, args.variant, json.loads(Path(args.calibration).read_text()))
            load_seconds = time.perf_counter() - start

        def encode(xs):
            return model.encode(xs, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)

        encode(texts[: 2 * args.batch_size])  # warm-up, as the driver does for its own contenders
        names = ("sentence-transformers", "transformers", "torch", "onnxruntime", "optimum-onnx", "openvino",
                 "optimum-intel", "nncf")
        versions = {}
        for name in names:
            try:
                versions[name] = version(name)
            except Exception:
                continue
        reply({"ready": True, "versions": versions, "file": file, "load_seconds": load_seconds}, channel)
    except Exception as err:  # the driver records why this peer did not run
        reply({"error": f"{type(err).__name__}: {err}"}, channel)
        raise
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        out = encode(texts)
        seconds = time.perf_counter() - start
        np.save(request["out"], np.asarray(out, dtype=np.float32))
        reply({"seconds": seconds}, channel)


if __name__ == "__main__":
    main()
