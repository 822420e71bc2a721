"""Serving LLaVA-Scissor through vLLM: an out-of-tree plugin at an exact per-video token budget.

`budget` (no vLLM or torch import): which methods are served, the method and ratio in effect (vLLM's pruning flags
included) and the token count. `plugin`: the `vllm.general_plugins` entry
point. `vllm_model`: the processor and model subclasses (imports vLLM). Install with `pip install .[serve]`.
"""
