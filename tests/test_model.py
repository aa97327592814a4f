import math

import pytest
import torch

from srn_lightning.model import SRN, SeqClassifier


def test_parameter_names_and_shapes_are_the_books():
    model = SeqClassifier(num_digits=10, input_size=3, hidden_size=4, num_classes=19)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "rnn_model.W": (3, 4),
        "rnn_model.U": (4, 4),
        "rnn_model.b": (1, 4),
        "embedding.weight": (10, 3),
        "linear.weight": (19, 4),
        "linear.bias": (19,),
    }


def test_recurrence_matches_a_hand_computation():
    srn = SRN(input_size=2, hidden_size=2)
    W = [[0.5, -0.2], [0.1, 0.3]]
    U = [[0.4, 0.2], [-0.3, 0.6]]
    b = [0.05, -0.1]
    with torch.no_grad():
        srn.W.copy_(torch.tensor(W))
        srn.U.copy_(torch.tensor(U))
        srn.b.copy_(torch.tensor([b]))
    xs = [[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]]
    h = [0.0, 0.0]  # h_0 = 0
    for x in xs:  # h_t[j] = tanh(sum_i x_i W_ij + sum_k h_k U_kj + b_j)
        h = [
            math.tanh(sum(x[i] * W[i][j] for i in range(2)) + sum(h[k] * U[k][j] for k in range(2)) + b[j])
            for j in range(2)
        ]
    out = srn(torch.tensor([xs]))
    assert out.shape == (1, 2)
    assert out[0].tolist() == pytest.approx(h, abs=1e-6)


def test_init_is_paddles_default():
    torch.manual_seed(0)
    model = SeqClassifier(input_size=32, hidden_size=32)
    srn = model.rnn_model
    for p, (fan_a, fan_b) in [(srn.W, (32, 32)), (srn.U, (32, 32)), (srn.b, (1, 32)),
                              (model.embedding.weight, (10, 32)), (model.linear.weight, (32, 19))]:
        bound = math.sqrt(6 / (fan_a + fan_b))  # Xavier-uniform
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.8 * bound  # spread over the whole range, not a narrower init
    assert torch.count_nonzero(model.linear.bias) == 0


def test_forward_gives_logits_per_class():
    model = SeqClassifier()
    logits = model(torch.randint(0, 10, (5, 20)))
    assert logits.shape == (5, 19)
