"""Token models (timm Vision Transformers) as classifiers whose layers give feature maps.

A ViT block maps tokens (B, prefix + h*w, C) to tokens. pv's layer-based methods (Grad-CAM, the PV
decoder's latent) need a map (B, C, h, w), so after every block the patch tokens pass through one
`nn.Identity` per block, `grids.<i>`, as a grid (prefix tokens -- class and register tokens -- dropped
from the map and kept for the next block). Hooks on `blocks.<i>` (this module's `blocks`, the grids)
see the grid; the computation is the ViT's own (`vit.forward_features` / `vit.forward_head`).
"""
from __future__ import annotations

import torch
from torch import nn

from pv.models.weights import Normalize
from pv.models.zoo import ModelSpec


def tokens_to_grid(tokens: torch.Tensor, prefix: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, prefix + h*w, C) -> (prefix tokens (B, prefix, C), grid (B, C, h, w))."""
    b, _, c = tokens.shape
    grid = tokens[:, prefix:].transpose(1, 2).reshape(b, c, *size)  # (B, C, h, w)
    return tokens[:, :prefix], grid


def grid_to_tokens(prefix_tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, prefix, C), (B, C, h, w) -> tokens (B, prefix + h*w, C)."""
    return torch.cat([prefix_tokens, grid.flatten(2).transpose(1, 2)], dim=1)


class TokenClassifier(nn.Module):
    """A timm ViT as images in [0, 1] (B, 3, H, W) -> logits (B, K), with layers "blocks.0" ... "blocks.<n-1>"
    giving the patch-token grid (B, C, H/patch, W/patch) after that block."""

    activation = "softmax"

    def __init__(self, vit: nn.Module, spec: ModelSpec, *, weights: str | None, class_names: list[str] | None = None):
        super().__init__()
        self.vit = vit
        self.normalize = Normalize(spec.mean, spec.std)
        self.blocks = nn.ModuleDict({str(i): nn.Identity() for i in range(len(vit.blocks))})  # the grids, hookable
        self.prefix = int(vit.num_prefix_tokens)
        self.num_classes = int(vit.num_classes)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.input_size, self.default_layer = spec.input_size, spec.default_layer
        self.preprocessing = spec.preprocessing()
        self.weights_name, self.checkpoint_path = weights, None
        self.config = {
            "arch": spec.arch, "weights": weights, "num_classes": self.num_classes, "activation": self.activation,
            "input_size": self.input_size, "mean": list(spec.mean), "std": list(spec.std),
        }  # fmt: skip

    def forward_tokens(self, images: torch.Tensor, depth: int | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens after `depth` blocks (all when None), through the grids; and the grid size (h, w)."""
        x = self.normalize(images)
        size = tuple(self.vit.patch_embed.dynamic_feat_size(x.shape[-2:]))
        tokens = self.vit.norm_pre(self.vit.patch_drop(self.vit._pos_embed(self.vit.patch_embed(x))))  # (B, P + h*w, C)
        for index, block in enumerate(self.vit.blocks[:depth]):
            prefix, grid = tokens_to_grid(block(tokens), self.prefix, size)
            tokens = grid_to_tokens(prefix, self.blocks[str(index)](grid))
        return tokens, size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.forward_tokens(images)  # (B, P + h*w, C)
        return self.vit.forward_head(self.vit.norm(tokens))  # (B, K)

    def truncated(self, layer: str) -> "TokenGrid":
        """The encoder up to `layer` ("blocks.<i>"): images -> that block's grid (B, C, h, w)."""
        head, _, index = layer.partition(".")
        if head != "blocks" or index not in self.blocks:
            raise ValueError(f"Layer {layer!r} not found; valid layer names are: {', '.join(f'blocks.{i}' for i in self.blocks)}")
        return TokenGrid(self, int(index) + 1)


class TokenGrid(nn.Module):
    """Normalised images -> the patch-token grid (B, C, h, w) after the first `depth` blocks of a
    `TokenClassifier` (the body of a `FrozenEncoder`; shares the ViT's modules, and its state dict
    holds only those it uses: embeddings and the first `depth` blocks)."""

    def __init__(self, model: TokenClassifier, depth: int):
        super().__init__()
        vit = model.vit
        self.patch_embed, self.patch_drop, self.norm_pre = vit.patch_embed, vit.patch_drop, vit.norm_pre
        self.blocks = nn.Sequential(*vit.blocks[:depth])
        self.embeddings = nn.ParameterDict(dict(vit.named_parameters(recurse=False)))  # class/register tokens, position embedding
        self._vit, self.prefix = [vit], model.prefix  # in a list: the whole ViT is not a child (nor in the state dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(self.patch_embed.dynamic_feat_size(x.shape[-2:]))
        tokens = self.norm_pre(self.patch_drop(self._vit[0]._pos_embed(self.patch_embed(x))))  # (B, P + h*w, C)
        return tokens_to_grid(self.blocks(tokens), self.prefix, size)[1]  # (B, C, h, w)
