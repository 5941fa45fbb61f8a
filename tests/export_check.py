#!/usr/bin/env python3
"""Checks the files test_export wrote: every case folder holds an exported model (model.onnx,
model.py + model.safetensors), the images it was run on (images.bin: float32 NCHW, pixel / 255)
and evo's own inference logits on them (logits.bin: float32 [n, classes]), with case.json giving
the shapes. For each case: onnx.checker accepts the model; ONNX Runtime's logits and the PyTorch
module's logits equal evo's within 1e-4 relative (|a - b| <= 1e-4 * max(|b|, 1)); the probabilities
output is the softmax; the safetensors package, when installed, reads the same tensors.

Not a test of evo itself: the independent references (onnx, onnxruntime, torch) judge evo's
files. Prints one JSON object (largest differences) and exits 1 on any failure.

usage: export_check.py CASES_DIR
"""
import importlib.util
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch

TOLERANCE = 1e-4


def rel_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.maximum(np.abs(b), 1.0)))


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(root):
    try:
        from safetensors.torch import load_file
    except ImportError:
        load_file = None
    torch.set_num_threads(1)
    report = {"cases": 0, "max_onnx": 0.0, "max_torch": 0.0, "failures": [],
              "safetensors_package": load_file is not None, "onnxruntime": ort.__version__,
              "onnx": onnx.__version__, "torch": torch.__version__}
    for name in sorted(os.listdir(root)):
        case = os.path.join(root, name)
        if not os.path.isfile(os.path.join(case, "case.json")):
            continue
        with open(os.path.join(case, "case.json")) as f:
            meta = json.load(f)
        n, c, h, w, k = meta["n"], meta["c"], meta["h"], meta["w"], meta["classes"]
        images = np.fromfile(os.path.join(case, "images.bin"), dtype="<f4").reshape(n, c, h, w)
        evo = np.fromfile(os.path.join(case, "logits.bin"), dtype="<f4").reshape(n, k)
        evo = evo.astype(np.float64)
        report["cases"] += 1

        model_path = os.path.join(case, "model.onnx")
        model = onnx.load(model_path)
        onnx.checker.check_model(model, full_check=True)
        props = {p.key: p.value for p in model.metadata_props}
        if props.get("evo.id") != meta["id"] or len(json.loads(props["evo.classes"])) != k:
            report["failures"].append(f"{name}: metadata {props.get('evo.id')!r}")
        session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        logits, probs = session.run(["logits", "probabilities"], {"image": images})
        d = rel_diff(logits, evo)
        report["max_onnx"] = max(report["max_onnx"], d)
        if not d <= TOLERANCE:
            report["failures"].append(f"{name}: ONNX Runtime logits differ by {d:.3g}")
        softmax = np.exp(evo - evo.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        if not np.max(np.abs(probs - softmax)) <= 1e-5:
            report["failures"].append(f"{name}: ONNX probabilities are not the softmax")
        # A batch size other than the one exported with: the batch dimension is dynamic.
        one = session.run(["logits"], {"image": images[:1]})[0]
        if not rel_diff(one, evo[:1]) <= TOLERANCE:
            report["failures"].append(f"{name}: ONNX Runtime with batch 1 differs")

        module = load_module(os.path.join(case, "model.py"), f"evo_export_{name}")
        net = module.EvoNet.load(os.path.join(case, "model.safetensors")).eval()
        with torch.no_grad():
            out = net(torch.from_numpy(images)).numpy()
        d = rel_diff(out, evo)
        report["max_torch"] = max(report["max_torch"], d)
        if not d <= TOLERANCE:
            report["failures"].append(f"{name}: PyTorch logits differ by {d:.3g}")
        if load_file is not None:
            theirs = load_file(os.path.join(case, "model.safetensors"))
            ours = net.state_dict()
            if set(theirs) != set(ours) or any(not torch.equal(theirs[t], ours[t]) for t in ours):
                report["failures"].append(f"{name}: safetensors package reads other tensors")
    if report["cases"] == 0:
        report["failures"].append("no cases found in " + root)
    print(json.dumps(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
