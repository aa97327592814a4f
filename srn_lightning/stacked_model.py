"""The sequence classifiers of several seeds as one model: every parameter with a leading seed
dimension, the same operations as `model.SeqClassifier` batched over the seeds. Pure torch.

Each seed's numbers are its single model's, bit for bit, on the CPU (measured at the project's sizes
on one and two threads; `differs_from_single` checks a group's sizes before it trains): the embedding
is each seed's own lookup, the input projection one `bmm` per seed over the [batch * length, input] rows
(the shape the single model's `matmul` flattens to, so its weight gradient sums in the same order),
the recurrence `bmm(h, U)`, the classifier `baddbmm`. The seeds share no parameter, so the gradient
of the sum of their losses is, for each seed, the gradient of its own loss.

`seed_views` gives each seed's single model whose parameters are views of the stacked ones: what
reads, clips or saves a seed's parameters and gradients (its monitors, its clipping, its checkpoint)
works on that model as it does on the seed's own run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from srn_lightning.model import STOP_EVERY, SeqClassifier

CELLS = ("srn", "lstm", "gru")  # the cells stacked; another cell's seeds run one by one


class StackedSeqClassifier(nn.Module):
    """The models of `seeds` (`SeqClassifier`s of one config, each built under its own seed) stacked
    on a leading seed dimension; their parameters are copied, in their order (`names`)."""

    def __init__(self, models: list[SeqClassifier], cell: str) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell {cell!r}: only {', '.join(CELLS)} are stacked")
        self.cell, self.seeds = cell, len(models)
        self.names = [n for n, _ in models[0].named_parameters()]
        self.params = nn.ParameterList(
            torch.stack([dict(m.named_parameters())[n].detach() for m in models]).clone()
            for n in self.names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._views: list[tuple[torch.Tensor, nn.Parameter, int]] = []  # (a seed's parameter, stacked, seed)
        self.hidden_size = models[0].rnn_model.hidden_size
        self.keep_states = False  # as the cell's: h_t (and c_t) kept, gradients retained
        self.states: list[torch.Tensor] = []
        self.cell_states: list[torch.Tensor] = []
        self.stop_point: Callable[[], None] | None = None

    def param(self, name: str) -> nn.Parameter:
        return self.params[self._index[name]]

    def _keep(self, kept: list, state: torch.Tensor) -> None:
        if self.keep_states and state.requires_grad:
            state.retain_grad()
            kept.append(state)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        """digits: [seeds, batch, time] (each seed's own batch) or [batch, time] (one batch for
        every seed) int64 -> logits [seeds, batch, num_classes]."""
        S = self.seeds
        if digits.dim() == 2:
            digits = digits.expand(S, *digits.shape)
        B, L = digits.shape[1:]
        emb, W, U, b = (self.param(n) for n in ("embedding.weight", "rnn_model.W", "rnn_model.U", "rnn_model.b"))
        # each seed's embedding by its own lookup: the kernel of its single model, whose backward sums
        # a row's gradients in an order that depends on the threads (a batched gather's does otherwise)
        x = torch.stack([F.embedding(digits[s], emb[s]) for s in range(S)])  # [S, B, L, input]
        xw = (torch.bmm(x.reshape(S, B * L, -1), W).reshape(S, B, L, -1) + b[:, None]).unbind(2)
        self.states, self.cell_states = [], []
        h = x.new_zeros(S, B, self.hidden_size)
        c = torch.zeros_like(h)
        for t, xw_t in enumerate(xw, start=1):
            if self.cell == "srn":
                h = torch.tanh(xw_t + torch.bmm(h, U))
            elif self.cell == "gru":
                hidden = self.hidden_size
                x_z, x_r, x_n = xw_t.split(hidden, dim=2)
                z, r = torch.sigmoid(torch.cat([x_z, x_r], dim=2) + torch.bmm(h, U[:, :, : 2 * hidden])
                                     ).split(hidden, dim=2)
                n = torch.tanh(x_n + torch.bmm(r * h, U[:, :, 2 * hidden:]))
                h = z * h + (1 - z) * n
            else:
                i, f, o, candidate = (xw_t + torch.bmm(h, U)).chunk(4, dim=2)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(candidate)
                self._keep(self.cell_states, c)
                h = torch.sigmoid(o) * torch.tanh(c)
            self._keep(self.states, h)
            if self.stop_point is not None and t % STOP_EVERY == 0:  # as the single model's
                self.stop_point()
                if h.requires_grad:
                    h.register_hook(self._stop_in_backward)
        weight, bias = self.param("linear.weight"), self.param("linear.bias")
        return torch.baddbmm(bias[:, None], h, weight.transpose(1, 2))

    def _stop_in_backward(self, grad: torch.Tensor) -> None:
        self.stop_point()

    def seed_views(self, models: list[SeqClassifier]) -> None:
        """Points each seed's model's parameters at its slice of the stacked ones (and its
        gradients, with `share_grads`, after each backward pass)."""
        self._views = []
        for s, m in enumerate(models):
            for n, p in m.named_parameters():
                p.data = self.param(n).data[s]
                self._views.append((p, self.param(n), s))

    def share_grads(self) -> None:
        """Each seed's model's `.grad` (of the models given to `seed_views`): its slice of the
        stacked gradients (None where there is none), so that clipping a seed's gradients clips
        the stacked ones."""
        for p, stacked, s in self._views:
            g = stacked.grad
            p.grad = None if g is None else g[s]


class SeedState:
    """A seed's slice of a stacked state: its `.grad` is the stacked gradient's slice."""

    def __init__(self, state: torch.Tensor, seed: int) -> None:
        self.state, self.seed = state, seed

    @property
    def grad(self) -> torch.Tensor | None:
        return None if self.state.grad is None else self.state.grad[self.seed]


class SeedCell:
    """One seed's view of the stacked recurrence, as `callbacks.GradFlowMonitor` reads a cell: its
    `U` (the seed's own, a view), `keep_states` (shared by every seed), and its `states` and
    `cell_states` (slices of the stacked ones)."""

    def __init__(self, stacked: StackedSeqClassifier, model: SeqClassifier, seed: int) -> None:
        self._stacked, self._seed = stacked, seed
        self.U = model.rnn_model.U
        self.has_cell_state = model.rnn_model.has_cell_state

    @property
    def keep_states(self) -> bool:
        return self._stacked.keep_states

    @keep_states.setter
    def keep_states(self, value: bool) -> None:
        self._stacked.keep_states = value

    @property
    def states(self) -> list[SeedState]:
        return [SeedState(s, self._seed) for s in self._stacked.states]

    @states.setter
    def states(self, value: list) -> None:
        self._stacked.states = list(value)

    @property
    def cell_states(self) -> list[SeedState]:
        return [SeedState(s, self._seed) for s in self._stacked.cell_states]

    @cell_states.setter
    def cell_states(self, value: list) -> None:
        self._stacked.cell_states = list(value)


def differs_from_single(models: list[SeqClassifier], cell: str, batch_sizes, length: int,
                        reduction: str) -> str | None:
    """Whether the stacked model gives each seed other numbers than its single model on this machine,
    at these sizes: one step (loss, every parameter's gradient, logits) at each of `batch_sizes`
    (training's and evaluation's full and last batches), on random digits; the reason if it does, else None.
    Whether a batched matmul sums in the order of the single one depends on the sizes and the
    threads (the project's sizes on one thread: the same bits); the models are left as they were."""
    gen = torch.Generator().manual_seed(0)
    copies = [copy.deepcopy(m) for m in models]
    stacked = StackedSeqClassifier(copies, cell)
    for batch in sorted(set(batch_sizes)):
        x = torch.randint(0, 10, (len(models), batch, length), generator=gen)
        y = torch.randint(0, models[0].linear.out_features, (len(models), batch), generator=gen)
        logits = stacked(x)
        losses = [F.cross_entropy(logits[s], y[s], reduction=reduction) for s in range(len(models))]
        grads = torch.autograd.grad(torch.stack(losses).sum(), list(stacked.params))
        for s, m in enumerate(copies):
            own = m(x[s])
            loss = F.cross_entropy(own, y[s], reduction=reduction)
            own_grads = torch.autograd.grad(loss, list(m.parameters()))
            if not torch.equal(own, logits[s]) or not torch.equal(loss, losses[s]):
                return f"a batch of {batch}: the stacked model's loss is not the single model's, bit for bit"
            for name, g, g_own in zip(stacked.names, grads, own_grads):
                if not torch.equal(g[s], g_own):
                    return (f"a batch of {batch}: the stacked gradient of {name} is not the single "
                            f"model's, bit for bit ({torch.get_num_threads()} torch threads)")
    return None
