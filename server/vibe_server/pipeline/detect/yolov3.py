"""YOLOv3 (COCO, 80 classes) as a PyTorch module: Darknet-53 backbone and three detection heads.

Built from the 107-layer table of the official ``yolov3.cfg`` (no cfg file at run time), with layer
indices equal to the cfg's, so the official Darknet ``yolov3.weights`` load in order
(``darknet_weights.py``). The network is fully convolutional: any input size that is a multiple
of 32 works; VIBE runs it at 416.

Semantics (Darknet): conv padding k//2; BN then LeakyReLU(0.1), except the three head outputs
(layers 81, 93, 105: conv bias, linear); shortcut adds the output three layers back; route
concatenates channels in the listed order; upsample is nearest x2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..batched.transfers import device_constant

NUM_CLASSES = 80
VALUES_PER_ANCHOR = 5 + NUM_CLASSES  # cx, cy, w, h, objectness, 80 class scores
ANCHORS_WH_PX = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
PERSON_CLASS = 0  # COCO class 0
BN_EPS = 1e-5  # PyTorch's default, as VIBE's detector uses (Darknet itself differs slightly)


@dataclass(frozen=True)
class Layer:
    """One cfg layer. kind: conv | shortcut | route | upsample | yolo."""

    kind: str
    in_channels: int = 0
    out_channels: int = 0
    kernel: int = 0
    stride: int = 1
    batch_norm: bool = True
    sources: tuple[int, ...] = ()  # absolute layer indices (shortcut: the -3 layer; route: inputs)
    anchor_mask: tuple[int, ...] = ()  # yolo: indices into ANCHORS_WH_PX


def yolov3_layers() -> list[Layer]:
    """The 107 layers of yolov3.cfg, index = cfg layer number."""
    layers: list[Layer] = []
    channels = [3]  # output channels of each layer so far (channels[-1] = current)

    def conv(out_channels, kernel, stride=1, batch_norm=True):
        layers.append(Layer("conv", channels[-1], out_channels, kernel, stride, batch_norm))
        channels.append(out_channels)

    def shortcut():
        layers.append(Layer("shortcut", channels[-1], channels[-1], sources=(len(layers) - 3,)))
        channels.append(channels[-1])

    def route(*relative_or_absolute):
        here = len(layers)
        sources = tuple(here + i if i < 0 else i for i in relative_or_absolute)
        out_channels = sum(channels[s + 1] for s in sources)
        layers.append(Layer("route", 0, out_channels, sources=sources))
        channels.append(out_channels)

    def upsample():
        layers.append(Layer("upsample", channels[-1], channels[-1]))
        channels.append(channels[-1])

    def yolo(mask):
        layers.append(Layer("yolo", channels[-1], channels[-1], anchor_mask=mask))
        channels.append(channels[-1])

    # Darknet-53: layers 0-74
    conv(32, 3)
    for width, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        conv(width, 3, stride=2)
        for _ in range(blocks):
            conv(width // 2, 1)
            conv(width, 3)
            shortcut()
    # three heads, coarse to fine: 75-82 (stride 32), 83-94 (16), 95-106 (8)
    for width, mask, skip in ((512, (6, 7, 8), None), (256, (3, 4, 5), 61), (128, (0, 1, 2), 36)):
        if skip is not None:
            route(-4)
            conv(width, 1)
            upsample()
            route(-1, skip)
        for _ in range(3):
            conv(width, 1)
            conv(width * 2, 3)
        conv(3 * VALUES_PER_ANCHOR, 1, batch_norm=False)
        yolo(mask)
    return layers


class ConvBlock(nn.Module):
    """Conv2d (padding k//2) + BatchNorm + LeakyReLU(0.1), or Conv2d with bias alone (linear)."""

    def __init__(self, layer: Layer):
        super().__init__()
        self.conv = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel,
            layer.stride,
            padding=layer.kernel // 2,
            bias=not layer.batch_norm,
        )
        self.bn = nn.BatchNorm2d(layer.out_channels, eps=BN_EPS, momentum=0.01) if layer.batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        x = self.conv(x)
        if self.bn is not None:
            x = F.leaky_relu(self.bn(x), 0.1, inplace=True)  # the BN output is a fresh tensor
        return x


