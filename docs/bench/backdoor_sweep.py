"""Research sweep behind the README's "Backdoor: what was tried" (not part of the library).

Does the architecture decouple a BadNets backdoor from its target class under DELETE? Needs
only torch and numpy, so it runs on a bare GPU machine:

    python docs/bench/backdoor_sweep.py --export          # here: writes mnist5k.npz beside it
    OUT=results python docs/bench/backdoor_sweep.py        # coarse: 4 models x lr x steps x BN
    OUT=results python docs/bench/backdoor_sweep.py --fine # flatten heads, 3 widths x 2 seeds

One DELETE "epoch" here is one full-batch step over the 40 known poisoned images (1%).
Results of both runs on one H200: ``backdoor_sweep_h200_{coarse,fine}.jsonl``.
"""

import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist5k.npz")
if "--export" in sys.argv:
    from delete.applications._mnist import _mnist5k

    bundle = _mnist5k(0, False)
    np.savez_compressed(
        _DATA,
        xtr=(bundle.train.images.numpy() * 255).astype("uint8"),
        ytr=bundle.train.labels.numpy(),
        xte=(bundle.test.images.numpy() * 255).astype("uint8"),
        yte=bundle.test.labels.numpy(),
    )
    sys.exit(0)

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
quick = "--quick" in sys.argv
out = open(os.path.join(os.environ.get("OUT", "."), "sweep.jsonl"), "w")  # noqa: SIM115 - whole run
d = np.load(_DATA)
xtr = torch.tensor(d["xtr"]).float() / 255
ytr = torch.tensor(d["ytr"]).long()
xte = torch.tensor(d["xte"]).float() / 255
yte = torch.tensor(d["yte"]).long()
if quick:
    xtr, ytr = xtr[:400], ytr[:400]
TARGET = 0


def trig(x):
    x = x.clone()
    x[..., 24:27, 24:27] = 1.0
    return x


g = torch.Generator().manual_seed(0)
cand = torch.nonzero(ytr != TARGET).flatten()
pois = cand[torch.randperm(len(cand), generator=g)[: round(0.05 * len(xtr))]]
xp, yp = xtr.clone(), ytr.clone()
xp[pois] = trig(xp[pois])
yp[pois] = TARGET
g2 = torch.Generator().manual_seed(1)
known = pois[torch.randperm(len(pois), generator=g2)[: max(1, round(0.01 * len(xtr)))]]
xf = xp[known].to(dev)
keep = yte != TARGET
xte_t = trig(xte[keep]).to(dev)
xte_d, yte_d = xte.to(dev), yte.to(dev)


def conv_stack(c, w):
    return [
        nn.Conv2d(c, w // 2, 3, padding=1, bias=False),
        nn.BatchNorm2d(w // 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w // 2, w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(),
    ]


def gap(w):
    return nn.Sequential(
        *conv_stack(1, w), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 10)
    )


def flat(w):
    return nn.Sequential(*conv_stack(1, w), nn.Flatten(), nn.Linear(2 * w * 49, 10))


class Block(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.c1 = nn.Conv2d(i, o, 3, s, 1, bias=False)
        self.b1 = nn.BatchNorm2d(o)
        self.c2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(o)
        self.sc = (
            nn.Sequential()
            if s == 1 and i == o
            else nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))
        )

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.sc(x))


def resnet18():
    layers, i = [nn.Conv2d(1, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for o, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(i, o, s), Block(o, o, 1)]
        i = o
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10))


def shift(x):
    p = F.pad(x, (2, 2, 2, 2))
    i, j = np.random.randint(0, 5, 2)
    return p[..., i : i + 28, j : j + 28]


def train(m, epochs):
    m.to(dev).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * ((len(xp) + 127) // 128)
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    torch.manual_seed(0)
    np.random.seed(0)
    for _ in range(epochs):
        perm = torch.randperm(len(xp))
        for k in range(0, len(xp), 128):
            idx = perm[k : k + 128]
            x, y = shift(xp[idx]).to(dev), yp[idx].to(dev)
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sch.step()
    return m.eval()


@torch.no_grad()
def evaluate(m):
    m.eval()
    pc = torch.cat([m(xte_d[k : k + 500]).argmax(1) for k in range(0, len(xte_d), 500)])
    pt = torch.cat([m(xte_t[k : k + 500]).argmax(1) for k in range(0, len(xte_t), 500)])
    t = yte_d == TARGET
    return {
        "clean": round(100 * (pc == yte_d).float().mean().item(), 1),
        "t0": round(100 * (pc[t] == TARGET).float().mean().item(), 1),
        "asr": round(100 * (pt == TARGET).float().mean().item(), 1),
    }


def delete(orig, lr, epochs, freeze_bn, temp=1.0):
    st = copy.deepcopy(orig).train()
    opt = torch.optim.SGD(st.parameters(), lr=lr, momentum=0.9)
    with torch.no_grad():
        t = orig.eval()(xf).float()
        t[:, TARGET] = float("-inf")
        target = F.softmax(t / temp, 1)
    for _ in range(epochs):
        st.train()
        if freeze_bn:
            for mod in st.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.eval()
        s = F.log_softmax(st(xf) / temp, 1)
        loss = F.kl_div(s, target, reduction="batchmean") * temp * temp
        if not torch.isfinite(loss):
            return None
        opt.zero_grad()
        loss.backward()
        opt.step()
    return st.eval()


models = {
    "gap32": lambda: gap(32),
    "gap128": lambda: gap(128),
    "flat64": lambda: flat(64),
    "resnet18": resnet18,
}
lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2] if not quick else [1e-3]
eps = [10, 30, 100] if not quick else [3]
seeds = {}
if "--fine" in sys.argv:
    models = {f"flat{w}-s{sd}": (lambda w=w: flat(w)) for w in (32, 64, 128) for sd in (0, 1)}
    seeds = {k: int(k[-1]) for k in models}
    lrs = [5e-5, 1e-4, 2e-4] if not quick else [1e-4]
    eps = [50, 75, 100, 150, 200, 300] if not quick else [3]
for name, make in models.items():
    t0 = time.time()
    torch.manual_seed(seeds.get(name, 0))
    m = train(make(), 1 if quick else 15)
    base = evaluate(m)
    print(name, "trained", round(time.time() - t0, 1), "s", base, flush=True)
    best = None
    for lr in lrs:
        for ep in eps:
            for fbn in (False,) if "--fine" in sys.argv else (False, True):
                torch.manual_seed(0)
                st = delete(m, lr, ep, fbn)
                r = evaluate(st) if st is not None else {"clean": None}
                row = {"model": name, "lr": lr, "epochs": ep, "freeze_bn": fbn, **r, "base": base}
                out.write(json.dumps(row) + "\n")
                out.flush()
                if r.get("clean") is not None and r["asr"] < 5:
                    drop = base["clean"] - r["clean"]
                    if best is None or drop < best[0]:
                        best = (drop, row)
    print(name, "best with ASR<5:", best, flush=True)
