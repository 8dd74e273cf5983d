"""LoRA dropout fused into lora_A, so that it keeps no copy of the input and no mask.

peft computes `lora_B(lora_A(dropout(x)))`. On CPU, `nn.Dropout` keeps its fp32 noise tensor for
backward and lora_A keeps the dropped input: two full-width fp32 copies of `x` for every adapted
module (q, k, v, o, gate, up, down: seven a layer), while `x` itself is shared by q/k/v (and
gate/up) and kept anyway. `DropoutLinear` saves `x`, the weight and the random generator's state
before its draw, and draws the same mask again in backward (as FlashAttention does for its
dropout), so it keeps nothing a token: a bool mask a module came to about 10 % of a LoRA run's
activations, which made its peak as high as a full fine-tune's. The mask is drawn as torch's CPU
dropout draws it (same RNG calls), so a run is the same as with `nn.Dropout`, within float
rounding of the weight gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _rng_state(x: torch.Tensor) -> torch.Tensor:
    return torch.cuda.get_rng_state(x.device) if x.is_cuda else torch.get_rng_state()


def _set_rng_state(x: torch.Tensor, state: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.set_rng_state(state, x.device)
    else:
        torch.set_rng_state(state)


def _draw(x: torch.Tensor, p: float) -> torch.Tensor:
    """The scaled keep-mask torch's dropout draws for `x` (0 or 1 / (1 - p))."""
    return torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)


class _DropoutLinear(torch.autograd.Function):
    """`linear(dropout(x), weight)` keeping (x, weight, the RNG state of the draw) for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        ctx.rng = _rng_state(x)
        y = F.linear(x * _draw(x, p), weight)
        ctx.save_for_backward(x, weight)
        ctx.p = p
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        now = _rng_state(x)
        _set_rng_state(x, ctx.rng)
        scale = _draw(x, ctx.p)  # the forward's mask again, from the same generator state
        _set_rng_state(x, now)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ weight.to(grad.dtype)).to(x.dtype) * scale
        if ctx.needs_input_grad[1]:
            dropped = (x * scale).to(grad.dtype)
            grad_w = (grad.reshape(-1, grad.shape[-1]).t() @ dropped.reshape(-1, x.shape[-1])).to(
                weight.dtype
            )
        return grad_x, grad_w, None


class DropoutLinear(nn.Linear):
    """A bias-free lora_A with its dropout inside (the same parameter, so the same state-dict key)."""

    def __init__(self, linear: nn.Linear, p: float):
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
        self.weight = linear.weight
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout then the projection; fused when autograd records it."""
        if not self.training or self.p == 0:
            return F.linear(x, self.weight)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _DropoutLinear.apply(x, self.weight, self.p)
        return F.linear(F.dropout(x, self.p, True), self.weight)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dropout={self.p}"


def fuse_lora_dropout(model: nn.Module) -> int:
    """Move each plain LoRA Linear's dropout into its lora_A (DoRA and quantised layers untouched).

    Returns how many adapters were changed.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    changed = 0
    for module in model.modules():
        if type(module) is not LoraLinear:
            continue
        variants = getattr(module, "lora_variant", {})
        for name, drop in list(module.lora_dropout.items()):
            lora_a = module.lora_A[name]
            if (
                type(drop) is not nn.Dropout
                or drop.p == 0
                or name in variants
                or type(lora_a) is not nn.Linear
                or lora_a.bias is not None
            ):
                continue
            module.lora_A[name] = DropoutLinear(lora_a, drop.p)
            module.lora_dropout[name] = nn.Identity()
            changed += 1
    return changed
