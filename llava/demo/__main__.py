"""Start the web demo: `python -m llava.demo [--model CKPT] [--config NAME] [--port N]` (or `llava-demo`).

Flags -> a run config (the command line's defaults and loader: `--config` names a YAML file or a shipped config)
-> the checkpoint loads once -> the page is served on 127.0.0.1 until Ctrl-C. A bad flag or a checkpoint that does
not load gives one `error:` line and exit code 2, as `llava-infer` does; gradio missing says how to install it.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys

from llava.config_types import DTYPE_NAMES
from llava.infer import DEFAULT_CONFIG
from llava.run_config import RunConfig, load_config, resolve_config_path

logger = logging.getLogger("llava.demo")

INSTALL_HINT = "the demo needs gradio: run `bash scripts/demo.sh`, which installs the package's `demo` extra"
FLAG_FIELDS = {"model": "model.path", "device": "model.device", "dtype": "model.dtype"}


def build_parser() -> argparse.ArgumentParser:
    """The demo's flags: which run config and checkpoint, and where to serve."""
    parser = argparse.ArgumentParser(prog="llava-demo", description="Serve the LLaVA-Scissor video QA web demo.")
    add = parser.add_argument
    add("--config", default=str(DEFAULT_CONFIG), help="YAML run config or the name of a shipped one (its frames, "
        "compression and generation are the page's defaults; default configs/llava-ov-0.5b-scissor.yaml)")
    add("--model", help="checkpoint directory or hub id (overrides model.path)")
    add("--device", help="cpu, cuda, cuda:1 or auto (model.device)")
    add("--dtype", choices=DTYPE_NAMES, help="model.dtype")
    add("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    add("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    add("-v", "--verbose", action="store_true", help="log progress (INFO) to stderr")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    """--config with the given --model / --device / --dtype applied, validated (torch-free)."""
    overrides = {dotted: getattr(args, flag) for flag, dotted in FLAG_FIELDS.items() if getattr(args, flag)}
    return load_config(resolve_config_path(args.config), overrides)


def main(argv: list[str] | None = None) -> int:
    """Parse, load, serve. Exit 2 with one line for a bad flag, a missing gradio or a checkpoint that fails."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = run_config(args)
        if importlib.util.find_spec("gradio") is None:
            raise ImportError(INSTALL_HINT)
        from llava.demo.app import build_app, launch
        from llava.demo.engine import DemoEngine

        engine = DemoEngine.load(config)
    except (ValueError, TypeError, OSError, ImportError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    logger.info("loaded %s on %s", engine.loaded.checkpoint_dir, engine.loaded.model.device)
    launch(build_app(engine), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
