"""TimestepConditioningScheduler: a prompt with concept tags -> CONDITIONING scheduled per sampler step."""
from __future__ import annotations

from comfy_api.latest import io

from ..mrti.concept import ConceptSet
from ..mrti.errors import MrtiError
from ..mrti.prompt_syntax import Mode, parse_prompt, parse_resolution
from . import host_contacts
from .checked_combo import CheckedCombo
from .concept_type import MultiResConcepts
from .model_support import prompt_edges
from .prompt_encoding import encode_schedule

MODEL_TOOLTIP = ("The MODEL you sample with, after any sampling patch (e.g. ModelSamplingDiscrete). The "
                 "concept's bands then switch exactly where this model's timestep does, and models whose "
                 "time is not a 0-999 step (Flux, SD3, EDM) are refused. Unconnected: the standard "
                 "SD1/SD2/SDXL noise table is assumed.")


class TimestepConditioningScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TimestepConditioningScheduler",
            display_name="Multires Prompt (Timestep Scheduled)",
            category="conditioning/multires",
            description="Encodes a prompt whose <concept> tags use a different learned embedding per band of "
                        "diffusion time: <S|i|> Fixed, <S(i)> Semi, <S[i]> Fully. Works with every stock sampler.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP model used to encode the prompt."),
                MultiResConcepts.Input("concepts", optional=True,
                                       tooltip="The concepts the prompt's tags may name (from "
                                               "Load Multires Embedding)."),
                # The frontend's dynamic prompts pick one of {a|b|c} before queueing; their '|' would tear
                # Fixed tags such as <jane|0|> apart, so the box keeps its text as written.
                io.String.Input("text", multiline=True, dynamic_prompts=False,
                                default="a painting of a dog in the style of <demo(3)>",
                                tooltip="The prompt. <name|i|>, <name(i)>, <name[i]> use concept 'name' at "
                                        "bucket index i (integer) or diffusion time i (decimal, 0-1); a bare "
                                        "<name> uses the mode and resolution below. Write \\< for a literal <."),
                CheckedCombo("mode", options=[m.value for m in Mode], default=Mode.FULLY.value,
                               tooltip="Mode for bare <name> tags: fixed (one embedding throughout), semi "
                                       "(zero vector up to the resolution, own embeddings above), fully (the "
                                       "resolution's embedding up to it, own embeddings above)."),
                io.String.Input("resolution", default="0",
                                tooltip="Resolution for bare <name> tags: a bucket index (0 = finest) or a "
                                        "diffusion time with a decimal point (0.0-1.0)."),
                io.Boolean.Input("interpolate", default=False,
                                 tooltip="For decimal times: blend the two nearest buckets' embeddings "
                                         "linearly instead of taking the bucket the time falls in."),
                io.Model.Input("model", optional=True, tooltip=MODEL_TOOLTIP),
            ],
            outputs=[io.Conditioning.Output(tooltip="Standard conditioning whose concept embeddings change "
                                                    "with the sampler's timestep.")],
        )

    @classmethod
    def validate_inputs(cls, text: str | None = None):
        # Only the prompt is checked here: the host files a failure under every input this function takes,
        # so each checked input needs a validator of its own. `resolution` fails at run time instead, and
        # `mode` is a CheckedCombo the host checks itself. A linked text arrives as None.
        if text is None:
            return True
        try:
            parse_prompt(text)
        except MrtiError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, clip, text: str, mode: str, resolution: str, interpolate: bool,
                concepts: ConceptSet | None = None, model=None) -> io.NodeOutput:
        host_contacts.require(host_contacts.PROMPT, clip=clip, model=model)
        edges = prompt_edges(model)  # refuses an unservable model before any encoding
        if clip is None:
            raise RuntimeError("clip input is invalid: None. If the clip is from a checkpoint loader node, "
                               "your checkpoint does not contain a valid clip or text encoder model.")
        if concepts is None:
            concepts = ConceptSet.empty()
        conditioning = encode_schedule(clip, concepts, text, Mode(mode), parse_resolution(resolution),
                                       interpolate, edges)
        return io.NodeOutput(conditioning)
