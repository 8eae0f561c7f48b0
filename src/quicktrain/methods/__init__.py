"""Training techniques, one a module, each a pure function first and (where it must act inside the step) a small
`Method` with no-op defaults. Every one can be switched off by one config field."""

from quicktrain.methods.base import Method, hooks
from quicktrain.methods.ema import EMA, ema_update_
from quicktrain.methods.label_smoothing import smooth_cross_entropy
from quicktrain.methods.progressive_resize import ProgressiveResize, resize, size_at
from quicktrain.methods.tta import tta_logits, tta_views

__all__ = [
    "EMA",
    "Method",
    "ProgressiveResize",
    "ema_update_",
    "hooks",
    "resize",
    "size_at",
    "smooth_cross_entropy",
    "tta_logits",
    "tta_views",
]
