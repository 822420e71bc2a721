"""The Gradio page: a video, frames, questions and one or two compression settings in; per setting the answers
(streamed), tokens before -> after, stage times and the painted frames out; progress while it runs.

Every default on the form is read from the run config the app was started with (frames, method, budget; the
question is the command line's default). Requests go through Gradio's queue one at a time (`concurrency_limit=1`):
they share one loaded model and the same cores. Nothing per request lives outside the handler's call, so each
browser session gets its own answers. A bad input (a non-video, an empty file, a budget a method cannot take, a
question longer than the context) is shown in the page, in place of the progress line, and the app keeps serving.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llava.config_types import METHOD_SPECS, METHODS
from llava.demo.engine import DemoEngine, DemoRun
from llava.demo.inputs import BUDGET_KINDS, RATIO, TAU, DemoInputError, parse_request
from llava.demo.render import STAGE_NAMES, answers_text, error_html, setting_html, shared_html, status_html
from llava.infer import DEFAULT_QUESTION, DEFAULT_VIDEO
from llava.runtime import RANDOM_WARNING

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

LABELS = ("A", "B")
COMPARE_METHOD = "none"  # setting B starts as the uncompressed baseline: what compression saved, side by side
CSS = """
.demo-error { color: #b42318; }
.demo-report th { text-align: left; padding-right: 1em; }
"""
INTRO = """# LLaVA-OneVision video QA with LLaVA-Scissor token compression
Upload a video (or use the demo clip), ask questions (one per line), pick how many visual tokens survive, and see
what the model answers, what compression kept, and what it cost. Tick *Compare* to run a second setting on the
same video: the vision tower runs once, each setting compresses the same features."""


def method_note(method: str) -> str:
    """What a method does (its MethodSpec summary), and whether it reads the budget box."""
    spec = METHOD_SPECS[method]
    budget = {"tau_or_ratio": "budget: a retention ratio or tau", "ratio": "budget: a retention ratio",
              "none": "no budget: every token is kept"}[spec.budget]
    return f"*{method}*: {spec.summary} ({budget})"


def model_note(engine: DemoEngine) -> str:
    """Which checkpoint answers, on what device, and the random-checkpoint warning when it applies."""
    loaded = engine.loaded
    line = (f"**Checkpoint** `{loaded.checkpoint_dir}` ({loaded.model.device}, "
            f"{str(loaded.model.dtype).removeprefix('torch.')})")
    if loaded.random_tiny:
        line += "\n\n**Warning**: " + RANDOM_WARNING.format(path=loaded.checkpoint_dir)
    return line


def _settings(values: tuple[Any, ...], compare: bool) -> list[tuple[str, str, str, float | None]]:
    """(method, kind, value) for A and B, flat -> (label, method, kind, value) for the settings that run."""
    rows = [(label, *values[3 * i:3 * i + 3]) for i, label in enumerate(LABELS)]
    return rows if compare else rows[:1]


def page(run: DemoRun | None, status: str, sent: set[str]) -> list[Any]:
    """The handler's outputs: status, shared report, then (answers, report, pictures) for A and B. Pictures are
    sent once per setting (`sent` remembers which) and skipped afterwards, so streaming only moves text."""
    import gradio as gr

    if run is None:
        return [status, "", *["", "", None] * len(LABELS)]
    out: list[Any] = [status, shared_html(run)]
    parts = {part.setting.label: part for part in run.settings}
    for label in LABELS:
        part = parts.get(label)
        if part is None:
            out += ["", "", None]
            continue
        pictures: Any = gr.skip()
        if part.pictures and label not in sent:
            pictures = part.pictures
            sent.add(label)
        out += [answers_text(part, run.request.questions), setting_html(part), pictures]
    return out


def respond(engine: DemoEngine, video: str | None, frames: float | None, questions: str | None, compare: bool,
            *settings: Any, progress: Any = None) -> Iterator[list[Any]]:
    """Validate the form, run it, and yield the page after every step; an input problem ends the run with the
    message in the page (the outputs so far stay)."""
    try:
        request = parse_request(engine.config, engine.base_compression, video, frames, questions,
                                _settings(settings, compare))
    except DemoInputError as err:
        yield page(None, error_html(str(err)), set())
        return
    sent: set[str] = set()
    last: DemoRun | None = None
    try:
        for run in engine.run(request):
            last = run
            if progress is not None:
                progress(run.fraction, desc=STAGE_NAMES[run.stage])
            yield page(run, status_html(run), sent)
    except ValueError as err:  # DemoInputError (video, question length) or a config the model rejects
        logger.info("request failed: %s", err)
        yield page(last, error_html(str(err)), sent)


def _setting_inputs(gr: Any, label: str, method: str, kind: str, value: float | None) -> list[Any]:
    """One setting's method / budget kind / value boxes, with the method's note under them."""
    picked = gr.Dropdown(list(METHODS), value=method, label=f"Method {label}", elem_id=f"method-{label}")
    chosen_kind = gr.Radio(list(BUDGET_KINDS), value=kind, label=f"Budget {label}", elem_id=f"kind-{label}")
    amount = gr.Number(value=value, label=f"Retention ratio in (0, 1] or tau in [-1, 1] ({label})",
                       elem_id=f"value-{label}")
    note = gr.Markdown(method_note(method))
    picked.change(method_note, picked, note)
    return [picked, chosen_kind, amount]


def _results(gr: Any, label: str) -> list[Any]:
    answers = gr.Textbox(label=f"Answers ({label})", lines=4, interactive=False, elem_id=f"answers-{label}")
    report = gr.HTML(elem_id=f"report-{label}")
    pictures = gr.Gallery(label=f"What {label} kept: one colour per kept token", columns=4 if label == "A" else 2,
                          height="auto", object_fit="contain", elem_id=f"pictures-{label}")
    return [answers, report, pictures]


@dataclass
class Form:
    """The input column's components; `inputs` lists them in the handler's argument order."""

    video: Any
    use_demo: Any
    compare: Any
    column_b: Any
    run: Any
    inputs: list[Any]


def _form(gr: Any, engine: DemoEngine) -> Form:
    base = engine.base_compression
    kind = TAU if base.tau is not None else RATIO
    value = base.tau if base.tau is not None else base.retention_ratio
    with gr.Column(scale=1):
        video = gr.Video(label="Video", sources=["upload"], elem_id="video")
        use_demo = gr.Button("Use the demo clip", elem_id="use-demo")
        frames = gr.Number(value=engine.config.video.frames, precision=0, label="Frames sampled", elem_id="frames")
        questions = gr.Textbox(value=DEFAULT_QUESTION, lines=3, label="Questions (one per line)", elem_id="questions")
        inputs_a = _setting_inputs(gr, "A", base.method, kind, value)
        compare = gr.Checkbox(False, label="Compare with setting B (same video, encoded once)", elem_id="compare")
        with gr.Column(visible=False) as column_b:
            inputs_b = _setting_inputs(gr, "B", COMPARE_METHOD, kind, value)
        run = gr.Button("Run", variant="primary", elem_id="run")
    return Form(video, use_demo, compare, column_b, run, [video, frames, questions, compare, *inputs_a, *inputs_b])


def _outputs(gr: Any) -> tuple[list[Any], Any]:
    """The result column: status, shared report, then A's and B's results; and B's column (hidden until Compare)."""
    with gr.Column(scale=2):
        status = gr.HTML(elem_id="status")
        shared = gr.HTML(elem_id="shared")
        with gr.Row():
            with gr.Column():
                results_a = _results(gr, "A")
            with gr.Column(visible=False) as column_b:
                results_b = _results(gr, "B")
    return [status, shared, *results_a, *results_b], column_b


def build_app(engine: DemoEngine) -> gr.Blocks:
    """The page for `engine`; every default comes from its run config and the compression it started with."""
    import gradio as gr

    with gr.Blocks(title="LLaVA-Scissor video QA", analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        gr.Markdown(model_note(engine))
        with gr.Row():
            form = _form(gr, engine)
            outputs, results_b = _outputs(gr)
        form.use_demo.click(lambda: str(DEFAULT_VIDEO), outputs=form.video)
        form.compare.change(  # side by side, A's frames go two to a row as B's do
            lambda on: (gr.Column(visible=on), gr.Column(visible=on), gr.Gallery(columns=2 if on else 4)),
            form.compare, [form.column_b, results_b, outputs[4]])
        tracker = gr.Progress()  # Gradio hands each call its own tracker in place of this default

        def handler(video_path: str | None, n_frames: float | None, text: str | None, on: bool, *settings: Any,
                    progress: gr.Progress = tracker) -> Iterator[list[Any]]:
            yield from respond(engine, video_path, n_frames, text, on, *settings, progress=progress)

        form.run.click(handler, form.inputs, outputs, concurrency_limit=1, show_progress="minimal")
    return app


def launch(app: gr.Blocks, host: str, port: int | None) -> None:
    """Serve `app` on host:port until interrupted; the demo clip's folder is the one server path it may send."""
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, show_error=True, css=CSS,
        allowed_paths=[str(DEFAULT_VIDEO.parent)])
