"""llava-scissor: LLaVA-OneVision video inference with LLaVA-Scissor token compression."""
