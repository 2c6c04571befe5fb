"""The reference model: a multilayer perceptron from 64 scaled pixels to 10 class logits."""

from __future__ import annotations

import torch
from torch import nn

from mlops.trainer.data import CLASSES, FEATURES


class DigitsMLP(nn.Module):
    """Two hidden ReLU layers of ``hidden_units`` each; ``forward`` returns unnormalised logits."""

    def __init__(self, hidden_units: int = 128) -> None:
        super().__init__()
        self.hidden_units = hidden_units
        self.layers = nn.Sequential(
            nn.Linear(FEATURES, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
