"""Inference: a trained stage (stage.py) and a cascade of them (pipeline.py); tiled denoising and the
effective receptive field (tiling.py); upscaling with the state on disk (streamed/); one-shot
generation, editing and generative-prior SR (one_shot.py)."""
