"""The trainer's model side on the host: prompts with the concept's vectors through the host's CLIP,
the denoising loss through the host's diffusion model and its model sampling.

Prompts go through the host's tokenizer (on a copy, with an ``embedding:`` lookup for our slot) and
``CLIP.encode_from_tokens``, so clip-skip, weights and chunking are the host's own; the diffusion model is
called through ``BaseModel.apply_model`` (and the model's ``model_function_wrapper`` if it has one), with
the conditioning the model's own ``extra_conds`` builds, so SDXL gets its pooled-output vector.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

import comfy.conds
import comfy.patcher_extension

from ...mrti.errors import MrtiError
from ...mrti.training.loop import Example
from ...mrti.training.templates import fill
from ..clip_slots import clip_with_slots, encoder_widths, slot_word, text_encoders

SLOT = slot_word("train")


def init_vectors(clip, word: str, vectors_per_token: int) -> dict[str, torch.Tensor]:
    """The input embedding of ``word`` in every text encoder, as ``[V, width]`` (V identical rows)."""
    out = {}
    for key, tokenizer in text_encoders(clip).items():
        ids = tokenizer.tokenizer(word)["input_ids"]
        inner = ids[tokenizer.tokens_start:-1] if tokenizer.tokenizer_adds_end_token else ids[tokenizer.tokens_start:]
        if len(inner) != 1:
            pieces = [tokenizer.inv_vocab.get(i, str(i)) for i in inner]
            raise MrtiError(f"init_word {word!r} is {len(inner)} tokens for {key} ({' '.join(pieces)}); "
                            "choose a word the tokenizer keeps whole, such as 'dog' or 'painting'")
        encoder = getattr(clip.cond_stage_model, key, None)
        if encoder is None or not hasattr(encoder, "transformer"):
            raise MrtiError(f"clip: cannot find the {key} text encoder's input embeddings")
        table = encoder.transformer.get_input_embeddings().weight
        row = table[inner[0]].detach().to("cpu", torch.float32)
        if row.shape[-1] != tokenizer.embedding_size:
            raise MrtiError(f"clip: {key} embeddings are {row.shape[-1]} wide, its tokenizer expects "
                            f"{tokenizer.embedding_size}")
        out[key] = row.unsqueeze(0).repeat(vectors_per_token, 1).clone()
    return out


def typical_word_lengths(clip) -> dict[str, float]:
    """The median length of each text encoder's token embeddings: the scale a learned vector should keep."""
    out = {}
    for key in text_encoders(clip):
        encoder = getattr(clip.cond_stage_model, key, None)
        if encoder is not None and hasattr(encoder, "transformer"):
            lengths = encoder.transformer.get_input_embeddings().weight.detach().float().norm(dim=-1)
            lengths = lengths[lengths > 0]  # a compacted table (the toy world's) keeps unused rows at zero
            if len(lengths):
                out[key] = float(lengths.median())
    return out


