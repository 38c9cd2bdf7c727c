"""LaDTalk Gradio app (placeholder until the UI lands): shows what is installed."""

from __future__ import annotations

import gradio as gr

import ladtalk


def create_demo() -> gr.Blocks:
    with gr.Blocks(title="LaDTalk") as demo:
        gr.Markdown(f"# LaDTalk {ladtalk.__version__}\nTalking-head generation with "
                    "identity-specific detail. The full UI is under construction.")
    return demo


if __name__ == "__main__":
    create_demo().launch()
