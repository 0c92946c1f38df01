"""TKS loss on a spiking CNN built only from SpikingJelly 2.x layers, trained on scikit-learn's 8x8 digits.

    python examples/sj_model_with_tks_loss.py [--epochs 5]

The loss needs nothing from tks's models: any network whose output is per-step logits [T, B, K] will do, and
SpikingJelly's multi-step layers (step_mode="m") take and return time-major tensors [T, B, ...].
"""

import argparse
import sys

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from tks.losses import TKSLoss, TKSOptions, linear_ramp

try:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
except ImportError:  # an optional dependency of tks
    sys.exit("this example needs SpikingJelly: pip install -e '.[spikingjelly]'")

T = 4  # time steps


def lif() -> neuron.LIFNode:
    """The official TKS neuron: tau 2, threshold 0.5, hard reset to 0, piecewise-quadratic surrogate."""
    spike = surrogate.PiecewiseQuadratic(alpha=2.0)
    return neuron.LIFNode(tau=2.0, v_threshold=0.5, surrogate_function=spike, detach_reset=True, step_mode="m")


def spiking_cnn(num_classes: int = 10) -> nn.Sequential:
    """[T, B, 1, 8, 8] -> [T, B, num_classes]; SeqToANNContainer folds T into the batch for stateless layers."""
    return nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)),
        lif(),
        layer.SeqToANNContainer(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.AvgPool2d(2)),
        lif(),
        layer.SeqToANNContainer(nn.Flatten(), nn.Linear(32 * 4 * 4, num_classes)),
    )


def main() -> None:
    """Train for --epochs epochs and print the test accuracy after each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # [N, 1, 8, 8] in [0, 1]
    y = torch.tensor(digits.target)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)

    net = spiking_cnn()
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-3)
    loss_fn = TKSLoss(TKSOptions(temperature=3.0))
    for epoch in range(args.epochs):
        weight = linear_ramp(epoch, args.epochs, alpha=0.7)  # 0 at the first epoch, then up towards 0.7
        net.train()
        for batch in torch.randperm(len(x_train)).split(64):
            logits = net(x_train[batch].expand(T, -1, -1, -1, -1))  # direct encoding: the image at every step
            loss = loss_fn(logits, y_train[batch], weight=weight)  # logits [T, B, 10]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            functional.reset_net(net)  # SpikingJelly neurons keep their membrane until reset
        net.eval()
        with torch.no_grad():
            logits = net(x_test.expand(T, -1, -1, -1, -1))
            functional.reset_net(net)
        accuracy = (logits.mean(0).argmax(-1) == y_test).float().mean().item()
        print(f"epoch {epoch + 1}  TKS weight {weight:.2f}  last-batch loss {loss.item():.3f}", end="  ")
        print(f"test top-1 {100 * accuracy:.1f}%")


if __name__ == "__main__":
    main()
