"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.metric import MetricAlgorithm
from metarun.tasktypes import CLASSIFICATION, TaskType
from metarun.types import Backbone


class MatchingNet(MetricAlgorithm):
    """Label a query by attention over the support set: ``p(y|x) = sum_i a(x, x_i) y_i``.

    The attention ``a`` is a softmax over the cosine similarities between the query's and
    the support images' embeddings. Predictions are the log of those class probabilities
    (so cross-entropy on them is the paper's negative log-likelihood). Works for any number
    of ways and shots at meta-test.

    With ``normalize_query`` off, the query embedding is not normalised, only the support's
    (``q . s / |s|``), as in Antoniou's public implementation of the paper: the query's norm
    then acts as a learned temperature of the softmax, which plain cosines in [-1, 1] keep
    flat (5 ways, one shot: at most e / (e + 4/e) = 65% on the right class). The predicted
    class is the same.

    With ``fce`` (full context embeddings), the support embeddings are re-read by a
    bidirectional LSTM over the support set (``g``) and each query embedding by an
    attention LSTM that attends to them for ``fce_steps`` steps (``f``). Without FCE the
    prediction does not depend on the order of the support set; with FCE it does (``g`` reads
    the support set as a sequence, as in the paper). The attention LSTM's hidden state is
    ``h + r`` (the paper concatenates ``[h, r]``), so every state has the embedding's width.

    Args:
        backbone: feature extractor with ``out_dim``.
        fce: use full context embeddings.
        fce_steps: processing steps of the attention LSTM.
        normalize_query: divide by the query embedding's norm too (the paper's cosine).
        bn_mode: see :class:`~metarun.algorithms.base.Algorithm`.
        task_type: the data's task type (classification only).
        train_ways, train_queries: the training episodes' shape
            (:class:`~metarun.algorithms.metric.MetricAlgorithm`).
    """

    def __init__(self, backbone: Backbone, fce: bool = False, fce_steps: int = 5,
                 normalize_query: bool = True, bn_mode: str = "running",
                 task_type: TaskType = CLASSIFICATION, train_ways: int | None = None,
                 train_queries: int | None = None) -> None:
        super().__init__(backbone, bn_mode=bn_mode, task_type=task_type, train_ways=train_ways,
                         train_queries=train_queries)
        if fce_steps < 1:
            raise ValueError(f"algo.fce_steps must be at least 1; got {fce_steps}")
        self.fce, self.fce_steps, self.normalize_query = fce, fce_steps, normalize_query
        dim = backbone.out_dim
        if fce:
            self.support_lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)
            self.query_cell = nn.LSTMCell(dim, dim)

    def predict(self, support_z: Tensor, support_y: Tensor, query_z: Tensor,
                ways: int) -> Tensor:
        """``[S, D]`` support and ``[Q, D]`` query embeddings to log p(y|x) ``[Q, ways]``."""
        if self.fce:
            support_z = self._g(support_z)
            query_z = self._f(query_z, support_z)
        support_n = F.normalize(support_z, dim=-1)
        query_n = F.normalize(query_z, dim=-1) if self.normalize_query else query_z
        similarity = query_n @ support_n.T  # [Q, S]
        attention = similarity.softmax(dim=1)  # [Q, S]
        probs = attention @ F.one_hot(support_y, ways).to(attention.dtype)
        return probs.clamp_min(1e-12).log()

    def _g(self, support_z: Tensor) -> Tensor:
        out, _ = self.support_lstm(support_z[None])  # [1, S, 2D]
        forward, backward = out[0].chunk(2, dim=-1)
        return support_z + forward + backward

    def _f(self, query_z: Tensor, support_g: Tensor) -> Tensor:
        h = torch.zeros_like(query_z)
        c = torch.zeros_like(query_z)
        r = torch.zeros_like(query_z)
        for _ in range(self.fce_steps):
            h_hat, c = self.query_cell(query_z, (h + r, c))
            h = h_hat + query_z
            r = (h @ support_g.T).softmax(dim=1) @ support_g
        return h
