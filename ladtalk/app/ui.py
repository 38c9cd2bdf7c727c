"""The Blocks layout: a status panel and one builder per tab, wired to the handlers."""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import gradio as gr

from ladtalk._util.choices import (
    DEFAULT_DETECTOR,
    DEFAULT_LOOP,
    DEFAULT_PADS,
    DETECTORS,
    ENROLL_CONFIGS,
    LOOP_POLICIES,
)
from ladtalk.app.handlers import make_handlers
from ladtalk.app.pickers import (
    DEMO_IDENTITY,
    NONE_IDENTITY,
    default_identity,
    identity_choices,
)
from ladtalk.app.presenters import empty_robustness_table, robustness_column_widths
from ladtalk.app.robustness import SWEEP_AXES, SWEEPS
from ladtalk.app.session import oauth_enabled, visitor_access
from ladtalk.app.state import AppState
from ladtalk.app.status import missing_checkpoints, status_markdown, status_title
from ladtalk.app.zerogpu import ZERO_GPU
from ladtalk.identities.owners import Access

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GPU_QUEUE = dict(concurrency_id="gpu", concurrency_limit=1)
INTRO = """# LaDTalk
Lip-synced talking heads that keep a person's own detail: **Wav2Lip** makes the mouth move
with the speech (96 px, blurry), then **SOVQAE**, a VQGAN trained on one person (an
*identity*), maps the blurry face onto that person's codebook ("latent denoising").
**Generate** a video, check how well an identity **restores** degraded faces (with the
paper's Theorem 3.3 certificate), or **enroll** a new identity from a short video.
"""


def example(name: str) -> Optional[str]:
    """Path of a file of ``examples/`` (None when it is not there)."""
    p = EXAMPLES / name
    return str(p) if p.is_file() else None


@dataclass
class Ctx:
    """What every tab builder needs."""

    st: AppState
    h: Dict[str, Callable]
    cache_examples: bool

    @property
    def visitor(self) -> Access:
        """What a visitor who enrolled nothing sees (build-time pickers, schema defaults)."""
        return visitor_access(self.st.public)


def _status_panel(st: AppState) -> None:
    # one closed line when every required checkpoint is there (S3FD is optional: dlib works)
    required = missing_checkpoints(st.statuses, st.wav2lip_error, required_only=True)
    with gr.Accordion(status_title(st.statuses, st.wav2lip_error, st.device, ZERO_GPU),
                      open=bool(required)):
        gr.Markdown(status_markdown(st.statuses, st.wav2lip_error, st.device, ZERO_GPU))


# ---------------------------------------------------------------------------- Generate
def _generate_advanced() -> List[gr.components.Component]:
    pt, pb, pl, pr_ = DEFAULT_PADS
    with gr.Accordion("Advanced options", open=False):
        with gr.Row():
            g_pt = gr.Number(pt, label="pad top", precision=0)
            g_pb = gr.Number(pb, label="pad bottom", precision=0)
            g_pl = gr.Number(pl, label="pad left", precision=0)
            g_pr = gr.Number(pr_, label="pad right", precision=0)
        with gr.Row():
            g_smooth = gr.Checkbox(label="Temporal box smoothing", value=True)
            g_det = gr.Dropdown(list(DETECTORS), value=DEFAULT_DETECTOR, label="Face detector")
            g_loop = gr.Dropdown(list(LOOP_POLICIES), value=DEFAULT_LOOP,
                                 label="When the audio is longer than the video")
        with gr.Row():
            g_box = gr.Textbox("", label="Fixed face box Y1 Y2 X1 X2 (optional)",
                               placeholder="empty = detect the face")
            g_rf = gr.Number(1, label="resize factor", precision=0, minimum=1)
        g_strength = gr.Textbox(
            "", label="Restore strength (optional)",
            placeholder="empty = calibrated for the identity at enrollment",
            info="S or LOW,HIGH in [0, 2]: how much of the identity's "
                 "restoration to use in the band Wav2Lip's 96 px face has "
                 "(LOW) and in the detail above it (HIGH); 1 = the identity's "
                 "decode, 0 = Wav2Lip's face unchanged")
    return [g_pt, g_pb, g_pl, g_pr, g_smooth, g_det, g_loop, g_box, g_rf, g_strength]


