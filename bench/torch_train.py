#!/usr/bin/env python3
"""PyTorch trains one evo DNA on Fashion-MNIST for a wall-clock budget: the baseline of
bench/trainer_check.sh, which asks whether evo's trainer is what holds a search back.

Not part of evo and not a test: an independent reference. The recipe is evo's (SGD with momentum
0.9, weight decay 1e-4, batch 50, the DNA's learning rate, a cosine rate over the time budget, no
augmentation, per-channel standardisation), the net bench/torch_reference.py's DnaNet, in the
faster of PyTorch's layouts for such nets (NCHW, issue 27; --layout channels_last to compare).

usage: python3 bench/torch_train.py --dna D.json --seconds S [--threads 2] [--layout nchw]
                                    [--data /usr/share/datasets/fashion-mnist] [--seed 1]
                                    [--batch 50] [--nesterov]
prints {"test_accuracy": ..., "val_accuracy": ..., "steps": ..., "seconds": ..., ...}
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import DnaNet  # noqa: E402


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dna", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layout", choices=["nchw", "channels_last"], default="nchw")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=50)
    # Issue 26's hand-design baseline: --batch 128 --nesterov (the rate scales with the batch).
    p.add_argument("--nesterov", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x = idx(os.path.join(a.data, "train-images-idx3-ubyte.gz")).float().div(255).unsqueeze(1)
    y = idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz")).long()
    tx = idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")).float().div(255).unsqueeze(1)
    ty = idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")).long()
    # evo's split: 10% of the training files held out for validation (a random 10% here).
    perm = torch.randperm(len(x))
    n_val = len(x) // 10
    vx, vy, x, y = x[perm[:n_val]], y[perm[:n_val]], x[perm[n_val:]], y[perm[n_val:]]
    mean, std = x.mean().item(), x.std().item()
    norm = lambda t: (t - mean) / std
    x, vx, tx = norm(x), norm(vx), norm(tx)
    mf = torch.channels_last if a.layout == "channels_last" else torch.contiguous_format
    dna = json.load(open(a.dna))
    net = DnaNet(dna, (28, 28, 1), 10).to(memory_format=mf)
    lr = dna["learning_rate"] * a.batch / 50
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4,
                          nesterov=a.nesterov)
    steps, start = 0, time.perf_counter()
    net.train()
    done = False
    while not done:
        order = torch.randperm(len(x))
        for i in range(0, len(x) - a.batch + 1, a.batch):
            t = time.perf_counter() - start
            if t >= a.seconds:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / a.seconds))
            b = order[i:i + a.batch]
            loss = F.cross_entropy(net(x[b].contiguous(memory_format=mf)), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    seconds = time.perf_counter() - start
    net.eval()

    def accuracy(ix, iy):
        correct = 0
        with torch.inference_mode():
            for i in range(0, len(ix), 250):
                correct += (net(ix[i:i + 250].contiguous(memory_format=mf)).argmax(1) ==
                            iy[i:i + 250]).sum().item()
        return correct / len(ix)

    print(json.dumps({"dna": a.dna, "layout": a.layout, "threads": a.threads, "batch": a.batch,
                      "nesterov": a.nesterov, "steps": steps,
                      "seconds": seconds, "val_accuracy": accuracy(vx, vy),
                      "test_accuracy": accuracy(tx, ty), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
