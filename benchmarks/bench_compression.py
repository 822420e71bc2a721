"""Compression speed at the paper's shapes (32 frames x 196 tokens, D = 896 / 3584), side by side in one run.

Columns per case:
- ours: median wall time of `llava.compression.compress`.
- floor: the similarity matmuls alone for the same token counts (spatial [F, T, T], temporal [M', M'], merge
  [N, K]): what any implementation of SCC pays.
- naive: a straightforward implementation of the paper's algorithm (Appendix C): torch similarities, then the
  thresholded adjacency moved to the CPU and a Python union-find (path halving, union by rank) over every node
  and its neighbours, components sorted by highest-degree member, the same merge step. tau mode only.
- ratio rows also show ours in tau mode at the spatial tau the ratio search settled on (the same work without
  the search), to price the exact budget.
- syncs / ops: host round trips and dispatched ops of one call (llava.testing.counting), the costs a GPU
  pays per call in launch stalls and kernel launches.

`--long` prints the long-video table instead: 32 / 64 / 128 / 256 frames, compression time against one tiled
similarity pass over its temporal tokens (M' = tokens after the spatial step), which any exact temporal step pays.

The table is printed and written to benchmarks/results/compression[-long][-large-regions]-<dtype>-<device>.md,
stamped with the commit, date, machine and command (llava.testing.results).

Run: python benchmarks/bench_compression.py [--repeats 5] [--dims 896 3584] [--long] [--device cuda] [--dtype bfloat16]
"""
from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llava.compression import CompressionConfig, compress
from llava.compression.graph import tile_rows, unit
from llava.compression.timing import timed_call
from llava.testing.counting import count
from llava.testing.results import RESULTS_DIR, Report
from llava.testing.synthetic import region_video

LARGE_REGIONS = {"regions": 32, "noise": (0.05, 0.45), "size_spread": 30.0}


def median_ms(repeats: int, fn, *args) -> float:
    return interleaved_ms(repeats, (fn, *args))[0]


def interleaved_ms(repeats: int, *calls: tuple) -> list[float]:
    """Median ms of each call (fn, *args) on the device of its first argument, the calls alternating within
    every repeat so that machine noise hits all of them alike and their ratios stay meaningful."""
    for fn, *args in calls:
        fn(*args)  # warm-up
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for slot, (fn, *args) in zip(times, calls, strict=True):
            slot.append(timed_call(args[0].device, partial(fn, *args))[1])
    return [statistics.median(slot) for slot in times]


