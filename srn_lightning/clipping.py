"""The four clip modes, defined once: three different things that share the name "clipping".

| mode        | what happens to the step's gradients                                   | who does it      |
| ----------- | ---------------------------------------------------------------------- | ---------------- |
| `none`      | nothing: the book's explosion run                                      | -                |
| `norm`      | all scaled by one factor so their GLOBAL L2 norm is at most `val`      | Lightning        |
| `value`     | every element clamped to [-val, val]                                   | Lightning        |
| `norm_each` | EACH parameter's gradient scaled by its own norm: g * val / max(|g|, val) | `clip_gradients_` |

`norm` and `value` go through the Trainer's `gradient_clip_val` / `gradient_clip_algorithm`
(`trainer_kwargs`): Lightning clips in its `configure_gradient_clipping` hook, after
`on_before_optimizer_step`, where the pre-clip norms are recorded. `norm_each` is the book's Paddle
`ClipGradByNorm`, which Lightning does not have: the module calls `clip_gradients_` for it from the
same hook. `clip_gradients_` also does `norm` and `value` with the torch calls Lightning makes, for
code that runs without a Trainer (the benchmark's plain loop).
"""

from __future__ import annotations

import torch

LIGHTNING_ALGORITHMS = {"norm": "norm", "value": "value"}  # clip mode -> gradient_clip_algorithm


def trainer_kwargs(mode: str, val: float | None) -> dict:
    """The Trainer's clip settings for `mode`: Lightning clips `norm` and `value` itself."""
    if mode in LIGHTNING_ALGORITHMS:
        return {"gradient_clip_val": val, "gradient_clip_algorithm": LIGHTNING_ALGORITHMS[mode]}
    return {}


@torch.no_grad()
def clip_gradients_(parameters, mode: str, val: float | None) -> None:
    """Clip the gradients of `parameters` in place as `mode` says (see the module docstring)."""
    if mode == "none":
        return  # `parameters` is not even walked
    parameters = [p for p in parameters if p.grad is not None]
    if mode == "norm":
        torch.nn.utils.clip_grad_norm_(parameters, val)
    elif mode == "value":
        torch.nn.utils.clip_grad_value_(parameters, val)
    elif mode == "norm_each":
        for p in parameters:
            p.grad.mul_(val / torch.linalg.vector_norm(p.grad).clamp(min=val))
    else:
        raise ValueError(f"clip mode {mode!r}: not one of none, norm, value, norm_each")
