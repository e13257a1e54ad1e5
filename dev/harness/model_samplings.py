"""Stock model-sampling patches (comfy_extras.nodes_model_advanced) that give the tiny SD1 model another
notion of time, and what each of the pack's nodes must say about them."""
from __future__ import annotations

SUPPORTED_TEXT = "SD1.x, SD2.x, SDXL"

# (stock node, its inputs, text the trainer's refusal must contain, text the prompt node's must contain);
# None: served.
SAMPLINGS = [
    ("ModelSamplingSD3", {"shift": 3.0}, "flow matching", "flow matching"),
    ("ModelSamplingFlux", {"max_shift": 1.15, "base_shift": 0.5, "width": 64, "height": 64},
     "flow matching (Flux)", "flow matching (Flux)"),
    ("ModelSamplingContinuousEDM", {"sampling": "edm_playground_v2.5", "sigma_max": 120.0, "sigma_min": 0.002},
     "continuous EDM", "continuous EDM"),
    ("ModelSamplingContinuousV", {"sampling": "v_prediction", "sigma_max": 500.0, "sigma_min": 0.03},
     "continuous-time v prediction", "continuous-time v prediction"),
    ("ModelSamplingDiscrete", {"sampling": "img_to_img", "zsnr": False}, "image-to-image prediction",
     "image-to-image prediction"),
    ("ModelSamplingDiscrete", {"sampling": "lcm", "zsnr": False}, "a distilled table of 50 sigmas", None),
    ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": True}, None, None),
    ("ModelSamplingDiscrete", {"sampling": "x0", "zsnr": False}, None, None),
]


def sampling_id(node: str, inputs: dict) -> str:
    return f"{node}-{inputs.get('sampling', '')}"