# ------------------------------------------------------------------ the straightforward implementation
class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.rank = [0] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.rank[ra] < self.rank[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.rank[ra] += self.rank[ra] == self.rank[rb]


def naive_scc(x: torch.Tensor, tau: float) -> torch.Tensor:
    xn = F.normalize(x, dim=-1)
    adjacency = ((xn @ xn.T) > tau).cpu().numpy()
    n = adjacency.shape[0]
    uf = UnionFind(n)
    for i in range(n):
        for j in np.flatnonzero(adjacency[i]):
            uf.union(i, int(j))
    roots = np.array([uf.find(i) for i in range(n)])
    degree = adjacency.sum(axis=1)
    groups = [np.flatnonzero(roots == r) for r in np.unique(roots)]
    groups.sort(key=lambda members: min(members, key=lambda i: (-degree[i], i)))
    return torch.stack([x[torch.from_numpy(members)].mean(dim=0) for members in groups])


def naive_compress(features: torch.Tensor, tau: float) -> torch.Tensor:
    frames, tokens, dim = features.shape
    spatial = torch.cat([naive_scc(frame, tau) for frame in features])
    kept = naive_scc(spatial, tau)
    flat = features.reshape(-1, dim)
    assignment = (F.normalize(flat, dim=-1) @ F.normalize(kept, dim=-1).T).argmax(dim=1)
    sums = kept.clone().index_add_(0, assignment, flat)
    return sums / (torch.bincount(assignment, minlength=len(kept)) + 1)[:, None]


# ------------------------------------------------------------------ the floor
def similarity_floor(features: torch.Tensor, spatial_count: int, kept_count: int) -> None:
    frames, tokens, dim = features.shape
    xn = F.normalize(features, dim=-1)
    xn @ xn.transpose(1, 2)  # spatial
    temporal = F.normalize(features.reshape(-1, dim)[:spatial_count], dim=-1)
    temporal @ temporal.T
    kept = temporal[:kept_count]
    xn.reshape(-1, dim) @ kept.T  # merge


def similarity_pass(tokens: torch.Tensor) -> None:
    """One tiled pass over the similarities of `tokens` [M, D] (row tiles as the compressor's)."""
    x_unit = unit(tokens)
    step = tile_rows(tokens.shape[0])
    for start in range(0, tokens.shape[0], step):
        (x_unit[start:start + step] @ x_unit.T).clamp_(-1.0, 1.0)


def run_long(report: Report, dims: list[int], frames_list: list[int], repeats: int, dtype: torch.dtype) -> None:
    report.add(f"median of {repeats} interleaved runs; `one pass` is one tiled pass over the full similarity rows "
               "of M' tokens\n")
    header = "| D | mode | frames | M' | tokens out | ours ms | one pass ms | ours/pass | syncs | ops |"
    report.add(header)
    report.add("|" + "---|" * (header.count("|") - 1))
    for dim in dims:
        for mode, config in (("tau 0.9", CompressionConfig(tau=0.9)),
                             ("r 0.1", CompressionConfig(retention_ratio=0.1))):
            for frames in frames_list:
                features = region_video(frames=frames, dim=dim).to(report.device, dtype)
                stats = compress(features, config).stats
                temporal = features.reshape(-1, dim)[: stats.tokens_spatial]  # M' tokens stand in for the pass
                ours, one_pass = interleaved_ms(repeats, (compress, features, config), (similarity_pass, temporal))
                counts = count(compress, features, config)
                report.add(f"| {dim} | {mode} | {frames} | {stats.tokens_spatial} | {stats.tokens_out} | {ours:.0f} | "
                           f"{one_pass:.0f} | {ours / one_pass:.2f} | {counts.syncs} | {counts.ops} |")


def run(report: Report, dims: list[int], repeats: int, large_regions: bool, dtype: torch.dtype) -> None:
    report.add(f"median of {repeats} interleaved runs ({max(1, repeats // 3)} for naive); structured synthetic "
               f"features{' with large regions' if large_regions else ''}, 32 frames x 196 tokens\n")
    header = ("| D | mode | tokens out (%) | ours ms | floor ms | ours/floor | naive ms | naive/ours | tau-mode ms "
              "| ratio/tau | syncs | ops |")
    report.add(header)
    report.add("|" + "---|" * (header.count("|") - 1))
    for dim in dims:
        features = region_video(dim=dim, **(LARGE_REGIONS if large_regions else {})).to(report.device, dtype)
        n = features.shape[0] * features.shape[1]
        for tau in (0.8, 0.9, 0.95):
            config = CompressionConfig(tau=tau)
            stats = compress(features, config).stats
            ours, floor = interleaved_ms(
                repeats, (compress, features, config),
                (similarity_floor, features, stats.tokens_spatial, stats.tokens_out),
            )
            naive = median_ms(max(1, repeats // 3), naive_compress, features, tau)
            counts = count(compress, features, config)
            report.add(f"| {dim} | tau {tau} | {stats.tokens_out} ({100 * stats.tokens_out / n:.1f}) | {ours:.0f} | "
                       f"{floor:.0f} | {ours / floor:.2f} | {naive:.0f} | {naive / ours:.1f} | - | - | "
                       f"{counts.syncs} | {counts.ops} |")
        for ratio in (0.35, 0.10, 0.05):
            config = CompressionConfig(retention_ratio=ratio)
            stats = compress(features, config).stats
            ours, floor, tau_ms = interleaved_ms(
                repeats, (compress, features, config),
                (similarity_floor, features, stats.tokens_spatial, stats.tokens_out),
                (compress, features, CompressionConfig(tau=stats.tau_spatial)),
            )
            counts = count(compress, features, config)
            report.add(f"| {dim} | r {ratio} (tau {stats.tau_spatial:.3f}/{stats.tau_temporal:.3f}) | "
                       f"{stats.tokens_out} ({100 * stats.tokens_out / n:.1f}) | {ours:.0f} | {floor:.0f} | "
                       f"{ours / floor:.2f} | - | - | {tau_ms:.0f} | {ours / tau_ms:.2f} | {counts.syncs} | "
                       f"{counts.ops} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dims", type=int, nargs="+", default=[896, 3584])
    parser.add_argument("--large-regions", action="store_true",
                        help="32 regions of very different sizes: denser graphs (retention leaves the 1-50%% band)")
    parser.add_argument("--long", action="store_true", help="the long-video table (32-256 frames)")
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128, 256], help="frames for --long")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="the features' dtype")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the table's file goes")
    args = parser.parse_args()
    name = "compression-long" if args.long else "compression" + ("-large-regions" if args.large_regions else "")
    title = "Compression speed, long videos" if args.long else "Compression speed at the paper's shapes"
    report = Report(title, args.device, args.dtype, echo=partial(print, flush=True))
    report.add(f"{report.stamp.machine}, torch {torch.__version__}, {args.dtype} on {args.device}")
    if args.long:
        run_long(report, args.dims, args.frames, args.repeats, getattr(torch, args.dtype))
    else:
        run(report, args.dims, args.repeats, args.large_regions, getattr(torch, args.dtype))
    print(f"wrote {report.write(args.results_dir, name)}")


if __name__ == "__main__":
    main()
