"""Install llava-scissor: LLaVA-OneVision video inference with LLaVA-Scissor token compression."""
from setuptools import find_packages, setup

setup(
    name="llava-scissor",
    version="0.1.0",
    description="LLaVA-OneVision video inference with LLaVA-Scissor (SCC) token compression",
    python_requires=">=3.10",
    packages=find_packages(include=["llava", "llava.*"]),
    install_requires=[
        "torch>=2.4",
        "transformers>=5.6",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "sentencepiece",
        "huggingface_hub>=0.30",
        "decord>=0.6; platform_machine == 'x86_64' and sys_platform == 'linux'",
        "av>=12",
        "pyyaml>=6",
        "numpy>=1.24",
        "pillow>=10",
    ],
    entry_points={
        "console_scripts": ["llava-infer=llava.infer:main"],
        "vllm.general_plugins": ["llava_scissor = llava.serving.plugin:register"],
    },
    extras_require={
        "test": ["pytest>=8", "scipy>=1.10", "ruff>=0.5"],
        "eval": ["lmms-eval>=0.7"],
        "flash": ["flash-attn>=2.5"],
        "serve": ["vllm>=0.32,<0.34"],  # llava.serving overrides private vLLM methods: bump only with its tests
    },
)
