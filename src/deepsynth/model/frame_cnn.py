"""The frame CNN: one keyboard image -> one feature vector (paper section 3.3, VGG-like).

It runs once per *unique* frame. The audio-rate feature sequence is then built by indexing
(`hold`), never by running the CNN per audio sample.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from deepsynth.config import FrameCNNConfig


class FrameCNN(nn.Module):
    """uint8 gray frames (N, H, W) -> features (N, cfg.features), for frames of `height` x
    `width` pixels (the keyboard layout's frame size).

    Optional average pooling of the raw frame, then (conv3x3-ReLU-conv3x3-ReLU-maxpool2x2)
    blocks, then a max over the remaining height (the keys run along the width, so the width
    keeps its resolution: about one column or more per white key), then one fully connected layer.
    """

    def __init__(self, cfg: FrameCNNConfig, height: int, width: int) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        if tuple(cfg.input_pool) != (1, 1):
            layers.append(nn.AvgPool2d(cfg.input_pool))
            height, width = height // cfg.input_pool[0], width // cfg.input_pool[1]
        c_in = 1
        for c in cfg.channels:
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]  # fmt: skip
            height, width, c_in = height // 2, width // 2, c
        if height < 1 or width < 1:
            raise ValueError("too many pooling blocks for the frame size")
        self.blocks = nn.Sequential(*layers)
        self.out_width = width  # columns left after pooling
        self.fc = nn.Linear(c_in * width, cfg.features)

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.unsqueeze(1).to(self.fc.weight.dtype) / 255.0  # (N, 1, H, W) in [0, 1]
        x = self.blocks(x).amax(dim=2)  # (N, C, W'): collapse the height
        return F.relu(self.fc(x.flatten(1)))


def hold(features: Tensor, frame_index: Tensor) -> Tensor:
    """Per-frame features (N, F) -> audio-rate sequence (B, F, T): sample t of row b gets the
    features of frame `frame_index[b, t]` (the frame shown at that sample)."""
    return features[frame_index].transpose(1, 2)
