"""Weight sharing (Deep Compression, Han et al. 2016): k-means per layer, 2^bits shared values.

One-dimensional k-means is solved with sorted values, so assignment is a binary search against
the midpoints between centroids: fast on millions of weights. Centroids start linearly spaced
between the min and max weight (the initialization Deep Compression found best: it keeps the rare
large weights, which matter most). Exact zeros (pruned weights) keep a centroid of their own at
exactly 0, so sparsity survives sharing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SharedTensor:
    """A tensor as indices into a codebook; `codebook[indices]` is the shared-weight tensor."""

    codebook: np.ndarray  # float32 (or the integer dtype of an int8 tensor), zero first when present
    indices: np.ndarray   # uint8 or uint16, same shape as the tensor

    def values(self) -> np.ndarray:
        return self.codebook[self.indices]


def _lloyd(values: np.ndarray, centroids: np.ndarray, iterations: int) -> np.ndarray:
    order = np.sort(values)
    for _ in range(iterations):
        edges = np.searchsorted(order, (centroids[1:] + centroids[:-1]) / 2)
        bounds = np.concatenate([[0], edges, [order.size]])
        sums = np.add.reduceat(np.concatenate([order, [0.0]]), bounds[:-1])[: centroids.size]
        counts = np.diff(bounds)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = np.sort(updated)
    return centroids


def share(weights: np.ndarray, bits: int, iterations: int = 50) -> SharedTensor:
    """Cluster a tensor's values into at most 2^bits shared values (zeros kept exact)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    flat = weights.reshape(-1).astype(np.float64)
    integer = np.issubdtype(weights.dtype, np.integer)
    zero = flat == 0
    nonzero = flat[~zero]
    k = 2**bits - (1 if zero.any() else 0)
    distinct = np.unique(nonzero)
    if distinct.size <= k:  # nothing to cluster: every value already has its own centroid
        centroids = distinct
    elif k == 0:
        centroids = np.empty(0)
    else:
        centroids = _lloyd(nonzero, np.linspace(nonzero.min(), nonzero.max(), k), iterations)
        if integer:  # an int8 tensor stays int8: centroids are integers, and 0 is the zeros' own
            centroids = np.unique(np.round(centroids))
            centroids = centroids[centroids != 0] if zero.any() else centroids
    codebook = np.concatenate([[0.0], centroids]) if zero.any() else centroids
    labels = np.zeros(flat.size, np.int64)
    if centroids.size:
        mids = (centroids[1:] + centroids[:-1]) / 2
        labels[~zero] = np.searchsorted(mids, nonzero) + (1 if zero.any() else 0)
    index_dtype = np.uint8 if codebook.size <= 256 else np.uint16
    return SharedTensor(codebook.astype(weights.dtype), labels.astype(index_dtype).reshape(weights.shape))


def relative_error(original: np.ndarray, shared: np.ndarray) -> float:
    """||shared - original|| / ||original||: how much of the weight energy sharing moved."""
    norm = float(np.linalg.norm(original.astype(np.float64)))
    return float(np.linalg.norm(shared.astype(np.float64) - original)) / norm if norm else 0.0