def _generate_inputs(ctx: Ctx) -> List[gr.components.Component]:
    lim = ctx.st.limits
    g_face = gr.File(label="Face video or photo", file_types=["video", "image"],
                     type="filepath")
    g_audio = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath")
    # an identity is one person's codebook: on anyone else's face it paints that
    # person's detail, so it is never preselected
    g_identity = gr.Dropdown(choices=identity_choices(access=ctx.visitor), value=NONE_IDENTITY,
                             allow_custom_value=True, label="Identity (stage 2)",
                             info="default: none = Wav2Lip only. Pick the "
                                  "identity enrolled from this person (or tick "
                                  "'Enroll from this video first'); an identity "
                                  "of someone else is refused. The shipped demo "
                                  "is the astronaut of the examples")
    with gr.Row():
        g_enroll = gr.Checkbox(label="Enroll from this video first", value=False,
                               info="fine-tune an identity on the uploaded "
                                    "video itself, then generate")
        g_enroll_s = gr.Slider(1, lim.enroll_budget_max, value=lim.enroll_budget_default,
                               step=1, label="Enrollment time budget (s)")
    g_compare = gr.Checkbox(label="Also render the Wav2Lip-only baseline (side by side)",
                            value=True)
    return [g_face, g_audio, g_identity, g_enroll, g_enroll_s, g_compare] + _generate_advanced()


def _cacheable(outputs: Sequence[Any]) -> tuple:
    """Outputs Gradio's example cache can read back: it writes an empty output (None) as an
    empty string that it then cannot load (JSONDecodeError, the example never shows), while
    an update that empties the component round-trips."""
    return tuple(gr.update(value=None) if o is None else o for o in outputs)


def _generate_examples(ctx: Ctx, inputs, outputs) -> None:
    rows = [[example("astronaut.mp4"), example("hello.wav"), DEMO_IDENTITY],
            [example("astronaut.png"), example("demo_sentence.wav"), NONE_IDENTITY]]
    rows = [e for e in rows if all(e)]
    if not rows:
        return
    # cached at launch, only when Wav2Lip is there to make them; not lazily: Gradio 6 turns
    # the empty-output update of _cacheable into a component outside an event and fails
    can_cache = bool(ctx.cache_examples) and ctx.st.wav2lip_error is None
    gen = ctx.h["generate"]
    gr.Examples(rows, inputs[:3], outputs=outputs if can_cache else None,
                fn=(lambda face, audio, ident: _cacheable(gen(face, audio, ident)))
                if can_cache else None,
                cache_examples=can_cache, cache_mode="eager" if can_cache else None,
                label="Examples (public-domain face, synthetic speech)", elem_id="gen-examples")


def _generate_tab(ctx: Ctx) -> gr.Dropdown:
    with gr.Tab("Generate", id="generate"):
        if ctx.st.wav2lip_error:
            gr.Markdown("**Generate is unavailable: the Wav2Lip checkpoint is missing** "
                        "(see Status above for how to supply it). The Robustness and "
                        "Enroll tabs work without it.")
        with gr.Row():
            with gr.Column():
                inputs = _generate_inputs(ctx)
                g_btn = gr.Button("Generate", variant="primary", elem_id="gen-run",
                                  interactive=ctx.st.wav2lip_error is None)
            with gr.Column():
                with gr.Row():
                    g_out = gr.Video(label="LaDTalk (Wav2Lip + SOVQAE)", elem_id="gen-out")
                    g_base = gr.Video(label="Wav2Lip only", elem_id="gen-base")
                g_report = gr.JSON(label="Report", elem_id="gen-report")
        outputs = [g_out, g_base, g_report]
        g_btn.click(ctx.h["generate"], inputs, outputs, api_name="generate", **GPU_QUEUE)
        _generate_examples(ctx, inputs, outputs)
    return inputs[2]


# ---------------------------------------------------------------------------- Robustness
ROBUSTNESS_INTRO = (
    "Degrade a face the way Wav2Lip's output is degraded (blur, noise, down to 96 px and back "
    "up), restore it with an identity's SOVQAE, and see how much comes back. Use a picture of "
    "the identity's own person: the identity preselected here (the first enrolled one, else "
    "the shipped `demo`) is only a demonstration on its own face, and the demo identity was "
    "trained on the astronaut example.")


PLOT_COLOURS = {"degraded": "#d62728", "restored": "#2ca02c"}


def _robustness_inputs(ctx: Ctx) -> List[gr.components.Component]:
    choices = identity_choices(include_none=False, access=ctx.visitor)
    r_image = gr.Image(label="Face image", type="filepath", format="png", elem_id="rob-image",
                       sources=["upload", "clipboard"])
    with gr.Accordion("... or a frame of a video", open=False):
        r_video = gr.Video(label="Video", sources=["upload"])
        r_time = gr.Number(0.0, label="frame at (s)")
    r_identity = gr.Dropdown(choices=choices, value=default_identity(choices),
                             allow_custom_value=True, label="Identity")
    r_blur = gr.Slider(0, 6, value=2.0, step=0.25, label="Blur sigma (px)")
    r_noise = gr.Slider(0, 0.4, value=0.1, step=0.01, label="Noise sigma ([0,1] pixel scale)")
    r_down = gr.Slider(0, 120, value=96, step=8,
                       label="Down-up size (px, 0 = off; Wav2Lip works at 96)")
    r_sweep = gr.Radio(list(SWEEPS), value="blur", label="Plot PSNR against the strength of")
    with gr.Row():
        r_cert = gr.Checkbox(label="Compute the Theorem 3.3 certificate", value=True)
        r_is_crop = gr.Checkbox(label="The picture is already a face crop", value=False)
    r_det = gr.Dropdown(list(DETECTORS), value=DEFAULT_DETECTOR, label="Face detector")
    return [r_image, r_video, r_time, r_identity, r_blur, r_noise, r_down, r_sweep, r_cert,
            r_is_crop, r_det]


