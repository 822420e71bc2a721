"""Serving LLaVA-Scissor through vLLM: an out-of-tree plugin at an exact per-video token budget.

`budget` (no vLLM import): the ratio in effect and the token count. `plugin`: the `vllm.general_plugins` entry
point. `vllm_model`: the processor and model subclasses (imports vLLM). Install with `pip install .[serve]`.
"""
