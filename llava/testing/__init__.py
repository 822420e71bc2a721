"""Test helpers that build tiny checkpoints locally (no downloads, CPU only): see llava.testing.tiny_checkpoint."""
