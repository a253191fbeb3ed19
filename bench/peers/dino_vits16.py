r"""PyTorch peer of `bench/train_step.py --config=configs/dino_vits16.py
--config.train.batch_size=8 --config.views.local_crops.count=6`: one DINO step
(ViT-S/16 student and EMA teacher, 2x224 global + 6x96 local crops, head
384-2048-2048-256 -> 65536 with a weight-normalised last layer, the DINO loss with
centring, AdamW) in float32, as the official `main_dino.py` computes it.

    pip install torch   # not a dependency of sslx
    python bench/peers/dino_vits16.py --batch_size 8 [--local_crops 6] [--threads 2]

The ViT is timm's `vit_small_patch16_224` (`models.ViT`: the 96 px crops interpolate
the position embedding, as the official ViT does), drop-path 0.1.
"""

from __future__ import annotations

import copy

import torch
from common import parser, time_steps
from models import ViT
from torch import nn
from torch.nn import functional as F  # noqa: N812 (PyTorch's own spelling)


class DINOHead(nn.Module):
    """The official head: a 3-layer GELU MLP to the bottleneck, l2-normalised, then a
    weight-normalised linear layer without bias."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MultiCrop(nn.Module):
    """Backbone and head over crops grouped by resolution: one backbone call per size."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        features = [self.backbone(torch.cat(group)) for group in _by_size(crops)]
        return self.head(torch.cat(features))


def _by_size(crops: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[int, list[torch.Tensor]] = {}
    for crop in crops:
        groups.setdefault(crop.shape[-1], []).append(crop)
    return list(groups.values())


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
              n_crops: int, n_global: int, student_temp: float = 0.1,
              teacher_temp: float = 0.04) -> torch.Tensor:
    """Cross-entropy of every student crop against every other teacher (global) crop."""
    student = (student / student_temp).chunk(n_crops)
    teacher = F.softmax((teacher - center) / teacher_temp, dim=-1).detach().chunk(n_global)
    total, terms = 0.0, 0
    for t_index, t in enumerate(teacher):
        for s_index, s in enumerate(student):
            if s_index != t_index:
                total = total + torch.sum(-t * F.log_softmax(s, dim=-1), dim=-1).mean()
                terms += 1
    return total / terms


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--local_crops", type=int, default=6)
    args = p.parse_args()
    torch.manual_seed(0)
    backbone = ViT()
    student = MultiCrop(backbone, DINOHead(backbone.num_features))
    teacher = copy.deepcopy(student)
    for p_ in teacher.parameters():
        p_.requires_grad = False
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.04)
    center = torch.zeros(1, 65536)
    n = args.batch_size
    global_crops = [torch.randn(n, 3, 224, 224) for _ in range(2)]
    crops = global_crops + [torch.randn(n, 3, 96, 96) for _ in range(args.local_crops)]

    def step() -> None:
        nonlocal center
        with torch.no_grad():
            teacher_out = teacher(global_crops)
        loss = dino_loss(student(crops), teacher_out, center, len(crops), 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        optimizer.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                pt.mul_(0.996).add_(ps.detach(), alpha=0.004)
            center = center * 0.9 + teacher_out.mean(dim=0, keepdim=True) * 0.1

    time_steps(step, args, "dino_vits16_multicrop (PyTorch)")


if __name__ == "__main__":
    main()
