"""Upscaling to images larger than memory: `upscale_to_file` (upscale.py) runs the streamed engine
(engine.py) over a state folder on disk (state.py) and writes the output by rows (files.py)."""

from .upscale import STREAM_ABOVE, upscale_to_file

__all__ = ["STREAM_ABOVE", "upscale_to_file"]
