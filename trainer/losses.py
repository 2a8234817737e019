"""Losses as pure tensor functions (no model calls), with the formulas they compute.

Reference: Liu et al., "Learning LLM Preference over Intra-Dialogue Pairs", NAACL 2025 Industry,
arXiv 2503.05620, eq. 1-2. Everything is computed with ``logsigmoid``/``softplus``/``*_with_logits``,
never ``log(sigmoid(x) + eps)``, so it is exact and finite for any logit magnitude.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pairwise_preference_loss(f_i: Tensor, f_j: Tensor, s_i: Tensor, s_j: Tensor, alpha: float,
                             target: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
    """Adaptive-margin pairwise preference loss (paper eq. 1-2), mean over pairs.

    For a pair of segments (x_i, x_j) of the same dialogue with teacher scores S_i > S_j for class c,
    and student scores f = f_c(x)::

        z    = (f_i - f_j) - alpha * (S_i - S_j)
        loss = KL(1[y_i > y_j] || sigmoid(z)) = -log sigmoid(z) = softplus(-z)

    The margin alpha * ΔS asks the student to separate a pair by more when the teacher is more sure
    (alpha in [0, 1]; alpha = 0 is plain RankNet). With a soft ``target`` y in [0, 1] (e.g. 0.5 for
    pairs with equal teacher scores) it is the binary cross-entropy
    ``-(y log σ(z) + (1 - y) log σ(-z))``, which differs from the KL only by the constant H(y).

    Shapes: all inputs (P,) (or broadcastable); ``weight`` (P,) optional per-pair weights.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    z = (f_i - f_j) - alpha * (s_i - s_j)
    if target is None:
        losses = F.softplus(-z)
    else:
        losses = F.binary_cross_entropy_with_logits(z, target.to(z.dtype), reduction="none")
    if weight is None:
        return losses.mean()
    w = weight.to(losses.dtype)
    return (losses * w).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)


def pointwise_soft_label_loss(logits: Tensor, s: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pointwise pretraining: one-vs-rest binary cross-entropy against the teacher's soft labels.

    ``loss = mean_{n,c} -(S_nc log σ(f_nc) + (1 - S_nc) log σ(-f_nc))``

    Shapes: ``logits`` and ``s`` (N, C); ``mask`` (N,) or (N, C), 1 where a teacher score exists.
    """
    losses = F.binary_cross_entropy_with_logits(logits, s.to(logits.dtype), reduction="none")
    if mask is None:
        return losses.mean()
    m = mask.to(losses.dtype)
    if m.dim() == 1:
        m = m.unsqueeze(-1).expand_as(losses)
    return (losses * m).sum() / m.sum().clamp(min=1.0)


def single_label_loss(logits: Tensor, target: Tensor, class_weight: Tensor | None = None) -> Tensor:
    """Finetuning, binary and multiclass tasks: softmax cross-entropy ``-log softmax(f)_y``.

    Shapes: ``logits`` (N, C), ``target`` (N,) class indices.
    """
    return F.cross_entropy(logits, target, weight=class_weight)


def multilabel_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Finetuning, multilabel tasks: mean sigmoid BCE over labels, ``target`` (N, C) in {0, 1}."""
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


def response_ranking_loss(s_better: Tensor, s_worse: Tensor) -> Tensor:
    """Response ranking (MINT-CL's auxiliary task), mean over pairs.

    For a context and two candidate responses a+ (better) and a- (worse), with encoder scores
    s+ = s(context [SEP] a+) and s- = s(context [SEP] a-)::

        loss = -log(exp(s+) / (exp(s+) + exp(s-))) = softplus(s- - s+)

    The gradient lowers s- and raises s+ by the same amount, sigmoid(s- - s+). Shapes: (P,) each.
    """
    return F.softplus(s_worse - s_better).mean()


def hierarchical_loss(level_logits: list[Tensor], level_target: Tensor) -> Tensor:
    """Finetuning, hierarchical tasks: the sum over levels of each level's softmax cross-entropy,
    ``sum_l -log softmax(f_l)_{y_l}``, mean over rows.

    Shapes: ``level_logits[l]`` (N, C_l); ``level_target`` (N, L) the gold node index at each level.
    """
    return torch.stack([F.cross_entropy(f, level_target[:, lv]) for lv, f in enumerate(level_logits)]).sum()


def pairwise_plus_pointwise_loss(f_i: Tensor, f_j: Tensor, s_i: Tensor, s_j: Tensor, logits: Tensor, s: Tensor, *,
                                 alpha: float, pointwise_weight: float, mask: Tensor | None = None) -> Tensor:
    """The combined pretraining objective: the pairwise loss plus a weighted pointwise term.

    ``loss = mean_pairs softplus(-[(f_i - f_j) - alpha (S_i - S_j)])
           + w * mean_{n,c} -(S_nc log σ(f_nc) + (1 - S_nc) log σ(-f_nc))``

    with w = ``pointwise_weight`` >= 0. The pairwise term fixes each class's scores only up to a
    constant (a shift of f_c changes no difference f_i - f_j); the pointwise term pins that offset to
    the teacher's absolute scores. w = 0 is the pairwise loss. Shapes: the pairs (P,) as in
    :func:`pairwise_preference_loss`; ``logits``/``s`` (N, C) and ``mask`` as in
    :func:`pointwise_soft_label_loss`.
    """
    pair = pairwise_preference_loss(f_i, f_j, s_i, s_j, alpha)
    point = pointwise_soft_label_loss(logits, s, mask=mask)
    combined = combine_pairwise_pointwise(pair, point, pointwise_weight)
    assert combined is not None
    return combined


def combine_pairwise_pointwise(pairwise: Tensor | None, pointwise: Tensor | None,
                               pointwise_weight: float) -> Tensor | None:
    """``pairwise + w * pointwise`` from the two terms of a batch; a term the batch lacks (None) counts 0."""
    if pointwise_weight < 0:
        raise ValueError(f"pointwise_weight must be >= 0, got {pointwise_weight}")
    if pointwise is None or pointwise_weight == 0:
        return pairwise
    weighted = pointwise_weight * pointwise
    return weighted if pairwise is None else pairwise + weighted
