"""The recurrent cells and the sequence classifier. Pure torch.

Every cell names its parameters as the book's SRN does, so that what is measured, clipped and drawn
is the same for each: **W** (input weights, every gate side by side), **U** (recurrent weights, every
gate side by side) and **b** (biases). A cell returns its last hidden state; with `keep_states` set
it also keeps the hidden states of every position in `states` (and the LSTM its cell states in
`cell_states`), with their gradients retained, so that dL/dh_t can be read after `backward()`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


# A stop point every 16 positions: a signal stops a step of any length within 16 positions' time
# (milliseconds), and a tensor hook at every position would cost more than it gives
# (benchmarks/README.md, "What the stop points cost").
STOP_EVERY = 16


class RecurrentCell(nn.Module):
    """W [input, gates * hidden], U [hidden, gates * hidden], b [1, gates * hidden], each gate's
    block Xavier-uniform on its own (as the book's code initialises each gate's own matrices; Paddle's
    default initialiser, b included)."""

    gates = 1
    has_cell_state = False  # the LSTM's c_t, kept in `cell_states` beside h_t

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        width = self.gates * hidden_size
        self.W = nn.Parameter(torch.empty(input_size, width))
        self.U = nn.Parameter(torch.empty(hidden_size, width))
        self.b = nn.Parameter(torch.empty(1, width))
        for p in (self.W, self.U, self.b):
            for block in p.data.split(hidden_size, dim=1):
                nn.init.xavier_uniform_(block)
        self.keep_states = False
        # called at every STOP_EVERY-th position of the forward pass and, through a hook, of the
        # backward pass: where a long step can be stopped (a run's signal handling: interrupts.stop_point)
        self.stop_point: Callable[[], None] | None = None
        self.states: list[torch.Tensor] = []
        self.cell_states: list[torch.Tensor] = []

    def _keep(self, kept: list, state: torch.Tensor) -> None:
        if self.keep_states and state.requires_grad:  # training: the gradient reaches it
            state.retain_grad()
            kept.append(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, input_size] -> last hidden state [batch, hidden_size]."""
        self.states, self.cell_states = [], []
        # The input projection of every step in one matmul; only h U has to wait for the previous step.
        # Split into positions once: indexing `xw[:, t]` in the loop would make autograd's backward
        # of each index build a zero gradient of the whole projection, O(length) per position.
        xw = (torch.matmul(x, self.W) + self.b).unbind(1)
        h = x.new_zeros(x.shape[0], self.hidden_size)  # on the input's device and dtype
        c = torch.zeros_like(h)
        for t, xw_t in enumerate(xw, start=1):
            h, c = self.step(xw_t, h, c)
            self._keep(self.states, h)
            if self.stop_point is not None and t % STOP_EVERY == 0:
                self.stop_point()
                if h.requires_grad:
                    h.register_hook(self._stop_in_backward)
        return h

    def _stop_in_backward(self, grad: torch.Tensor) -> None:
        self.stop_point()  # the gradient itself is left as it is

    def step(self, xw_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        raise NotImplementedError


class SRN(RecurrentCell):
    """The book's simple recurrent network: h_t = tanh(x_t W + h_{t-1} U + b), h_0 = 0."""

    def step(self, xw_t, h, c):
        return torch.tanh(xw_t + h @ self.U), c


class LSTM(RecurrentCell):
    """The book's LSTM (ch. 6.3): gates i, f, o = sigmoid(x_t W_* + h_{t-1} U_* + b_*), candidate
    c~ = tanh(x_t W_c + h_{t-1} U_c + b_c), c_t = f * c_{t-1} + i * c~, h_t = o * tanh(c_t);
    h_0 = c_0 = 0. W, U, b hold the blocks of i, f, o, c~ in that order."""

    gates = 4
    has_cell_state = True

    def step(self, xw_t, h, c):
        i, f, o, candidate = (xw_t + h @ self.U).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(candidate)
        self._keep(self.cell_states, c)
        return torch.sigmoid(o) * torch.tanh(c), c


class GRU(RecurrentCell):
    """Gated recurrent unit: update and reset gates z, r = sigmoid(x_t W_* + h_{t-1} U_* + b_*),
    candidate n = tanh(x_t W_n + (r * h_{t-1}) U_n + b_n), h_t = z * h_{t-1} + (1 - z) * n; h_0 = 0.
    W, U, b hold the blocks of z, r, n in that order."""

    gates = 3

    def step(self, xw_t, h, c):
        hidden = self.hidden_size
        x_z, x_r, x_n = xw_t.split(hidden, dim=1)
        u_zr, u_n = self.U[:, : 2 * hidden], self.U[:, 2 * hidden:]
        z, r = torch.sigmoid(torch.cat([x_z, x_r], dim=1) + h @ u_zr).split(hidden, dim=1)
        n = torch.tanh(x_n + (r * h) @ u_n)
        return z * h + (1 - z) * n, c


CELLS = {"srn": SRN, "lstm": LSTM, "gru": GRU}


class SeqClassifier(nn.Module):
    """The book's Model_RNN4SeqClass: digit embedding -> recurrent cell -> Linear(hidden, num_classes)."""

    def __init__(self, num_digits: int = 10, input_size: int = 32, hidden_size: int = 32,
                 num_classes: int = 19, cell: str = "srn") -> None:
        super().__init__()
        # The book builds the recurrent model first and hands it in: same order here, so the same seed
        # draws the same initial weights in the same order.
        self.rnn_model = CELLS[cell](input_size, hidden_size)
        self.embedding = nn.Embedding(num_digits, input_size)
        self.linear = nn.Linear(hidden_size, num_classes)
        nn.init.xavier_uniform_(self.embedding.weight)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        """digits: [batch, time] int64 -> logits [batch, num_classes]."""
        return self.linear(self.rnn_model(self.embedding(digits)))
