"""What a `compress` call costs an accelerator, counted (not timed) on the CPU: dispatched ops (kernel launches)
and host round trips (reads that stall the launch queue), at the paper's 32 x 196 and at a longer video."""
from __future__ import annotations

import pytest
import torch

from llava.compression import CompressionConfig, compress
from llava.testing.counting import CountingMode, count
from llava.testing.synthetic import region_video

# (config, frames) -> (max round trips, max ops). Tau mode stays within 10 round trips and 200 ops at 32 frames
# (4 / 182 here); a longer video keeps the round trips (one read per pass, not per tile) and adds ~10 ops per
# extra similarity tile (96 frames: 208 ops). Ratio mode stays within 30 round trips (19 here, 23 at D = 896, 26
# at D = 3584) but takes more than 600 ops (~730 here, ~930 at D = 896): its search takes up to three
# probes, each a spatial step, a temporal edge pass and a temporal spanning forest by Boruvka (~40 ops a round,
# ~250 a probe at D = 896). The bounds guard what it reaches today.
BUDGETS = {
    ("tau0.9", 32): (10, 200), ("tau0.9", 96): (10, 230),
    ("r0.1", 32): (25, 770), ("r0.1", 96): (25, 820),
}
CONFIGS = {"tau0.9": CompressionConfig(tau=0.9), "r0.1": CompressionConfig(retention_ratio=0.1)}


@pytest.fixture(scope="module")
def videos() -> dict[int, torch.Tensor]:
    return {frames: region_video(frames=frames, dim=64) for frames in (32, 96)}


@pytest.mark.parametrize("frames", [32, 96])
@pytest.mark.parametrize("mode", list(CONFIGS))
def test_round_trips_and_ops_per_call(videos, frames: int, mode: str) -> None:
    max_syncs, max_ops = BUDGETS[mode, frames]
    counts = count(compress, videos[frames], CONFIGS[mode])
    assert counts.ops > 50  # the counter sees the work
    assert counts.syncs <= max_syncs, dict(counts.by_op)
    assert counts.ops <= max_ops


def test_counter_sees_each_kind_of_round_trip() -> None:
    x = torch.arange(6.0)
    with CountingMode() as mode:
        x.sum().item()
        bool(x.any())
        x.nonzero()
        torch.equal(x, x)
        x[x > 2]
        torch.bincount(x.long())
        x.to("cpu", copy=True).tolist()  # a copy to the host: what a GPU tensor's .tolist() pays
        x + 1  # not a round trip
    assert mode.counts.syncs == 7 and mode.counts.ops == 12, mode.counts