def _robustness_outputs() -> List[gr.components.Component]:
    r_gallery = gr.Gallery(label="Clean / degraded / restored", columns=3,
                           elem_id="rob-gallery", height="auto", object_fit="contain")
    # widths for the three degradations of the defaults (with fewer, the table is narrower):
    # a phone shows every column without scrolling
    r_table = gr.Dataframe(empty_robustness_table(), elem_id="rob-table", interactive=False,
                           label="PSNR / SSIM against the clean crop", wrap=True,
                           column_widths=robustness_column_widths(3))
    # no fixed height: a fixed one clips the legend
    r_plot = gr.LinePlot(x="strength", y="PSNR", color="face", color_map=PLOT_COLOURS,
                         x_title=SWEEP_AXES["blur"], y_title="PSNR (dB)",
                         label="PSNR against the clean crop, by degradation strength",
                         elem_id="rob-plot")
    r_cert_md = gr.Markdown(label="Certificate", elem_id="rob-cert")
    r_json = gr.JSON(label="Raw numbers")
    return [r_gallery, r_table, r_plot, r_cert_md, r_json]


def _robustness_tab(ctx: Ctx) -> gr.Dropdown:
    with gr.Tab("Robustness", id="robustness"):
        gr.Markdown(ROBUSTNESS_INTRO)
        with gr.Row():
            with gr.Column():
                inputs = _robustness_inputs(ctx)
                r_btn = gr.Button("Degrade and restore", variant="primary", elem_id="rob-run")
            with gr.Column():
                outputs = _robustness_outputs()
        r_btn.click(ctx.h["robustness"], inputs, outputs, api_name="robustness", **GPU_QUEUE)
        r_image, r_identity, r_blur, r_noise, r_down = (inputs[i] for i in (0, 3, 4, 5, 6))
        rob = ctx.h["robustness"]
        if example("astronaut.png") and any(
                v == DEMO_IDENTITY for _, v in identity_choices(False, ctx.visitor)):
            gr.Examples([[example("astronaut.png"), DEMO_IDENTITY, 2.0, 0.1, 96]],
                        [r_image, r_identity, r_blur, r_noise, r_down], outputs=outputs,
                        fn=lambda img, ident, b, n, d: rob(
                            img, None, 0.0, ident, b, n, d, "blur", True, False, "auto"),
                        # run on click, not cached: Gradio 6's line plot breaks on a cached
                        # plot value (TypeError in the browser, every output stuck on
                        # "processing"); the run takes about 5 s on 2 CPU cores
                        cache_examples=False, run_on_click=True,
                        label="Example: the shipped demo identity", elem_id="rob-examples")
    return r_identity


# ---------------------------------------------------------------------------- Enroll
ENROLL_INTRO = (
    "Train an identity (SOVQAE) on a video of one person. Ten seconds to a few minutes of "
    "frontal, well-lit video work best; the last 10 % of the frames are held out to measure "
    "quality. The identity works at the face's own size (256 px for faces of 200 px or more, "
    "else 128 px) and learns to restore exactly what Wav2Lip produces (the face reduced to "
    "96 px and softened). At the end, how much of its restoration to mix into Wav2Lip's face "
    "is calibrated on the held-out frames, so that it never does worse than Wav2Lip alone "
    "there, and the result shows LaDTalk against the Wav2Lip proxy on those frames. Running "
    "it again with the same name continues the training.")


