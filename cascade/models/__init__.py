"""Networks and their weights: the denoising UNet (unet.py), weights with storage of their own
(weights.py), the EMA (ema.py), and the small classifier and segmenter used by evaluation
(classifier.py, segmenter.py)."""
