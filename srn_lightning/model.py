"""The book's simple recurrent network (SRN) and its sequence classifier. Pure torch."""

from __future__ import annotations

import torch
from torch import nn


class SRN(nn.Module):
    """h_t = tanh(x_t W + h_{t-1} U + b), h_0 = 0; returns the last hidden state.

    Parameters are named and shaped as in the book (W [input, hidden], U [hidden, hidden],
    b [1, hidden]) and initialised as Paddle does by default: Xavier-uniform, b included.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.W = nn.Parameter(torch.empty(input_size, hidden_size))
        self.U = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b = nn.Parameter(torch.empty(1, hidden_size))
        for p in (self.W, self.U, self.b):
            nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, time, input_size] -> last hidden state [batch, hidden_size]."""
        # The input projection of every step in one matmul; only h U has to wait for the previous step.
        xw = torch.matmul(x, self.W) + self.b
        h = x.new_zeros(x.shape[0], self.hidden_size)  # on the input's device and dtype
        for t in range(x.shape[1]):
            h = torch.tanh(xw[:, t] + h @ self.U)
        return h


class SeqClassifier(nn.Module):
    """The book's Model_RNN4SeqClass: digit embedding -> SRN -> Linear(hidden, num_classes)."""

    def __init__(
        self, num_digits: int = 10, input_size: int = 32, hidden_size: int = 32, num_classes: int = 19
    ) -> None:
        super().__init__()
        # The book builds the SRN first and hands it in: same order here, so the same seed draws the
        # same initial weights in the same order.
        self.rnn_model = SRN(input_size, hidden_size)
        self.embedding = nn.Embedding(num_digits, input_size)
        self.linear = nn.Linear(hidden_size, num_classes)
        nn.init.xavier_uniform_(self.embedding.weight)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        """digits: [batch, time] int64 -> logits [batch, num_classes]."""
        return self.linear(self.rnn_model(self.embedding(digits)))
