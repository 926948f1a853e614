"""Deep visual prompts in an open_clip ViT image encoder (VPT-deep, as RVPT uses them).

From block ``first`` on, each transformer block of the image encoder sees ``tokens`` learned
prompt tokens between the class token and the patch tokens; the prompts a block outputs are
dropped and the next block gets its own (Jia et al., 2022, "Visual Prompt Tuning", deep
variant; Zhang et al., 2025, RVPT, Section 3.3). The prompts have no positional embedding.

The prompts live in the encoder's transformer as the parameter ``deep_prompts``
([blocks - first, tokens, width]), so they are saved with the model; a checkpoint's metadata
records ``deep_prompts`` ({"tokens", "first"}) and :func:`tacleaner.models.load_model` installs
them again before it loads the weights. With ``prompting(model, False)`` the same encoder runs
as it was before the prompts (the frozen original RVPT repels from), and :func:`class_tokens`
records the class token after every prompted block.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from open_clip.transformer import Transformer, VisionTransformer

from ..errors import TacleanerError

META_KEY = "deep_prompts"  # checkpoint metadata: {"tokens": b, "first": D}


class PromptedTransformer(Transformer):
    """open_clip's Transformer with deep prompts; set on an existing instance by
    :func:`install_prompts` (its weights and their names stay as they are)."""

    deep_prompts: torch.nn.Parameter
    first_prompted: int
    use_prompts: bool
    _trace: list[torch.Tensor] | None

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.batch_first:
            x = x.transpose(0, 1).contiguous()
        n = self.deep_prompts.shape[1] if self.use_prompts else 0
        for i, block in enumerate(self.resblocks):
            if i >= self.first_prompted and n:
                prompts = self.deep_prompts[i - self.first_prompted].to(x.dtype).expand(len(x), -1, -1)
                rest = x[:, 1 + n:] if i > self.first_prompted else x[:, 1:]  # the last block's prompts dropped
                x = torch.cat([x[:, :1], prompts, rest], dim=1)
            x = block(x, attn_mask=attn_mask)
            if i >= self.first_prompted and self._trace is not None:
                self._trace.append(x[:, 0])
        if n and len(self.resblocks) > self.first_prompted:
            x = torch.cat([x[:, :1], x[:, 1 + n:]], dim=1)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return x


def vision_transformer(model: torch.nn.Module) -> VisionTransformer:
    """The model's image encoder, when it is a ViT; else a one-line error naming what it is."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise TacleanerError(f"deep visual prompts need a ViT image encoder; this model's is a "
                             f"{type(visual).__name__} (use a ViT model, e.g. tacleaner-tiny-vit-p4 or ViT-B-32)")
    return visual


def install_prompts(model: torch.nn.Module, tokens: int, first: int, init_std: float = 0.02,
                    generator: torch.Generator | None = None) -> torch.nn.Parameter:
    """Give the model's ViT ``tokens`` deep prompts in every block from ``first`` on, drawn from
    N(0, init_std^2); returns the new parameter (``visual.transformer.deep_prompts``)."""
    transformer = vision_transformer(model).transformer
    blocks = len(transformer.resblocks)
    if tokens < 1 or not 0 <= first < blocks:
        raise TacleanerError(f"deep prompts: tokens={tokens} must be >= 1 and first={first} a block of the "
                             f"encoder's {blocks} (0 to {blocks - 1})")
    if isinstance(transformer, PromptedTransformer):
        raise TacleanerError("deep prompts: this model's image encoder has prompts already")
    ref = next(transformer.parameters())
    init = torch.randn(blocks - first, tokens, transformer.width, generator=generator) * init_std
    transformer.__class__ = PromptedTransformer
    transformer.deep_prompts = torch.nn.Parameter(init.to(ref.device, ref.dtype))
    transformer.first_prompted, transformer.use_prompts, transformer._trace = first, True, None
    return transformer.deep_prompts


def prompt_spec(model: torch.nn.Module) -> dict[str, int] | None:
    """``{"tokens", "first"}`` of the model's deep prompts (what checkpoints record), or None."""
    transformer = getattr(getattr(model, "visual", None), "transformer", None)
    if not isinstance(transformer, PromptedTransformer):
        return None
    return {"tokens": int(transformer.deep_prompts.shape[1]), "first": int(transformer.first_prompted)}


@contextmanager
def prompting(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """Run the model's image encoder with its prompts (``on``) or as it was without them."""
    transformer = vision_transformer(model).transformer
    before = transformer.use_prompts
    transformer.use_prompts = on
    try:
        yield
    finally:
        transformer.use_prompts = before


@contextmanager
def class_tokens(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect, for every image encoding inside the block, the class token ([batch, width]) after
    each prompted block, in order (before ``ln_post``: the residual stream)."""
    transformer = vision_transformer(model).transformer
    trace: list[torch.Tensor] = []
    transformer._trace = trace
    try:
        yield trace
    finally:
        transformer._trace = None
