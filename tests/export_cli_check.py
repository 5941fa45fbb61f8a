#!/usr/bin/env python3
"""End-to-end check of `evo export` from the outside: runs the exported ONNX model (ONNX Runtime)
and PyTorch module on the Fashion-MNIST test images, read here from Debian's files with numpy, and
prints how many each gets right as JSON. test_export compares that with `evo eval --split test`:
it checks the exported standardisation, layout and weights on the real data pipeline, not only on
synthetic inputs. Not a test of its own.

usage: export_cli_check.py FASHION_MNIST_DIR MODEL.onnx MODEL.py WEIGHTS.safetensors
"""
import gzip
import importlib.util
import json
import sys

import numpy as np
import onnxruntime as ort
import torch


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main(folder, onnx_path, py_path, weights_path):
    images = idx(folder + "/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = idx(folder + "/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    x = images[:, None, :, :]  # [N, 1, 28, 28]
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    onnx_pred = np.concatenate([session.run(["logits"], {"image": x[i:i + 1000]})[0].argmax(1)
                                for i in range(0, len(x), 1000)])
    spec = importlib.util.spec_from_file_location("evo_exported", py_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.EvoNet.load(weights_path).eval()
    with torch.no_grad():
        torch_pred = torch.cat([net(torch.from_numpy(x[i:i + 1000])).argmax(1)
                                for i in range(0, len(x), 1000)]).numpy()
    print(json.dumps({"images": int(len(labels)),
                      "onnx_correct": int((onnx_pred == labels).sum()),
                      "torch_correct": int((torch_pred == labels).sum()),
                      "disagree": int((onnx_pred != torch_pred).sum())}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
