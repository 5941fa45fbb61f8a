#!/usr/bin/env python3
"""PyTorch (cuDNN) timings of the convolutions bench_ops measures on a GPU: the baseline we compare with.

Not part of evo (which uses no deep-learning library): a benchmark of someone else's kernels, run
by tools/gpu_check.sh on a GPU machine. Same shapes and names as bench/bench_ops.cpp --device cuda,
channels_last (NHWC, our layout), FP32 with TF32 off (our kernels are FP32 FFMA), cudnn.benchmark
on (cuDNN picks its fastest algorithm per shape), timed with CUDA events: median of the per-call
GPU times. Backward data and backward filter are the two halves of aten.convolution_backward.

usage: python3 bench/torch_conv_baseline.py [--full] [--out FILE.json] [--iters N]
prints (and writes) JSON: {"gpu": ..., "torch": ..., "cudnn": ..., "results": [{"name", "ms"}]}
"""
import argparse
import json
import statistics
import sys


def shapes(full):
    """(n, hw, c_in, c_out, kh, kw, stride), in bench_ops.cpp's GPU order (conv_shapes)."""
    sizes = []
    for hw in (32, 16, 8):
        for c in (16, 32, 64, 128, 256):
            paired = (hw == 32 and c <= 64) or (hw == 16 and 32 <= c <= 128) or (hw == 8 and c >= 64)
            if full or paired:
                sizes.append((hw, c))
    out = []
    for n in (50, 256):
        for kh, kw in ((1, 1), (3, 3), (5, 5), (1, 3), (3, 1)):
            for hw, c in sizes:
                out.append((n, hw, c, c, kh, kw, 1))
        out.append((n, 32, 32, 64, 3, 3, 2))
    return out


def name(op, g):
    n, hw, c_in, c_out, kh, kw, s = g
    return f"{op}/{kh}x{kw}/n{n}/{hw}x{hw}/{c_in}-{c_out}/s{s}"


def time_ms(torch, fn, iters):
    for _ in range(3):  # warm-up; the first call also runs cudnn.benchmark's search
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every channel count at every size")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per measurement")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("torch_conv_baseline: PyTorch is not installed (pip install torch); no baseline")
    if not torch.cuda.is_available():
        sys.exit("torch_conv_baseline: no GPU visible to PyTorch; no baseline")

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda:0")
    aten = torch.ops.aten
    results = []
    for g in shapes(args.full):
        n, hw, c_in, c_out, kh, kw, s = g
        pad = [kh // 2, kw // 2]
        x = torch.randn(n, c_in, hw, hw, device=dev).to(memory_format=torch.channels_last)
        w = (0.1 * torch.randn(c_out, c_in, kh, kw, device=dev)).to(memory_format=torch.channels_last)
        y = torch.nn.functional.conv2d(x, w, stride=s, padding=pad)
        dy = torch.randn_like(y).to(memory_format=torch.channels_last)

        def forward():
            torch.nn.functional.conv2d(x, w, stride=s, padding=pad)

        def backward(mask):
            return lambda: aten.convolution_backward(dy, x, w, None, [s, s], pad, [1, 1], False,
                                                     [0, 0], 1, mask)

        for op, fn in (("conv_fwd", forward), ("conv_bwd_data", backward([True, False, False])),
                       ("conv_bwd_filter", backward([False, True, False]))):
            ms = time_ms(torch, fn, args.iters)
            flops = 2.0 * n * ((hw - 1) // s + 1) ** 2 * c_out * kh * kw * c_in
            results.append({"name": name(op, g), "ms": ms, "GFLOP/s": flops / ms / 1e6})
        del x, w, y, dy
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "tf32": False,
        "layout": "channels_last",
        "results": results,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