class YOLOv3(nn.Module):
    """images (B, 3, S, S) RGB in [0, 1], S a multiple of 32 -> three raw head tensors
    (B, 255, S/32, S/32), (B, 255, S/16, S/16), (B, 255, S/8, S/8) (layers 81, 93, 105).

    Use :func:`decode_heads` for boxes. ``convs`` holds the 75 conv layers in cfg order, which is
    the order of the Darknet weights file.
    """

    def __init__(self):
        super().__init__()
        self.layers = yolov3_layers()
        conv_indices = [i for i, layer in enumerate(self.layers) if layer.kind == "conv"]
        self.convs = nn.ModuleList(ConvBlock(self.layers[i]) for i in conv_indices)
        self._conv_of_layer = {layer_index: n for n, layer_index in enumerate(conv_indices)}
        # Keep an output only until its last reader has run (the official forward keeps all 107,
        # about 230 MB per 416 frame in fp32).
        last_reader = {}
        for i, layer in enumerate(self.layers):
            for source in layer.sources if layer.kind in ("route", "shortcut") else ():
                last_reader[source] = i
            if layer.kind != "route":
                last_reader[i - 1] = max(last_reader.get(i - 1, -1), i)
        self._free_after = {}
        for source, reader in last_reader.items():
            self._free_after.setdefault(reader, []).append(source)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, S, S) in [0, 1] -> the three heads (B, 255, S/32, S/32), (B, 255, S/16, S/16),
        (B, 255, S/8, S/8)."""
        outputs: dict[int, torch.Tensor] = {-1: images}
        heads = []
        for i, layer in enumerate(self.layers):
            if layer.kind == "conv":
                x = self.convs[self._conv_of_layer[i]](outputs[i - 1])
            elif layer.kind == "shortcut":
                x = outputs[i - 1] + outputs[layer.sources[0]]
            elif layer.kind == "route":
                x = (
                    torch.cat([outputs[s] for s in layer.sources], 1)
                    if len(layer.sources) > 1
                    else outputs[layer.sources[0]]
                )
            elif layer.kind == "upsample":
                x = F.interpolate(outputs[i - 1], scale_factor=2, mode="nearest")
            else:  # yolo: the head is the previous conv's raw output
                x = outputs[i - 1]
                heads.append(x)
            outputs[i] = x
            for source in self._free_after.get(i, ()):
                outputs.pop(source, None)
        return heads


def decode_heads(heads: list[torch.Tensor], input_size_px: int) -> torch.Tensor:
    """Three raw heads (B, 255, G, G) -> (B, sum 3*G*G, 85) float32 rows
    [cx, cy, w, h (input pixels), objectness, 80 class probabilities] (10647 rows at 416).

    Rows are ordered head by head (coarse first), then (anchor, gy, gx). Sigmoid on the centre
    offsets, objectness and each class (no softmax); exp on width and height times the anchor.
    """
    masks = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
    decoded = []
    for head, mask in zip(heads, masks, strict=True):
        batch, _, grid, _ = head.shape
        stride = input_size_px / grid
        p = head.float().view(batch, 3, VALUES_PER_ANCHOR, grid, grid).permute(0, 1, 3, 4, 2)  # (B, 3, G, G, 85)
        gy, gx = torch.meshgrid(
            torch.arange(grid, device=head.device, dtype=torch.float32),
            torch.arange(grid, device=head.device, dtype=torch.float32),
            indexing="ij",
        )
        anchors = device_constant(tuple(ANCHORS_WH_PX[m] for m in mask), head.device)  # made once per device
        cx = (torch.sigmoid(p[..., 0]) + gx) * stride
        cy = (torch.sigmoid(p[..., 1]) + gy) * stride
        w = torch.exp(p[..., 2]) * anchors[:, 0].view(1, 3, 1, 1)
        h = torch.exp(p[..., 3]) * anchors[:, 1].view(1, 3, 1, 1)
        rest = torch.sigmoid(p[..., 4:])
        rows = torch.cat([cx[..., None], cy[..., None], w[..., None], h[..., None], rest], dim=-1)
        decoded.append(rows.reshape(batch, -1, VALUES_PER_ANCHOR))
    return torch.cat(decoded, dim=1)
