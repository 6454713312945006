"""`cascade.one_shot.generate / edit / prior_upscale`, the names the README has always shown; the code
is in cascade/inference/one_shot.py (kept here so that scripts written for earlier releases run unchanged)."""

from .inference.one_shot import contact_sheet, edit, generate, harmonize, plan, prior_upscale

__all__ = ["contact_sheet", "edit", "generate", "harmonize", "plan", "prior_upscale"]
