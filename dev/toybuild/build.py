"""Build the toy-world checkpoint from nothing: pictures, autoencoder, text encoder, UNet.

    .venv/bin/python -m dev.toybuild.build            # about an hour on a 2-core CPU (64 min measured)

Stages (each seeded; intermediate results are kept in --work so a rerun resumes after the last finished
stage):
1. the text encoder: seeded random weights, frozen (the UNet learns to read it); only the rows of words the
   world uses are non-zero;
2. the autoencoder (TAESD format): trained on crops of world pictures;
3. a provisional checkpoint with these two is loaded through the host's own loader, and every training
   picture and caption is encoded with the host's VAE, latent format and CLIP objects, so the UNet learns
   exactly what the host will feed it;
4. the UNet: the SD1 noise-prediction objective on the host's noise schedule, with caption dropout for
   classifier-free guidance, min-SNR weighting and an exponential moving average of its weights;
5. the checkpoint, in fp16, with the build's settings and the hash of its tensors in its metadata.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..toyworld import model as toy_model
from ..toyworld import world

log = logging.getLogger("dev.toybuild.build")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = toy_model.CHECKPOINT


@dataclass(frozen=True)
class BuildSettings:
    seed: int = 20261130
    pictures: int = 10000
    caption_drop: float = 0.15  # each attribute left out of a caption with this probability
    empty_caption: float = 0.1  # share of empty captions, for classifier-free guidance
    ae_steps: int = 600
    ae_batch: int = 16
    ae_crop: int = 64
    ae_lr: float = 5e-4
    unet_steps: int = 6000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    unet_warmup: int = 200
    ema_decay: float = 0.999
    min_snr: float = 5.0
    # Every this many steps (0: never) the training weights restart from their EMA. An earlier model was
    # built so; at equal steps the restarts cost shape accuracy (README, the GPU sweep), so they are off.
    ema_restart_every: int = 0


UNET_ONLY = ("unet_steps", "unet_batch", "unet_lr", "unet_warmup", "ema_decay", "min_snr", "ema_restart_every")


# ---- stage 1: text encoder ------------------------------------------------------------------------------

def _seeded_fill(module: torch.nn.Module, seed: int) -> None:
    # Not dev/harness/tiny_models' initialiser: that one fills logit_scale without drawing from the
    # generator, which would shift every later draw, and the committed weights depend on this order.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(math.prod(param.shape[1:])))
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def world_token_ids(clip) -> list[int]:
    """Token ids of every word the world's captions and the trainer's templates use, with start and end."""
    ids = set()
    for word in world.vocabulary():
        for token, _weight in clip.tokenize(word)["l"][0]:
            ids.add(int(token))
    return sorted(ids)


def build_text_encoder(model_config, seed: int):
    import comfy.sd

    clip = comfy.sd.CLIP(model_config.clip_target(), embedding_directory=None)
    _seeded_fill(clip.cond_stage_model, seed)
    ids = world_token_ids(clip)
    table = clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding.weight
    with torch.no_grad():
        keep = torch.zeros(table.shape[0], dtype=torch.bool)
        keep[ids] = True
        table[~keep] = 0
    return clip, ids


# ---- stage 2: autoencoder -------------------------------------------------------------------------------

def world_pictures(count: int, seed: int, combinations) -> tuple[list[world.Attributes], np.ndarray]:
    attrs, pixels = [], np.empty((count, world.SIZE, world.SIZE, 3), np.uint8)
    for i in range(count):
        a, image = world.sample(seed * 1_000_003 + i, combinations)
        attrs.append(a)
        pixels[i] = image
    return attrs, pixels


def training_set(s: BuildSettings) -> tuple[list[world.Attributes], np.ndarray, list[str]]:
    """The UNet's training pictures with their labels and captions (some left empty for guidance)."""
    attrs, pixels = world_pictures(s.pictures, s.seed, world.training_combinations())
    rng = random.Random(s.seed + 7)
    captions = ["" if rng.random() < s.empty_caption else world.caption(a, rng, s.caption_drop) for a in attrs]
    return attrs, pixels, captions


def _init_default(module: torch.nn.Module) -> None:
    """The host builds layers without initialising them; give every layer torch's default initialisation."""
    for m in module.modules():
        for cls in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, cls):
                cls.reset_parameters(m)
                break


def _split_signs(conv, shift: float) -> None:
    """Output channels c and c + 3 (c < 3) of `conv` become input channel c + `shift` and 1 - input c."""
    conv.weight[:6].zero_()
    conv.bias[:6].zero_()
    for c in range(3):
        conv.weight[c, c, 1, 1] = 1.0
        conv.bias[c] = shift
        conv.weight[c + 3, c, 1, 1] = -1.0
        conv.bias[c + 3] = 1.0


