"""The Gradio app: limits, GPU calls, handlers, presenters and the UI (the only part that
imports gradio and spaces). ``create_demo`` builds it; the root ``app.py`` launches it."""

# ZeroGPU wants ``spaces`` imported before torch touches CUDA: zerogpu goes first.
from ladtalk.app import zerogpu  # noqa: I001
from ladtalk.app.demo import app_limits, create_demo, launch_options

ZERO_GPU = zerogpu.ZERO_GPU

__all__ = ["ZERO_GPU", "app_limits", "create_demo", "launch_options"]
