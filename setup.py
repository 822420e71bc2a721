"""Install llava-scissor: LLaVA-OneVision video inference with LLaVA-Scissor token compression."""
from setuptools import find_packages, setup

setup(
    name="llava-scissor",
    version="0.1.0",
    description="LLaVA-OneVision video inference with LLaVA-Scissor (SCC) token compression",
    python_requires=">=3.10",
    packages=find_packages(include=["llava", "llava.*"]),
    # run configs and the demo clip ship inside the package, so `llava-infer --config NAME` works from a wheel
    package_data={"llava": ["configs/*.yaml", "configs/paper/*.yaml", "assets/*.mp4"]},
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
        "console_scripts": ["llava-infer=llava.infer:main", "llava-demo=llava.demo.__main__:main"],
        "lmms_eval.models": ["llava_scissor=llava.eval.lmms_plugin:manifest"],
        "vllm.general_plugins": ["llava_scissor = llava.serving.plugin:register"],
    },
    extras_require={
        # selenium drives the web demo's browser test (Debian's chromium and chromium-driver)
        "test": ["pytest>=8", "scipy>=1.10", "ruff>=0.5", "selenium>=4.20,<5"],
        # the lmms-eval release our drop-in and llava_scissor model are tested against; 0.7.3 imports
        # `filelock._api`, which filelock 4 removed (without the cap, `python -m lmms_eval` logs the import error
        # and exits 0 with no results)
        "eval": ["lmms-eval==0.7.3", "filelock<4"],
        # lmms-eval's runtime dependencies for our two paths (its stock llava_onevision class and llava_scissor),
        # installed next to `pip install --no-deps lmms-eval==0.7.3`: its own requirements pull torchvision, whose
        # PyPI wheels replace a CPU torch. filelock 4 removed `filelock._api`, which lmms-eval 0.7.3 imports;
        # Video-MME's task code imports cv2.
        "lmms-eval-nodeps": ["loguru", "datasets", "evaluate", "pytablewriter", "jsonlines", "tenacity", "sacrebleu",
                             "filelock<4", "tqdm-multiprocess", "python-dotenv", "pydantic", "opencv-python-headless",
                             "matplotlib"],
        "flash": ["flash-attn>=2.5"],
        # the web demo (llava.demo, scripts/demo.sh): gradio 6 is the version its page is tested with; selenium
        # drives the system Chromium in tests/test_demo_browser.py (no browser download)
        "demo": ["gradio>=6,<7"],
        "serve": ["vllm>=0.32,<0.34"],  # llava.serving overrides private vLLM methods: bump only with its tests
    },
)
