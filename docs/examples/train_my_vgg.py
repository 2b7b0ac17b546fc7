"""Train my_vgg.vgg13 on the bundled CIFAR-10 sample with a plain PyTorch loop (no `compress`
code), and save it the way public training scripts do: a nested dict with `module.`-prefixed
keys (as DataParallel writes them) beside the epoch, accuracy and optimiser state.

    python docs/examples/train_my_vgg.py --epochs 30 --out my_vgg.pth
"""
import argparse
import pickle
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from my_vgg import vgg13

SAMPLE = Path(__file__).resolve().parents[2] / "compress/assets/cifar10-sample/cifar-10-batches-py"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def read(files):
    xs, ys = [], []
    for f in files:
        with open(SAMPLE / f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}  # official batches: bytes keys
        xs.append(torch.tensor(d["data"]).view(-1, 3, 32, 32))
        ys.append(torch.tensor(d["labels"]))
    return torch.cat(xs), torch.cat(ys)


def normalise(x):
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def augment(x):
    x = F.pad(x, (4, 4, 4, 4))
    i, j = torch.randint(0, 9, (2,))
    x = x[:, :, i:i + 32, j:j + 32]
    return torch.where(torch.rand(x.shape[0], 1, 1, 1) < 0.5, x.flip(3), x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", default="my_vgg.pth")
    args = p.parse_args()
    torch.manual_seed(0)
    train_x, train_y = read([f"data_batch_{i}" for i in range(1, 5)])
    test_x, test_y = read(["test_batch"])
    model = vgg13()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = args.epochs * ((len(train_x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=steps, pct_start=0.15)
    for epoch in range(args.epochs):
        model.train()
        t0 = time.time()
        for idx in torch.randperm(len(train_x)).split(64):
            loss = F.cross_entropy(model(normalise(augment(train_x[idx]))), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = sum((model(normalise(test_x[i:i + 500])).argmax(1) == test_y[i:i + 500]).sum().item()
                      for i in range(0, len(test_x), 500)) / len(test_x) * 100
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test {acc:.2f}%, {time.time() - t0:.0f} s", flush=True)
    torch.save({"epoch": args.epochs, "acc": acc, "optimizer": opt.state_dict(),
                "net": {f"module.{k}": v for k, v in nn.DataParallel(model).module.state_dict().items()}}, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
