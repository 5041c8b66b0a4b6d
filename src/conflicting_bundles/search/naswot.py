"""The training-free score of Mellor et al., "Neural Architecture Search without Training"
(ICML 2021): the log-determinant of the Hamming kernel of the ReLU on/off codes of one batch.

For a batch of N inputs, c_i in {0, 1}^U is the binary code of which of the U rectified units
are on for input i. K_ij = U - d_H(c_i, c_j) (units where i and j agree) and the score is
log |det K|. Nets that map different inputs to different codes score high; a net whose codes
coincide for two inputs has a singular K and scores -inf.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..probes import probe, resolve_points

# Probe kinds whose activations are ReLU outputs (resnet's default "branch" is before the ReLU).
RELU_KIND = {"fnn": "hidden", "plain": "block", "resnet": "block-output"}


def hamming_kernel(codes: torch.Tensor) -> torch.Tensor:
    """codes (N, U) in {0, 1} -> K (N, N) float64, K_ij = U - d_H(c_i, c_j)."""
    c = codes.to(torch.float64)
    return c @ c.T + (1 - c) @ (1 - c).T


def kernel_logdet(codes: torch.Tensor) -> float:
    """log |det K| of the Hamming kernel of ``codes`` (N, U); -inf when K is singular."""
    sign, logabs = torch.linalg.slogdet(hamming_kernel(codes))
    return float(logabs) if float(sign) != 0 else -math.inf


@torch.no_grad()
def relu_codes(model: nn.Module, x: torch.Tensor, kind: str | None = None) -> torch.Tensor:
    """Binary codes (N, U) of every ReLU output the model declares (``kind`` probe points),
    concatenated over layers. Run in training mode (BatchNorm normalises with the batch, as at
    the start of training); the model's mode is restored."""
    points = resolve_points(model, None, kind)
    was = model.training
    model.train()
    try:
        with probe(model, points) as p:
            model(x)
            parts = [(p.get(pt.name) > 0).reshape(len(x), -1) for pt in points]
    finally:
        model.train(was)
    return torch.cat(parts, dim=1)


def naswot_score(model: nn.Module, x: torch.Tensor, family: str = "fnn") -> float:
    """The NASWOT score of ``model`` at its current weights on the batch x (N, ...)."""
    return kernel_logdet(relu_codes(model, x, RELU_KIND.get(family)))