def _pass_six_channels(conv, taps: tuple[slice, slice], weight: float) -> None:
    """Channels 0-5 of `conv` read only themselves, `weight` at each kernel tap in `taps`."""
    conv.weight[:6].zero_()
    conv.weight[:, :6].zero_()
    for c in range(6):
        conv.weight[(c, c, *taps)] = weight


def _autoencoder_start(ae) -> None:
    """Start the autoencoder as an exact 8 x 8 average-pooling encoder and nearest-neighbour decoder in
    channels 0-5 (RGB and 1 - RGB, so ReLUs pass both signs), with every residual branch switched off;
    training then only has to add the detail inside each 8 x 8 cell. From torch's default start the same
    training stalls at three times the error."""
    enc, dec = ae.taesd_encoder, ae.taesd_decoder
    with torch.no_grad():
        for m in ae.modules():
            if m.__class__.__name__ == "Block":
                m.conv[-1].weight.zero_()
                m.conv[-1].bias.zero_()
        _split_signs(enc[0], 0.0)
        for down in (enc[2], enc[6], enc[10]):
            _pass_six_channels(down, (slice(1, None), slice(1, None)), 0.25)  # the 2 x 2 cell a stride-2 output covers
        last = enc[14]
        last.weight.zero_()
        last.bias.zero_()
        for c in range(3):
            last.weight[c, c, 1, 1] = 1.0
            last.weight[c, c + 3, 1, 1] = -1.0  # latent = 2 * colour - 1
        _split_signs(dec[1], 1.0)
        for up in (dec[7], dec[12], dec[17]):
            _pass_six_channels(up, (1, 1), 1.0)
        out = dec[19]
        out.weight.zero_()
        out.bias.fill_(0.5)
        for c in range(3):
            out.weight[c, c, 1, 1] = 0.25
            out.weight[c, c + 3, 1, 1] = -0.25


