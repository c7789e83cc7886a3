"""Per-chart reductions and labels in plain torch: what lets every chart be handled at once.

A chart is a set of faces sharing an integer id. Sums over charts are ``index_add`` into one slot per
id; connected components are min-label hooking with pointer jumping (Shiloach and Vishkin's idea, as
CuMesh's ``reassign_chart_ids`` does it in CUDA), a few rounds of whole-tensor operations rather than
a walk per chart. Everything runs on the tensors' device, CPU or CUDA.
"""

from __future__ import annotations

import torch

__all__ = ["compact", "components", "edge_neighbours", "segment_sum"]


def compact(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``ids`` renumbered 0..n-1 in the order of their values, and n."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    return inverse, int(unique.shape[0])


def segment_sum(values: torch.Tensor, ids: torch.Tensor, count: int) -> torch.Tensor:
    """Sum of ``values`` (first axis indexed like ``ids``) per id: shape ``(count, *values.shape[1:])``."""
    out = torch.zeros((count, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, ids, values)


def edge_neighbours(faces: torch.Tensor, chart: torch.Tensor) -> torch.Tensor:
    """Pairs of faces ``(P, 2)`` that share an edge and a chart id.

    Faces around an edge shared by more than two (a non-manifold edge) are linked one to the next,
    which connects them all.
    """
    faces = faces.long()
    count = faces.shape[0]
    if count == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=faces.device)
    ends = torch.stack([faces, faces.roll(-1, dims=1)], dim=2).reshape(-1, 2)
    low, high = ends.min(dim=1).values, ends.max(dim=1).values
    owner = torch.arange(count, device=faces.device).repeat_interleave(3)
    edge, edges = compact(low * (int(faces.max()) + 1) + high)
    edge = edge + chart.long().repeat_interleave(3) * edges  # one key per (chart, edge)
    edge, order = torch.sort(edge, stable=True)
    owner = owner[order]
    same = edge[1:] == edge[:-1]
    return torch.stack([owner[:-1][same], owner[1:][same]], dim=1)


def components(pairs: torch.Tensor, count: int) -> torch.Tensor:
    """A label per item 0..count-1: the smallest item index of its connected component under ``pairs``."""
    label = torch.arange(count, device=pairs.device)
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        la, lb = label[a], label[b]
        differ = la != lb
        if not bool(differ.any()):
            return label
        low, high = torch.minimum(la, lb)[differ], torch.maximum(la, lb)[differ]
        label.scatter_reduce_(0, high, low, reduce="amin")
        while True:
            jumped = label[label]
            if torch.equal(jumped, label):
                break
            label = jumped
