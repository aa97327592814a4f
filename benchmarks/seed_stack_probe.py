"""Probe for training the seeds of one setting as one stacked model (not wired into the project).

    python -m benchmarks.seed_stack_probe

Five `SeqClassifier`s (seeds 0..4) against the same parameters stacked on a leading seed dimension,
one step each: embedding by a batched gather, the input projection as one `bmm` per seed over the
[batch * length, input] rows (the shape the single model's `matmul` flattens to, so its weight
gradient sums in the same order), the recurrence as `bmm(h, U)`, the classifier as `baddbmm`, the
loss per seed. Prints whether each seed's loss and every parameter's gradient are bit-identical to
its single run (CPU, one thread), and the CPU time of a step of five seeds stacked against five
single steps at the memory experiment's sizes (batch 8, length 35).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from srn_lightning.model import SeqClassifier


def stacked_loss(P: dict, X, Y, cell: str, reduction: str) -> torch.Tensor:
    S, B, L = X.shape
    E = P["embedding.weight"][torch.arange(S)[:, None, None], X]  # [S, B, L, input]
    xw = torch.bmm(E.reshape(S, B * L, -1), P["rnn_model.W"]).reshape(S, B, L, -1) + P["rnn_model.b"][:, None]
    h = X.new_zeros(S, B, P["rnn_model.U"].shape[1], dtype=E.dtype)
    c = torch.zeros_like(h)
    for xw_t in xw.unbind(2):
        if cell == "srn":
            h = torch.tanh(xw_t + torch.bmm(h, P["rnn_model.U"]))
        else:
            i, f, o, cand = (xw_t + torch.bmm(h, P["rnn_model.U"])).chunk(4, dim=2)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
            h = torch.sigmoid(o) * torch.tanh(c)
    logits = torch.baddbmm(P["linear.bias"][:, None], h, P["linear.weight"].transpose(1, 2))
    return torch.stack([F.cross_entropy(logits[s], Y[s], reduction=reduction) for s in range(S)])


def probe(cell: str, seeds: int, batch: int, length: int, reduction: str):
    torch.set_num_threads(1)
    models = []
    for s in range(seeds):
        torch.manual_seed(s)
        models.append(SeqClassifier(10, 32, 32, 19, cell))
    gen = torch.Generator().manual_seed(0)
    X = torch.randint(0, 10, (seeds, batch, length), generator=gen)
    Y = torch.randint(0, 19, (seeds, batch), generator=gen)
    names = [n for n, _ in models[0].named_parameters()]
    P = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_() for n in names}
    single = []
    for s, m in enumerate(models):
        m.zero_grad()
        loss = F.cross_entropy(m(X[s]), Y[s], reduction=reduction)
        loss.backward()
        single.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    losses = stacked_loss(P, X, Y, cell, reduction)
    losses.sum().backward()  # seeds share no parameter: each seed's gradient is its own loss's
    same_loss = all(torch.equal(losses[s].detach(), single[s][0]) for s in range(seeds))
    same_grads = all(torch.equal(P[n].grad[s], single[s][1][n]) for s in range(seeds) for n in names)

    def stacked_step():
        stacked_loss(P, X, Y, cell, reduction).sum().backward()

    def single_steps():
        for s, m in enumerate(models):
            F.cross_entropy(m(X[s]), Y[s], reduction=reduction).backward()

    times = {"stacked": [], "singles": []}
    for i in range(30):
        for name, step in (("stacked", stacked_step), ("singles", single_steps)):
            start = time.process_time()
            step()
            if i >= 5:
                times[name].append(time.process_time() - start)
    return same_loss, same_grads, {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    for cell in ("srn", "lstm"):
        for batch, length, reduction in ((64, 20, "sum"), (8, 35, "mean")):
            same_loss, same_grads, ms = probe(cell, 5, batch, length, reduction)
            print(f"{cell} batch {batch} length {length} {reduction}: losses bit-identical {same_loss}, "
                  f"gradients bit-identical {same_grads}; a step of 5 seeds {ms['stacked']:.2f} ms stacked, "
                  f"{ms['singles']:.2f} ms as 5 single steps (CPU)")


if __name__ == "__main__":
    main()
