"""A run's snapshot -> the page's text and HTML. Pure functions (no Gradio), so they are tested without a browser.

Every value that comes from the user or the model (file names, questions, answers, error messages) is escaped:
a random checkpoint's answer can hold any characters. Each number a test or a script reads carries a
`data-field` attribute (`tokens_before`, `tokens_after`, ...) inside an element marked with its setting's label.
"""
from __future__ import annotations

import math
from html import escape

from llava.config_types import METHOD_SPECS, CompressionConfig
from llava.demo.engine import DemoRun, SettingRun

STAGE_NAMES = {"decode": "Decoding the video", "vision": "Vision tower", "compression": "Compression",
               "generation": "Generating", "done": "Done"}


def describe(compression: CompressionConfig) -> str:
    """'scc, retention ratio 0.1' / 'scc, tau 0.9' / 'none (every token kept)'."""
    if compression.retention_ratio is not None:
        return f"{compression.method}, retention ratio {compression.retention_ratio:g}"
    if compression.tau is not None:
        return f"{compression.method}, tau {compression.tau:g}"
    return f"{compression.method} ({METHOD_SPECS[compression.method].summary})"


def status_html(run: DemoRun) -> str:
    """The progress line: which stage runs now, and what it does."""
    detail = f": {escape(run.note)}" if run.stage != "done" else ""
    return f'<div class="demo-status" data-stage="{run.stage}"><b>{STAGE_NAMES[run.stage]}</b>{detail}</div>'


def error_html(message: str) -> str:
    """A problem with the input, shown where the progress line was; the page keeps serving."""
    return f'<div class="demo-status demo-error" data-stage="error"><b>Error</b>: {escape(message)}</div>'


def shared_html(run: DemoRun) -> str:
    """What every setting shares: the sampled frames, decode and vision time (run once), peak memory."""
    rows = []
    decoded = run.decoded
    if decoded is not None:
        indices = ", ".join(str(int(i)) for i in decoded.indices[:12]) + (", …" if len(decoded.indices) > 12 else "")
        rows.append(f'<p><span data-field="frames">{len(decoded.indices)}</span> frames sampled of '
                    f"{decoded.total_frames} ({decoded.backend}; indices {indices})</p>")
    times = [(name, ms) for name, ms in (("decode", run.decode_ms), ("vision", run.vision_ms)) if ms is not None]
    if times:
        rows.append("<p>shared by every setting (ms): " + " | ".join(
            f'{name} <span data-field="{name}_ms">{ms:.1f}</span>' for name, ms in times) + "</p>")
    if run.peak_memory is not None:
        mb, kind = run.peak_memory
        where = "CUDA max allocated" if kind == "cuda_max_allocated" else "process RSS peak"
        rows.append(f'<p>peak memory <span data-field="peak_memory_mb">{mb:.0f}</span> MB ({where} since the app '
                    "started)</p>")
    return '<div class="demo-shared">' + "".join(rows) + "</div>"


def setting_html(part: SettingRun) -> str:
    """One setting's report: the budget, tokens before -> after, SCC's thresholds, its own times."""
    label, compression = escape(part.setting.label), part.setting.compression
    rows = [("setting", f'<span data-field="setting">{escape(describe(compression))}</span>')]
    if part.encoded is not None:
        stats = part.encoded.stats
        newline = f", + {part.encoded.newline_tokens} newline" if part.encoded.newline_tokens else ""
        rows.append(("visual tokens", f'<span data-field="tokens_before">{stats.tokens_in}</span> → '
                     f'<span data-field="tokens_after">{stats.tokens_out}</span> '
                     f"({stats.retention:.1%} kept{newline})"))
        if stats.tau_spatial is not None:
            rows.append(("SCC thresholds", f"spatial {_num(stats.tau_spatial)}, temporal {_num(stats.tau_temporal)}"))
        times = [("compression", part.compression_ms), ("prefill", sum(a.prefill_ms for a in part.answers)),
                 ("generate", sum(a.generate_ms for a in part.answers))]
        rows.append(("time (ms)", " | ".join(f'{name} <span data-field="{name}_ms">{ms:.1f}</span>'
                                             for name, ms in times)))
    body = "".join(f"<tr><th>{name}</th><td>{cell}</td></tr>" for name, cell in rows)
    summary = escape(METHOD_SPECS[compression.method].summary)
    return (f'<div class="demo-report" data-setting="{label}"><table>{body}</table>'
            f'<p class="demo-method">{escape(compression.method)}: {summary}</p></div>')


def answers_text(part: SettingRun, questions: tuple[str, ...]) -> str:
    """'Q: ... / A: ...' per question: finished answers, the one streaming, then the ones still waiting."""
    blocks = []
    for number, question in enumerate(questions):
        if number < len(part.answers):
            answer = part.answers[number].answer
        elif number == len(part.answers) and part.partial:
            answer = part.partial + " …"
        else:
            answer = "…"
        blocks.append(f"Q: {question}\nA: {answer}")
    return "\n\n".join(blocks)


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"