class PromptTokens:
    """Each template tokenized once by the host, with marker vectors where the concept goes; per
    example the markers are swapped for that example's vectors (the host keeps them as tensors)."""

    def __init__(self, clip, templates: Sequence[str], vectors_per_token: int) -> None:
        self.clip = clip
        markers = {key: torch.zeros(vectors_per_token, width) for key, width in encoder_widths(clip).items()}
        encoder = clip_with_slots(clip, lambda key, word: markers[key] if word == SLOT else None)
        self.tokens = []
        self.slots = []  # per template: [(section key, chunk, position, encoder key, vector index)]
        for template in templates:
            tokens = encoder.tokenize(fill(template, f" embedding:{SLOT} "))
            slots = self._find_markers(tokens, markers)
            for key in markers:
                found = sorted(v for *_, k, v in slots if k == key)
                if found != list(range(vectors_per_token)):
                    raise MrtiError(f"template {template!r}: the concept did not fit into the {key} prompt "
                                    "(is the template too long?)")
            self.tokens.append(tokens)
            self.slots.append(slots)

    @staticmethod
    def _find_markers(tokens: dict, markers: Mapping[str, torch.Tensor]):
        starts = {marker.data_ptr(): key for key, marker in markers.items()}
        found = []
        for section, chunks in tokens.items():
            for c, chunk in enumerate(chunks):
                for p, entry in enumerate(chunk):
                    token = entry[0]
                    if not isinstance(token, torch.Tensor):
                        continue
                    for start, key in starts.items():
                        marker = markers[key]
                        offset = token.data_ptr() - start
                        if 0 <= offset < marker.numel() * marker.element_size() and token.shape == marker.shape[1:]:
                            found.append((section, c, p, key, offset // (marker.shape[1] * marker.element_size())))
        return found

    def tokens_for(self, template: int, vectors: Mapping[str, torch.Tensor]) -> dict:
        tokens = {section: [list(chunk) for chunk in chunks] for section, chunks in self.tokens[template].items()}
        for section, c, p, key, v in self.slots[template]:
            tokens[section][c][p] = (vectors[key][v],) + tuple(tokens[section][c][p][1:])
        return tokens


def discrete_sigmas(model_patcher) -> torch.Tensor:
    """The model's 1000 sigmas, index = timestep (model_support.check_trainable has vouched for them)."""
    sampling = model_patcher.get_model_object("model_sampling")
    with torch.inference_mode(False):
        return sampling.sigmas.detach().to("cpu", torch.float32).clone()


def _cat_cross_attn(conds: list[torch.Tensor]) -> torch.Tensor:
    """One batch of contexts of different lengths (prompts over one 77-token chunk), by the host's own rule."""
    first, *others = (comfy.conds.CONDCrossAttn(cond) for cond in conds)
    return first.concat(others)


class HostObjective:
    """``mrti.training.loop.Objective`` on the host's models; the loss is the model's own prediction
    target (eps or v) because it is measured in the units of the model's raw output."""

    def __init__(self, model_patcher, clip, latents: torch.Tensor, prompts: PromptTokens, pixel_size: int,
                 mirrored: torch.Tensor | None = None) -> None:
        self.patcher, self.clip, self.prompts = model_patcher, clip, prompts
        self.base = model_patcher.model
        # Model-space latents (process_latent_in applied), on the CPU; `mirrored` are those of the pictures
        # flipped left to right, for examples drawn with `flip`.
        self.latents, self.mirrored = latents, mirrored
        self.sigmas = discrete_sigmas(model_patcher)
        self.pixel_size = pixel_size
        self.device = model_patcher.load_device
        self.output_size = int(latents[0].numel())  # eps and v have the latent's shape
        self._contexts: list[torch.Tensor] | None = None
        self._denoised_scales: list[float] = []

    def contexts(self) -> list[torch.Tensor] | None:
        return self._contexts

    def denoised_scales(self) -> list[float]:
        return self._denoised_scales

    def _picture(self, example: Example) -> torch.Tensor:
        if example.flip:
            if self.mirrored is None:
                raise MrtiError("an example asks for a mirrored picture, but the run encoded none (flip is off)")
            return self.mirrored[example.image]
        return self.latents[example.image]

    def losses(self, examples: Sequence[Example], vectors: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        conds, pooled = [], []
        for example, vecs in zip(examples, vectors):
            out = self.clip.encode_from_tokens(self.prompts.tokens_for(example.template, vecs),
                                               return_pooled=True, return_dict=True)
            if out["cond"].requires_grad:
                out["cond"].retain_grad()  # g(t) with respect to the text encoder's output reads it
            conds.append(out["cond"])
            pooled.append(out.get("pooled_output"))
        self._contexts = conds
        device = self.device
        x0 = torch.stack([self._picture(ex) for ex in examples]).to(device)
        noise = torch.stack([torch.randn(self.latents.shape[1:], generator=torch.Generator().manual_seed(ex.noise_seed))
                             for ex in examples]).to(device)
        sigma = self.sigmas[[ex.timestep for ex in examples]].to(device)
        sampling = self.base.model_sampling
        x = sampling.noise_scaling(sigma, noise, x0)
        params = {"device": device, "noise": x, "latent_image": x0, "cross_attn": _cat_cross_attn(conds).to(device),
                  "width": self.pixel_size, "height": self.pixel_size, "prompt_type": "positive"}
        if all(p is not None for p in pooled):
            params["pooled_output"] = torch.cat(pooled).to(device)
        model_conds = {key: cond.cond for key, cond in self.base.extra_conds(**params).items()}
        denoised = self._apply(x, sigma, model_conds, len(examples))
        # calculate_denoised is affine in the raw output: denoised = a(x, sigma) + b(sigma) * output, and
        # the true x0 corresponds to the target output, so (denoised - x0) / b = output - target.
        ones = torch.ones((len(examples), 1, 1, 1), device=device)
        b = sampling.calculate_denoised(sigma, ones, torch.zeros_like(ones))
        self._denoised_scales = b.detach().abs().flatten().double().cpu().tolist()
        error = (denoised.float() - x0.float()) / b
        return error.pow(2).flatten(1).mean(1).cpu()

    def _apply(self, x, sigma, model_conds, batch) -> torch.Tensor:
        options = self.patcher.model_options
        transformer_options = comfy.patcher_extension.merge_nested_dicts(
            {}, options.get("transformer_options", {}), copy_dict1=False)
        transformer_options.update({"cond_or_uncond": [0] * batch, "sigmas": sigma, "uuids": [None] * batch})
        c = {**model_conds, "transformer_options": transformer_options}
        if "model_function_wrapper" in options:
            return options["model_function_wrapper"](self.base.apply_model, {
                "input": x, "timestep": sigma, "c": c, "cond_or_uncond": [0] * batch})
        return self.base.apply_model(x, sigma, **c)
