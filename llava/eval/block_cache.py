"""Compress once: a bounded cache of compressed visual blocks keyed by (video file, frame settings, compression).

SCC does not look at the question, so benchmarks that ask several questions about one video (Video-MME asks
three) need the vision tower and the compressor once per video. The key holds everything that shapes the block:
the file (resolved path, size, mtime), the frame count and decoder, the compression config and the newline
policy; a different setting misses. Least recently used entries are dropped beyond `capacity`. The time a hit
saves, and the time a miss spends, is the block's own vision + compression time (measured when it was made, on the
device-synced clock of `llava.compression.timing`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llava.model.modeling import EncodedVideo


@dataclass
class EncodedBlock:
    """A video encoded once by the model's stages (`EncodedVideo`: visual block, compression stats), with the
    vision time it took; `video.stats.time_ms` is the compression time (timed)."""

    video: EncodedVideo
    vision_ms: float

    @property
    def encode_ms(self) -> float:
        return self.vision_ms + (self.video.stats.time_ms or 0.0)


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    saved_ms: float = 0.0  # vision + compression time the hits did not spend
    spent_ms: float = 0.0  # vision + compression time the misses spent


class BlockCache:
    """LRU of EncodedBlock by key; `get_or_make(key, make)` returns (block, hit)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {capacity}")
        self.capacity = capacity
        self.entries: OrderedDict[tuple, EncodedBlock] = OrderedDict()
        self.counters = CacheCounters()

    def get_or_make(self, key: tuple, make: Callable[[], EncodedBlock]) -> tuple[EncodedBlock, bool]:
        if key in self.entries:
            self.entries.move_to_end(key)
            block = self.entries[key]
            self.counters.hits += 1
            self.counters.saved_ms += block.encode_ms
            return block, True
        block = make()
        self.counters.misses += 1
        self.counters.spent_ms += block.encode_ms
        if self.capacity:
            self.entries[key] = block
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
        return block, False
