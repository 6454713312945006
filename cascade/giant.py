"""`cascade.giant.upscale_to_file`, the name the README has always shown; the code is in
cascade/inference/streamed/ (kept here so that scripts written for earlier releases run unchanged)."""

from .inference.streamed import STREAM_ABOVE, upscale_to_file

__all__ = ["STREAM_ABOVE", "upscale_to_file"]
