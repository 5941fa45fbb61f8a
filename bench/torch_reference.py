#!/usr/bin/env python3
"""PyTorch build of an evo DNA (data/dna/README.md): training-step timing and a logits check.

Not part of evo (which uses no deep-learning library): an independent reference, run by
bench/evolved_nets.sh and bench/train_throughput.sh (speed) and tests/test_torch_reference.cpp
(correctness of the forward pass).

usage:
  python3 bench/torch_reference.py time  --dna D.json [--input 28x28x1] [--classes 10] [--batch 50]
                                         [--threads 2] [--steps 50] [--warmup 5]
      prints {"images_per_second": ..., "threads": ...}
  python3 bench/torch_reference.py check --dna D.json --weights W.evow --input X.bin --logits Y.bin
                                         [--shape 28x28x1] [--classes 10] [--tol 1e-4]
      X.bin: f32 NHWC [n, H, W, C]; Y.bin: evo's f32 logits [n, classes] (bench/dump_logits).
      Exits 1 when max |torch - evo| / max |torch logit| exceeds --tol.
"""
import argparse
import json
import math
import struct
import sys
import time
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F


def round_half_away(x):
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def parse_hwc(text):
    h, w, c = (int(v) for v in text.lower().split("x"))
    return h, w, c


class DnaNet(nn.Module):
    """The net of one DNA: convolutions without bias ('same' padding k//2, stride 2^s), vertices
    summing their in-edges (skips resized to the backbone edge's shape), batch norm (eps 1e-3) +
    ReLU for bn_relu vertices, then global average pool and a fully connected layer with bias."""

    def __init__(self, dna, shape, classes):
        super().__init__()
        h, w, c = shape
        verts = {v["id"]: v for v in dna["vertices"]}
        self.edges = {e["id"]: e for e in dna["edges"]}
        backbone_out = {e["from"]: e for e in dna["edges"] if not e["skip"]}
        self.in_edges = {v: [e for e in dna["edges"] if e["to"] == v] for v in verts}
        # Backbone order (a topological order: skips only go forward along it).
        self.order = [dna["input"]]
        while self.order[-1] != dna["output"]:
            self.order.append(backbone_out[self.order[-1]]["to"])
        self.input_id = dna["input"]
        self.activation = {v: verts[v]["activation"] for v in self.order}
        self.shapes = {dna["input"]: (h, w, c)}
        self.convs = nn.ModuleDict()
        self.bns = nn.ModuleDict()
        self.edge_shape = {}
        for v in self.order[1:]:
            for e in self.in_edges[v]:
                sh, sw, sc = self.shapes[e["from"]]
                if e["type"] == "conv":
                    kh, kw = e["filter"]
                    s = 2 ** e.get("stride_scale", 0)
                    oc = max(1, round_half_away(sc * e["depth_factor"]))
                    self.convs[e["id"]] = nn.Conv2d(sc, oc, (kh, kw), stride=s,
                                                    padding=(kh // 2, kw // 2), bias=False)
                    self.edge_shape[e["id"]] = (-(-sh // s), -(-sw // s), oc)
                else:
                    self.edge_shape[e["id"]] = (sh, sw, sc)
            primary = [e for e in self.in_edges[v] if not e["skip"]][0]
            self.shapes[v] = self.edge_shape[primary["id"]]
            if self.activation[v] == "bn_relu":
                self.bns[v] = nn.BatchNorm2d(self.shapes[v][2], eps=1e-3)
        self.output_id = dna["output"]
        self.fc = nn.Linear(self.shapes[self.output_id][2], classes)

    @staticmethod
    def reshape(x, shape):
        """Nearest resize y[i][j] = x[floor(i*H/OH)][floor(j*W/OW)], then channel truncate/pad."""
        oh, ow, oc = shape
        _, c, h, w = x.shape
        if (h, w) != (oh, ow):
            rows = (torch.arange(oh, device=x.device) * h) // oh
            cols = (torch.arange(ow, device=x.device) * w) // ow
            x = x.index_select(2, rows).index_select(3, cols)
        if c > oc:
            x = x[:, :oc]
        elif c < oc:
            x = F.pad(x, (0, 0, 0, 0, 0, oc - c))
        return x

    def forward(self, x):
        act = {self.input_id: x}
        for v in self.order[1:]:
            total = None
            for e in self.in_edges[v]:
                y = act[e["from"]]
                if e["type"] == "conv":
                    y = self.convs[e["id"]](y)
                y = self.reshape(y, self.shapes[v])
                total = y if total is None else total + y
            if self.activation[v] == "bn_relu":
                total = F.relu(self.bns[v](total))
            act[v] = total
        return self.fc(act[self.output_id].mean(dim=(2, 3)))


def read_weights(path):
    """The evo-weights/1 file: {key: tensor in evo's layout}."""
    data = open(path, "rb").read()
    if data[:8] != b"EVOWEIGH":
        sys.exit(f"{path}: not an evo weight file")
    (stored,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != stored:
        sys.exit(f"{path}: CRC-32 mismatch")
    version, count = struct.unpack_from("<II", data, 8)
    if version != 1:
        sys.exit(f"{path}: version {version}, expected 1")
    off, out = 16, {}
    for _ in range(count):
        (klen,) = struct.unpack_from("<H", data, off)
        off += 2
        key = data[off:off + klen].decode()
        off += klen
        rank = data[off]
        off += 1
        dims = struct.unpack_from(f"<{rank}q", data, off)
        off += 8 * rank
        n = math.prod(dims)
        vals = torch.frombuffer(bytearray(data[off:off + 4 * n]), dtype=torch.float32)
        off += 4 * n
        out[key] = vals.reshape(dims).clone()
    return out


def load_evo_weights(net, weights):
    with torch.no_grad():
        for key, conv in net.convs.items():
            conv.weight.copy_(weights[key].permute(0, 3, 1, 2))  # OHWI -> OIHW
        for v, bn in net.bns.items():
            bn.weight.copy_(weights[v + ".gamma"])
            bn.bias.copy_(weights[v + ".beta"])
            bn.running_mean.copy_(weights[v + ".running_mean"])
            bn.running_var.copy_(weights[v + ".running_var"])
        net.fc.weight.copy_(weights["fc.weight"])
        net.fc.bias.copy_(weights["fc.bias"])


def cmd_time(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dna = json.load(open(a.dna))
    h, w, c = parse_hwc(a.input)
    net = DnaNet(dna, (h, w, c), a.classes).to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=dna["learning_rate"], momentum=0.9,
                          weight_decay=1e-4)
    x = torch.randn(a.batch, c, h, w).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_second": a.steps * a.batch / dt, "threads": a.threads,
                      "steps": a.steps, "batch": a.batch, "torch": torch.__version__}))


def cmd_check(a):
    torch.set_num_threads(a.threads)
    dna = json.load(open(a.dna))
    h, w, c = parse_hwc(a.shape)
    net = DnaNet(dna, (h, w, c), a.classes)
    load_evo_weights(net, read_weights(a.weights))
    # float64: the reference's own rounding stays far below the tolerance.
    net = net.double().to(memory_format=torch.channels_last).eval()
    x = torch.frombuffer(bytearray(open(a.input, "rb").read()), dtype=torch.float32)
    n = x.numel() // (h * w * c)
    x = x.reshape(n, h, w, c).permute(0, 3, 1, 2).double()  # NHWC data, channels_last view
    evo = torch.frombuffer(bytearray(open(a.logits, "rb").read()), dtype=torch.float32)
    evo = evo.reshape(n, a.classes).double()
    with torch.inference_mode():
        ref = net(x)
    scale = ref.abs().max().item()
    err = (ref - evo).abs().max().item() / max(scale, 1e-30)
    ok = err <= a.tol and math.isfinite(err)
    print(json.dumps({"dna": a.dna, "images": n, "max_abs_logit": scale,
                      "max_relative_error": err, "tolerance": a.tol, "ok": ok}))
    sys.exit(0 if ok else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--dna", required=True)
    t.add_argument("--input", default="28x28x1")
    t.add_argument("--classes", type=int, default=10)
    t.add_argument("--batch", type=int, default=50)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--steps", type=int, default=50)
    t.add_argument("--warmup", type=int, default=5)
    k = sub.add_parser("check")
    k.add_argument("--dna", required=True)
    k.add_argument("--weights", required=True)
    k.add_argument("--input", required=True)
    k.add_argument("--logits", required=True)
    k.add_argument("--shape", default="28x28x1")
    k.add_argument("--classes", type=int, default=10)
    k.add_argument("--threads", type=int, default=2)
    k.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    cmd_time(a) if a.cmd == "time" else cmd_check(a)


if __name__ == "__main__":
    main()