def train_autoencoder(pixels: np.ndarray, s: BuildSettings) -> dict[str, torch.Tensor]:
    import comfy.taesd.taesd as taesd

    torch.manual_seed(s.seed + 2)
    ae = taesd.TAESD()
    _init_default(ae)
    _autoencoder_start(ae)
    params = list(ae.taesd_encoder.parameters()) + list(ae.taesd_decoder.parameters())
    opt = torch.optim.Adam(params, lr=s.ae_lr)
    rng = np.random.default_rng(s.seed + 3)
    cells = (world.SIZE - s.ae_crop) // 8 + 1
    start = time.time()
    for step in range(s.ae_steps):
        lr = s.ae_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / s.ae_steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rng.integers(0, len(pixels), s.ae_batch)
        oy, ox = rng.integers(0, cells, 2) * 8  # crops on the 8-pixel grid, as whole pictures are
        crop = pixels[idx, oy:oy + s.ae_crop, ox:ox + s.ae_crop]
        x = torch.from_numpy(crop).permute(0, 3, 1, 2).float() / 255
        z = ae.taesd_encoder(x)
        # Noise on the latents makes the decoder forgiving of a sampler's imperfect latents.
        y = ae.taesd_decoder(z + 0.1 * z.detach().std() * torch.randn_like(z))
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + 1e-4 * (z ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == s.ae_steps - 1:
            log.info("autoencoder step %d/%d loss %.4f (%.0f s)", step, s.ae_steps, loss.item(), time.time() - start)
    with torch.no_grad():
        sample = torch.from_numpy(pixels[:256]).permute(0, 3, 1, 2).float() / 255
        z = torch.cat([ae.taesd_encoder(chunk) for chunk in sample.split(32)])
    # The host's VAE divides the raw latent by vae_scale and adds vae_shift; the SD1 latent format then
    # multiplies by 0.18215. Choose both so the UNet sees latents of zero mean and unit spread.
    raw_std, raw_mean = z.std().item(), z.mean().item()
    scale = raw_std * 0.18215
    with torch.no_grad():
        ae.vae_scale.fill_(scale)
        ae.vae_shift.fill_(-raw_mean / scale)
    log.info("autoencoder latents: raw mean %.3f std %.3f -> vae_scale %.4f", raw_mean, raw_std, scale)
    return {k: v.detach().clone() for k, v in ae.state_dict().items()}


# ---- the checkpoint -------------------------------------------------------------------------------------

def tensors_hash(state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].contiguous().reshape(-1)
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_state_dict(model, clip, token_ids: list[int], vae_sd: dict) -> dict[str, torch.Tensor]:
    state = model.state_dict_for_saving(clip.get_sd(), dict(vae_sd))  # (the host renames keys in place)
    table_key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    table = state.pop(table_key)
    state.update(toy_model.compact_token_table(table, token_ids))
    state.pop("cond_stage_model.transformer.text_model.embeddings.position_ids", None)
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def write_checkpoint(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> str:
    import comfy.utils

    digest = tensors_hash(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    comfy.utils.save_torch_file(state, str(tmp), metadata={**metadata, "toyworld.tensors_sha256": digest})
    tmp.replace(path)
    return digest


def load_through_host(path: Path):
    """(model patcher, CLIP, VAE) exactly as CheckpointLoaderSimple gives them."""
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return model, clip, vae


# ---- stage 3: encode through the host -------------------------------------------------------------------

def encode_pictures(vae, pixels: np.ndarray, latent_format, batch: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(pixels), batch):  # (the host's encode keeps autograd on)
        images = torch.from_numpy(pixels[i:i + batch]).float() / 255  # the host's IMAGE: B, H, W, C in 0..1
        with torch.no_grad():
            out.append(latent_format.process_in(vae.encode(images)).float())
    return torch.cat(out)


def encode_captions(clip, captions: list[str]) -> tuple[torch.Tensor, list[int]]:
    """(unique encodings, index of each caption's encoding)."""
    unique = sorted(set(captions))
    where = {text: i for i, text in enumerate(unique)}
    encodings = torch.empty(len(unique), 77, toy_model.WIDTH, dtype=torch.float16)
    with torch.no_grad():
        for i, text in enumerate(unique):
            encodings[i] = clip.encode_from_tokens(clip.tokenize(text))[0].half()
    return encodings, [where[t] for t in captions]


# ---- stage 4: the UNet ----------------------------------------------------------------------------------

def train_unet(unet: torch.nn.Module, model_sampling, latents: torch.Tensor, encodings: torch.Tensor,
               caption_index: torch.Tensor, s: BuildSettings, snapshot_every: int = 0,
               on_snapshot=None, stop_after: int = 0) -> dict[str, torch.Tensor] | None:
    """The UNet's averaged (EMA) weights after training; `on_snapshot(step, ema)` every `snapshot_every`
    (it must leave `unet` as it found it). `stop_after` ends the run early and returns None: enough to
    compare a build's loss log with an earlier one's without waiting for the whole schedule."""
    torch.manual_seed(s.seed + 5)
    # Every random draw comes from this CPU generator, so a run on another device draws the same batches,
    # timesteps and noise as the CPU build.
    gen = torch.Generator().manual_seed(s.seed + 6)
    device = next(unet.parameters()).device
    opt = torch.optim.AdamW(unet.parameters(), lr=s.unet_lr, weight_decay=0.01)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    # The state dict's tensors share storage with the UNet's, so one list serves every step.
    averaged = [k for k, v in unet.state_dict().items() if v.is_floating_point()]
    live = [unet.state_dict()[k] for k in averaged]
    smooth = [ema[k] for k in averaged]
    sigmas = model_sampling.sigmas.float()
    start = time.time()
    unet.train()
    for step in range(s.unet_steps):
        lr = s.unet_lr * min(1.0, (step + 1) / s.unet_warmup) * 0.5 * (1 + math.cos(math.pi * step / s.unet_steps))
        for group in opt.param_groups:
            group["lr"] = max(lr, s.unet_lr * 0.05)
        idx = torch.randint(0, len(latents), (s.unet_batch,), generator=gen)
        x0 = latents[idx].to(device)
        context = encodings[caption_index[idx]].to(device).float()
        t = torch.randint(0, len(sigmas), (s.unet_batch,), generator=gen)
        sigma = sigmas[t].view(-1, 1, 1, 1).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        # The host's eps model input: (x0 + sigma * noise) / sqrt(sigma^2 + 1), at timestep t.
        xc = (x0 + sigma * noise) / torch.sqrt(sigma ** 2 + 1)
        pred = unet(xc, t.float().to(device), context=context)
        snr = 1 / sigma.view(-1) ** 2
        weight = torch.clamp(snr, max=s.min_snr) / snr
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(s.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(smooth, decay)
            torch._foreach_add_(smooth, live, alpha=1 - decay)
        if step % 100 == 0 or step == s.unet_steps - 1:
            log.info("unet step %d/%d loss %.4f lr %.2e (%.0f s)", step, s.unet_steps, loss.item(), lr,
                     time.time() - start)
        if s.ema_restart_every and step and step % s.ema_restart_every == 0:
            unet.load_state_dict(ema)
        if snapshot_every and step and step % snapshot_every == 0:
            on_snapshot(step, ema)
        if stop_after and step >= stop_after:
            log.info("stopped after unet step %d, as asked; no checkpoint written", step)
            return None
    unet.eval()
    return ema


def untrained_model(s: BuildSettings):
    """(host model config, host model) with the UNet at its seeded starting weights."""
    model_config = toy_model.register()(dict(toy_model.UNET))
    model = model_config.get_model({})
    torch.manual_seed(s.seed + 4)
    _init_default(model.diffusion_model)
    with torch.no_grad():
        for p in model.diffusion_model.out[-1].parameters():
            p.zero_()  # the usual zero-initialised output layer
    return model_config, model


# ---- the command ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "toyworld-build")
    parser.add_argument("--unet-steps", type=int, default=BuildSettings.unet_steps)
    parser.add_argument("--ema-restart-every", type=int, default=BuildSettings.ema_restart_every)
    parser.add_argument("--ae-steps", type=int, default=BuildSettings.ae_steps)
    parser.add_argument("--pictures", type=int, default=BuildSettings.pictures)
    parser.add_argument("--snapshot-every", type=int, default=0,
                        help="also write the EMA UNet's checkpoint to --work every this many steps")
    parser.add_argument("--stop-after", type=int, default=0,
                        help="stop the UNet training after this step, writing nothing (to compare loss logs)")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = BuildSettings(unet_steps=opts.unet_steps, ae_steps=opts.ae_steps, pictures=opts.pictures,
                             ema_restart_every=opts.ema_restart_every)
    work = opts.work
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    from dev.harness import host

    host.boot(work / "host")
    model_config, model = untrained_model(settings)
    clip, token_ids = build_text_encoder(model_config, settings.seed + 1)
    log.info("text encoder: %d trained token rows", len(token_ids))

    attrs, pixels, captions = training_set(settings)
    log.info("%d pictures of %d combinations (%.0f s)", len(attrs), len(world.training_combinations()),
             time.time() - started)

    # Stage results are kept under a key of every setting they depend on (all but the UNet's), so a
    # changed setting never reuses a stale one.
    before_unet = {k: v for k, v in asdict(settings).items() if k not in UNET_ONLY}
    key = hashlib.sha256(json.dumps(before_unet, sort_keys=True).encode()).hexdigest()[:12]
    ae_file = work / f"autoencoder-{key}.pt"
    if ae_file.exists():
        vae_sd = torch.load(ae_file, weights_only=True)
    else:
        vae_sd = train_autoencoder(pixels, settings)
        torch.save(vae_sd, ae_file)

    provisional = work / "provisional.safetensors"
    write_checkpoint(checkpoint_state_dict(model, clip, token_ids, vae_sd), provisional, {})
    _, host_clip, host_vae = load_through_host(provisional)
    encoded_file = work / f"encoded-{key}.pt"
    if encoded_file.exists():
        encoded = torch.load(encoded_file, weights_only=True)
    else:
        t0 = time.time()
        latents = encode_pictures(host_vae, pixels, model_config.latent_format)
        log.info("latents %s mean %.3f std %.3f (%.0f s)", tuple(latents.shape), latents.mean(), latents.std(),
                 time.time() - t0)
        t0 = time.time()
        encodings, index = encode_captions(host_clip, captions)
        log.info("%d distinct captions encoded (%.0f s)", len(encodings), time.time() - t0)
        encoded = {"latents": latents, "encodings": encodings, "index": torch.tensor(index)}
        torch.save(encoded, encoded_file)

    def snapshot(step, ema):
        training = {k: v.detach().clone() for k, v in model.diffusion_model.state_dict().items()}
        model.diffusion_model.load_state_dict(ema)
        write_checkpoint(checkpoint_state_dict(model, clip, token_ids, vae_sd), work / f"snapshot-{step}.safetensors", {})
        model.diffusion_model.load_state_dict(training)  # a snapshot must not change the run
        log.info("snapshot at step %d", step)

    ema = train_unet(model.diffusion_model, model.model_sampling, encoded["latents"], encoded["encodings"],
                     encoded["index"], settings, opts.snapshot_every, snapshot, opts.stop_after)
    if ema is None:
        return 0
    model.diffusion_model.load_state_dict(ema)
    metadata = {"toyworld.build": json.dumps(asdict(settings), sort_keys=True),
                "toyworld.command": "python -m dev.toybuild.build",
                "toyworld.minutes": f"{(time.time() - started) / 60:.1f}"}
    digest = write_checkpoint(checkpoint_state_dict(model, clip, token_ids, vae_sd), opts.out, metadata)
    log.info("wrote %s (%.1f MB, tensors sha256 %s) in %.1f min", opts.out, opts.out.stat().st_size / 2**20,
             digest, (time.time() - started) / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
