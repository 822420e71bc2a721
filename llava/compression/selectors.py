"""The paper's ablation selectors (Table 4b): pick K representatives by a simple rule, then the same merge
step as SCC, so that the comparison isolates how representatives are chosen."""
from __future__ import annotations

import torch
from torch import Tensor


def random_indices(x: Tensor, k: int, seed: int) -> Tensor:
    """k distinct token indices drawn with a seeded CPU generator (same picks on every device), sorted."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(x.shape[0], generator=generator)[:k].sort().values.to(x.device)


def uniform_indices(x: Tensor, k: int, seed: int) -> Tensor:
    """k evenly spaced token indices over the flattened [F*T] sequence (first and last included)."""
    n = x.shape[0]
    return torch.floor(torch.linspace(0, n - 1, k, dtype=torch.float64, device=x.device) + 0.5).long()


def l2norm_indices(x: Tensor, k: int, seed: int) -> Tensor:
    """The k tokens of largest L2 norm (ties to the lower index), in sequence order."""
    norms = x.norm(dim=-1)
    order = torch.sort(norms, descending=True, stable=True).indices
    return order[:k].sort().values