def _enroll_inputs(ctx: Ctx) -> List[gr.components.Component]:
    lim = ctx.st.limits
    e_video = gr.Video(label="Video of the person", sources=["upload"], elem_id="enroll-video")
    e_name = gr.Textbox(label="Identity name", placeholder="e.g. alice", elem_id="enroll-name")
    e_budget = gr.Slider(1, lim.enroll_budget_max, value=lim.enroll_budget_default, step=1,
                         label="Training time budget (s)", elem_id="enroll-budget")
    with gr.Row():
        e_config = gr.Dropdown(list(ENROLL_CONFIGS), value="auto", label="Model config",
                               info="auto: cpu on CPU, base on GPU")
        e_det = gr.Dropdown(list(DETECTORS), value=DEFAULT_DETECTOR, label="Face detector")
    # on its own line: beside the dropdowns a narrow screen squeezes its label away
    e_fresh = gr.Checkbox(label="Start over (ignore an existing identity of this name)",
                          value=False)
    with gr.Accordion("Push to your own Hugging Face Hub repo (optional)", open=False):
        e_repo = gr.Textbox("", label="Repository", placeholder="your-user/ladtalk-alice")
        e_token = gr.Textbox("", label="Write token (used once, never stored)",
                             type="password")
        e_private = gr.Checkbox(label="Private repository", value=True)
    return [e_video, e_name, e_budget, e_config, e_det, e_fresh, e_repo, e_token, e_private]


def _enroll_tab(ctx: Ctx):
    """The Enroll tab; returns its click event (the pickers refresh after it)."""
    with gr.Tab("Enroll", id="enroll"):
        gr.Markdown(ENROLL_INTRO)
        with gr.Row():
            with gr.Column():
                inputs = _enroll_inputs(ctx)
                e_btn = gr.Button("Enroll", variant="primary", elem_id="enroll-run")
            with gr.Column():
                e_md = gr.Markdown(label="Summary", elem_id="enroll-summary")
                e_meta = gr.JSON(label="Identity metrics (meta.json)", elem_id="enroll-meta")
                e_file = gr.File(label="Download the identity weights (safetensors)",
                                 elem_id="enroll-file")
        event = e_btn.click(ctx.h["enroll"], inputs, [e_md, e_meta, e_file],
                            api_name="enroll", **GPU_QUEUE)
        if example("astronaut.mp4"):
            gr.Examples([[example("astronaut.mp4"), "astronaut", 60]], inputs[:3],
                        cache_examples=False,  # enrolling writes an identity: never cached
                        label="Example (public-domain face)", elem_id="enroll-examples")
    return event


# ---------------------------------------------------------------------------- the app
#: Gradio's own cache (uploads, returned files): purged every 10 min of files over 1 h old
#: (and all of it at shutdown)
DELETE_CACHE = (600, 3600)


def _session_hooks(demo: gr.Blocks, ctx: Ctx, pickers) -> None:
    """Per-session pickers on load, and the session's files (and, public mode, its session
    identities) removed when it ends; UI-only endpoints are hidden from the API and MCP."""
    demo.load(ctx.h["pickers"], pickers, pickers, api_visibility="private", queue=False)
    demo.unload(ctx.h["unload"])


#: the app's style sheet (passed to ``launch`` by ``launch_options``). Gradio's prose lets a
#: table cell break anywhere, so on a phone the browser squeezes the columns of a markdown
#: table until headers and numbers break mid-word; here cells wrap between words only, with
#: a little less padding, and the app's four-column tables fit 390 px
APP_CSS = """
.prose table th, .prose table td {
  overflow-wrap: normal; word-break: normal; padding-left: 0.6em; padding-right: 0.6em;
}
"""


class LadTalkBlocks(gr.Blocks):
    """The app's Blocks: ``ladtalk_state`` is its :class:`AppState`; closing it also removes
    its temp space."""

    ladtalk_state: Optional[AppState] = None

    def close(self, *args, **kwargs):
        try:
            return super().close(*args, **kwargs)
        finally:
            if self.ladtalk_state is not None:
                self.ladtalk_state.space.close()


def build_ui(st: AppState, queue_size: int = 16, cache_examples: bool = True) -> gr.Blocks:
    """The whole app of one state, queued (GPU work one request at a time)."""
    h = make_handlers(st)
    ctx = Ctx(st, h, cache_examples)
    atexit.register(st.space.close)  # an app that is never closed cleans up at exit
    with LadTalkBlocks(title="LaDTalk", delete_cache=DELETE_CACHE) as demo:
        demo.ladtalk_state = st
        gr.Markdown(INTRO)
        if st.public and oauth_enabled():
            gr.LoginButton(value="Sign in with Hugging Face to keep your identities")
        _status_panel(st)
        g_identity = _generate_tab(ctx)
        r_identity = _robustness_tab(ctx)
        enrolled = _enroll_tab(ctx)
        pickers = [g_identity, r_identity]
        enrolled.success(h["pickers"], pickers, pickers, api_visibility="private",
                         queue=False)
        _session_hooks(demo, ctx, pickers)
        gr.api(h["identities"], api_name="identities")
        # callable by clients, but not an MCP tool (nor in the API page)
        gr.api(h["status"], api_name="status", api_visibility="undocumented")
    demo.queue(max_size=queue_size, default_concurrency_limit=4)
    return demo
