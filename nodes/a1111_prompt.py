"""The host side of the A1111 prompt (mrti/prompt_editing.py): the model timestep of every sampler step,
computed the way the host's KSampler computes its sigmas, and the line saying for which schedule the
prompt is exact."""
from __future__ import annotations

from dataclasses import dataclass

import comfy.samplers
import torch

from ..mrti.concept import ConceptSet
from ..mrti.errors import MrtiError
from ..mrti.prompt_editing import EditedPrompt, a1111_prompt
from ..mrti.prompt_syntax import Mode, Resolution
from .model_support import prompt_edges, standard_sampling

# Samplers seen to call the model exactly once per step, at that step's sigma (host 0.3.75, counted in
# tests/integration/test_ti_export_host.py). Others call it more often (heun, dpm_2, dpmpp_sde, ...):
# A1111 counts model calls, not steps, in prompt editing, so the prompt is not exact for them.
ONE_CALL_PER_STEP = ("euler", "euler_ancestral", "lms", "dpmpp_2m", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
                     "res_multistep", "res_multistep_ancestral", "gradient_estimation")

# ComfyUI scheduler -> the A1111 "Schedule type" built from the same formula (A1111's
# modules/sd_schedulers.py and k-diffusion's get_sigmas_*, read for this mapping). Same formula, same
# table: same sigmas up to float rounding, which was not checked against a running A1111.
A1111_SCHEDULE_TYPE = {
    "normal": "Normal (or Uniform)",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "ddim_uniform": "DDIM",
}


@dataclass(frozen=True)
class StepSchedule:
    sigmas: tuple[float, ...]  # one per step, the sigma of the step's (first) model call
    timesteps: tuple[int, ...]
    table: str


def _check_finite(step_sigmas: torch.Tensor, sampler_name: str, scheduler: str, steps: int) -> None:
    # A NaN sigma maps to some timestep all the same (kl_optimal at 1 step gave timestep 0), and the
    # prompt would be called exact for a run whose sampler computes nothing meaningful.
    bad = (~torch.isfinite(step_sigmas)).nonzero().flatten().tolist()
    if bad:
        raise MrtiError(f"scheduler {scheduler} at {steps} step{'' if steps == 1 else 's'} (sampler {sampler_name}) "
                        f"gives sigma {float(step_sigmas[bad[0]])} for step {bad[0]} in the host's own schedule: "
                        "that run does not sample, so no A1111 prompt can match it; choose more steps or another "
                        "scheduler")


def step_schedule(model, sampler_name: str, scheduler: str, steps: int) -> StepSchedule:
    """The per-step sigmas and model timesteps of a full-denoise KSampler run (denoise 1.0)."""
    prompt_edges(model)  # refuses a model whose time is not the 0-999 step, naming it
    if sampler_name not in comfy.samplers.KSampler.SAMPLERS:
        raise MrtiError(f"unknown sampler {sampler_name!r}")
    if scheduler not in comfy.samplers.KSampler.SCHEDULERS:
        raise MrtiError(f"unknown scheduler {scheduler!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MrtiError(f"steps must be a positive integer, got {steps!r}")
    sampling = standard_sampling() if model is None else model.get_model_object("model_sampling")
    # As KSampler.calculate_sigmas: these samplers get one more step and drop the penultimate sigma.
    discard = sampler_name in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    with torch.inference_mode(False):
        sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, steps + (1 if discard else 0))
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        step_sigmas = sigmas[:-1].detach().to("cpu", torch.float32)
        _check_finite(step_sigmas, sampler_name, scheduler, steps)
        timesteps = sampling.timestep(step_sigmas.to(sampling.sigmas.device)).to("cpu")
    table_sigmas = sampling.sigmas.detach().to("cpu", torch.float32)
    where = ("the standard SD1/SD2/SDXL noise table (no MODEL connected)" if model is None
             else f"the MODEL's noise table ({type(model.model).__name__})")
    table = (f"{where}: {len(table_sigmas)} sigmas, {float(table_sigmas.min()):.6g} to "
             f"{float(table_sigmas.max()):.6g}")
    return StepSchedule(tuple(float(s) for s in step_sigmas), tuple(int(t) for t in timesteps.tolist()), table)


def exactness_note(sampler_name: str, scheduler: str, steps: int, schedule: StepSchedule) -> str:
    """One line: "exact for" the schedule and the A1111 settings that match it, or "NOT exact" and why."""
    computed = (f"ComfyUI sampler {sampler_name}, scheduler {scheduler}, {steps} steps, denoise 1.0, on "
                f"{schedule.table}")
    problems = []
    taken = len(schedule.timesteps)
    if taken != steps:
        problems.append(f"this scheduler gives {taken} steps, not {steps}")
    if sampler_name not in ONE_CALL_PER_STEP:
        problems.append(f"{sampler_name} calls the model more than once per step (or is not known to call it "
                        "once), and A1111 prompt editing counts model calls; use a one-call-per-step sampler "
                        "such as euler or dpmpp_2m")
    a1111 = A1111_SCHEDULE_TYPE.get(scheduler)
    if a1111 is None:
        problems.append(f"A1111 has no schedule type known to give the sigmas of {scheduler}")
    if problems:
        return f"NOT exact: {'; '.join(problems)} (switch steps computed for {computed})"
    return (f"exact for {computed}; in A1111/Forge: Sampling steps {steps}, a one-call-per-step sampler (Euler, "
            f"Euler a, LMS, DPM++ 2M), Schedule type {a1111}, no hires fix")


def a1111_prompt_output(concepts: ConceptSet, text: str, mode: Mode, resolution: Resolution, model,
                        sampler_name: str, scheduler: str, steps: int) -> tuple[EditedPrompt, str]:
    """The A1111 prompt for ``text`` and the note saying for which schedule it is exact."""
    schedule = step_schedule(model, sampler_name, scheduler, steps)
    edited = a1111_prompt(text, concepts.num_scales_by_name(), mode, resolution, schedule.timesteps)
    return edited, exactness_note(sampler_name, scheduler, steps, schedule)
