"""Torch device selection."""

from __future__ import annotations

import torch


def pick_device(setting: str = "auto") -> torch.device:
    """`auto` = CUDA when available, else CPU; or an explicit torch device string."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)
