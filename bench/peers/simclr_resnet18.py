r"""PyTorch peer of `bench/train_step.py --config=configs/simclr_resnet18_cifar10.py
--config.train.batch_size=128 --config.method.projector_hidden_dim=512`: one SimCLR
step (two 32 px views, ResNet-18 with the CIFAR stem, projector 512-512-128 with
BatchNorm, NT-Xent at temperature 0.5, SGD with momentum) in float32.

    pip install torch   # not a dependency of sslx
    python bench/peers/simclr_resnet18.py --batch_size 128 [--threads 2]

The model is torchvision's ResNet-18 with the 3x3 stride-1 stem and no max-pool,
as lightly's and solo-learn's CIFAR recipes build it (`models.CifarResNet18`). The
optimizer is SGD with momentum where sslx's recipe uses LARS: LARS adds one norm
per layer, a negligible share of the step.
"""

from __future__ import annotations

import torch
from common import parser, time_steps
from models import CifarResNet18
from torch import nn
from torch.nn import functional as F  # noqa: N812 (PyTorch's own spelling)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss over 2N projections: each view's positive is the other view."""
    z = F.normalize(z, dim=1)
    n = z.shape[0] // 2
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, targets)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.manual_seed(0)
    backbone = CifarResNet18()
    projector = nn.Sequential(nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
                              nn.Linear(512, 128))
    model = nn.Sequential(backbone, projector)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)
    views = torch.randn(2 * args.batch_size, 3, 32, 32)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nt_xent(model(views), temperature=0.5)
        loss.backward()
        optimizer.step()

    time_steps(step, args, "simclr_resnet18_cifar (PyTorch)")


if __name__ == "__main__":
    main()
