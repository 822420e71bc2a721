"""Evaluation at scale on lmms-eval: the `llava_scissor` model, tau calibration, the paper's grid and the report.

lmms-eval owns task definitions, prompts and metrics (what the paper and its peers report with); this package
adds the model, the budgets, a resumable grid runner and the comparison with the published numbers.
"""
