"""Prune your own model: your class, your data, your training loop; prune-snr measures, prunes, saves, exports.

python examples/prune_your_own_model.py            # ~12k Fashion-MNIST images, 3 epochs
python examples/prune_your_own_model.py --fast     # a quick run (what the tests run)

The data are Fashion-MNIST's IDX files (train-images-idx3-ubyte.gz, ...) in $FASHION_MNIST, by default
Debian's /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist).
"""

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import prune_snr

FASHION_MNIST = os.environ.get("FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


class Block(nn.Module):  # a residual block with a grouped conv and a squeeze-excite gate
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1), nn.Sigmoid()
        )

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(x + y * self.se(y))


class MyNet(nn.Module):
    def __init__(self, width=32, num_classes=10):
        super().__init__()
        stage = lambda i, o, s: nn.Sequential(
            nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), Block(o)
        )
        self.features = nn.Sequential(stage(1, width, 1), stage(width, 2 * width, 2), stage(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def fashion_mnist(split, n):
    prefix = "train" if split == "train" else "t10k"
    if not os.path.isfile(f"{FASHION_MNIST}/{prefix}-images-idx3-ubyte.gz"):
        sys.exit(f"no Fashion-MNIST IDX files in {FASHION_MNIST}: set FASHION_MNIST to the folder holding them")
    with gzip.open(f"{FASHION_MNIST}/{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(f"{FASHION_MNIST}/{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return TensorDataset(
        (torch.from_numpy(images.copy()).float() / 255 - 0.29) / 0.35, torch.from_numpy(labels.astype(np.int64))
    )


def train_epochs(model, loader, epochs, lr=0.05):  # your own training loop
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--reload", nargs=2, metavar=("PRUNED", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reload:  # a fresh process: rebuild the pruned model from your class and the saved file
        slim = prune_snr.load(args.reload[0], model=MyNet())
        torch.save(slim(torch.load(args.reload[1])), args.reload[1] + ".out")
        return
    t0, n_train, epochs = time.time(), (2000 if args.fast else 12000), (1 if args.fast else 3)
    torch.manual_seed(0)
    train, test = fashion_mnist("train", n_train), fashion_mnist("test", n_train // 4)
    train_loader = DataLoader(train, batch_size=128, shuffle=True)
    model = train_epochs(MyNet(), train_loader, epochs)

    result = prune_snr.measure(model, train=train_loader, test=test, head_epochs=3 if args.fast else 10)
    slim, report = prune_snr.prune(
        model,
        train=train_loader,
        test=test,
        target=0.5,
        metric="macs",
        measurement=result,
        finetune=lambda m: train_epochs(m, train_loader, 1, lr=0.01),
    )
    print(
        f"accuracy {report['before']['accuracy']:.4f} -> {report['after']['accuracy']:.4f}, "
        f"MACs {report['after']['macs'] / report['before']['macs']:.3f} of the original, "
        f"params {report['after']['params'] / report['before']['params']:.3f}"
    )

    folder = tempfile.mkdtemp()
    prune_snr.save(slim, f"{folder}/slim.pt")
    x = test.tensors[0][:8]
    torch.save(x, f"{folder}/x.pt")
    subprocess.run([sys.executable, __file__, "--reload", f"{folder}/slim.pt", f"{folder}/x.pt"], check=True)
    with torch.no_grad():
        same = torch.equal(torch.load(f"{folder}/x.pt.out"), slim.eval()(x))
    exported = prune_snr.export(slim, f"{folder}/slim.onnx", example_input=x[:1])
    print(
        f"reloaded in a fresh process: logits equal {same}; ONNX max abs diff {exported['batch_8_max_abs_diff']:.1e}; "
        f"{time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
