"""The host-free training loop and its checkpoints, on a small differentiable stand-in for the model."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from mrti.errors import ConceptFileError, MrtiError
from mrti.training.checkpoint import checkpoint_step, read_checkpoint, restore_state, save_checkpoint
from mrti.training.config import TrainingConfig
from mrti.training.loop import LoopHooks, TrainingDiverged, TrainingLoop, new_state

WIDTHS = {"clip_l": 6, "clip_g": 10}
TEMPLATES = ("a photo of {}", "a drawing of {}")


class Toy:
    """Loss of an example: distance of its vectors to a per-image target, weighted by time, plus noise."""

    def __init__(self, loop_ref: list, nan_at: int | None = None) -> None:
        gen = torch.Generator().manual_seed(42)
        self.targets = {k: torch.randn(1, 2, w, generator=gen) + 0.1 * torch.randn(3, 2, w, generator=gen)
                        for k, w in WIDTHS.items()}
        self.loop_ref, self.nan_at, self.calls = loop_ref, nan_at, []

    def losses(self, examples, vectors):
        out = []
        for ex, vecs in zip(examples, vectors):
            self.calls.append((ex, {k: v.detach().clone() for k, v in vecs.items()}))
            noise = torch.randn((), generator=torch.Generator().manual_seed(ex.noise_seed)) * 0.01
            loss = sum(((vecs[k] - self.targets[k][ex.image]) ** 2).mean() for k in vecs)
            loss = loss * (1.0 + ex.timestep / 1000) + noise
            if self.nan_at is not None and len(self.calls) == self.nan_at:
                loss = loss * float("nan")
            out.append(loss)
        return torch.stack(out)


def make_config(**overrides) -> TrainingConfig:
    values = dict(name="toy", init_word="cat", templates=TEMPLATES, num_scales=4, vectors_per_token=2, steps=20,
                  batch_size=2, gradient_accumulation=2, learning_rate=0.05, scale_lr=False,
                  timestep_sampling="adaptive", seed=7, save_every=0)
    values.update(overrides)
    return TrainingConfig(**values).validate()


def initial():
    return {k: torch.zeros(2, w) for k, w in WIDTHS.items()}


def make_loop(cfg, state=None, hooks=None, nan_at=None):
    ref: list = []
    toy = Toy(ref, nan_at)
    loop = TrainingLoop(cfg, state or new_state(cfg, initial()), toy, num_images=3, num_templates=2, hooks=hooks)
    ref.append(loop)
    return loop, toy


def test_loss_falls_and_every_scale_moves():
    cfg = make_config()
    loop, _ = make_loop(cfg)
    loop.run()
    losses = loop.state.losses
    assert len(losses) == 20 and loop.state.step == 20
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    for key, param in loop.state.embeddings.items():
        assert param.shape == (4, 2, WIDTHS[key])
        for n in range(4):
            assert not torch.equal(param[n], torch.zeros_like(param[n])), f"{key} scale {n} never trained"
    assert sum(loop.state.bucket_counts) == 20 * 4


def test_each_example_uses_its_buckets_vectors():
    cfg = make_config(steps=6, timestep_sampling="uniform")
    loop, toy = make_loop(cfg)
    seen = []

    def check(report):
        for ex in report.examples:
            seen.append(ex.timestep)
    loop.hooks.on_step = check
    start = {k: v.detach().clone() for k, v in loop.state.embeddings.items()}
    loop.step()  # the first step's examples all see the initial vectors
    first = toy.calls[:]
    assert len(first) == 4
    for ex, vecs in first:
        assert ex.bucket == min(ex.timestep * 4 // 1000, 3)
        for key in WIDTHS:
            assert torch.equal(vecs[key], start[key][ex.bucket])
    before = {k: v.detach().clone() for k, v in loop.state.embeddings.items()}
    loop.step()
    for ex, vecs in toy.calls[4:]:
        for key in WIDTHS:
            assert torch.equal(vecs[key], before[key][ex.bucket])


def test_gradient_and_g_equal_autograd_per_example():
    cfg = make_config(steps=1, gradient_accumulation=1, batch_size=3, learning_rate=0.0, weight_decay=0.0)
    loop, toy = make_loop(cfg)
    gen_state = loop.state.generator.get_state()
    report = loop.step()
    # Recompute each example's loss through indexing of the parameters, as plain autograd would.
    loop.state.generator.set_state(gen_state)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in loop.state.embeddings.items()}
    for ex, norm in zip(report.examples, report.grad_norms):
        vecs = {k: params[k][ex.bucket] for k in params}
        single = Toy([])
        loss = single.losses([ex], [vecs])[0]
        grads = torch.autograd.grad(loss, list(params.values()))
        expected = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        assert norm == pytest.approx(expected, rel=1e-5)


def test_interrupted_and_resumed_run_equals_a_straight_one(tmp_path):
    cfg = make_config(steps=20, save_every=5)
    straight, _ = make_loop(cfg)
    straight.run()

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def check_interrupt():
        calls["n"] += 1
        # per step: one check before it and one before its second micro-batch; stop inside step 11
        if calls["n"] == 2 * 10 + 2:
            raise Stop

    saved = []
    cfg_first = cfg
    first, _ = make_loop(cfg_first, hooks=LoopHooks(check_interrupt=check_interrupt,
                                                     on_checkpoint=lambda s: saved.append(s.step)))
    with pytest.raises(Stop):
        first.run()
    assert first.state.step == 10 and saved == [5, 10]
    path = save_checkpoint(tmp_path / "toy.safetensors", first.state, name="toy", init_word="cat",
                           base_family="sdxl", settings=cfg.settings())
    data = read_checkpoint(path)
    assert data.step == 10 and data.name == "toy" and data.settings["seed"] == 7
    resumed, _ = make_loop(cfg, state=restore_state(data, cfg))
    resumed.run()
    for key in WIDTHS:
        assert torch.equal(resumed.state.embeddings[key], straight.state.embeddings[key])
    assert resumed.state.losses == straight.state.losses
    assert resumed.state.bands.state_dict() == straight.state.bands.state_dict()
    assert resumed.state.bucket_counts == straight.state.bucket_counts
    assert torch.equal(resumed.state.generator.get_state(), straight.state.generator.get_state())


def test_nan_loss_stops_with_the_culprit_and_keeps_the_last_good_state():
    cfg = make_config(steps=5)
    loop, _ = make_loop(cfg, nan_at=10)  # the 10th example: step 3, second micro-batch
    with pytest.raises(TrainingDiverged, match=r"step 3: the loss is nan for training image \d with template "
                                               r"'a (photo|drawing) of \{\}' at timestep \d+ \(bucket \d\)"):
        loop.run()
    assert loop.state.step == 2 and len(loop.state.losses) == 2
    assert sum(loop.state.bucket_counts) == 8  # the abandoned step's examples are not counted


def spike(vectors) -> torch.Tensor:
    """Zero in value, with a gradient that overflows float32 (3e38 x 10 per element)."""
    return sum(((v - v.detach()).sum() * 3e38) * 10 for vecs in vectors for v in vecs.values())


def test_fp16_overflow_skips_the_step_and_lowers_the_scale():
    cfg = make_config(steps=3, precision="fp16", gradient_accumulation=1)
    loop, toy = make_loop(cfg)
    original = toy.losses
    calls = {"n": 0}

    def overflowing(examples, vectors):
        calls["n"] += 1
        losses = original(examples, vectors)
        return losses + spike(vectors) if calls["n"] == 2 else losses
    toy.losses = overflowing
    scale = loop.state.scaler.scale
    loop.step()
    before = {k: v.detach().clone() for k, v in loop.state.embeddings.items()}
    report = loop.step()
    assert report.skipped and loop.state.scaler.scale == scale / 2 and math.isfinite(report.loss)
    assert all(torch.equal(before[k], loop.state.embeddings[k]) for k in before)
    assert not loop.step().skipped


def test_non_finite_gradient_without_loss_scaling_is_an_error():
    cfg = make_config(steps=2, gradient_accumulation=1)
    loop, toy = make_loop(cfg)
    original = toy.losses
    toy.losses = lambda ex, vecs: original(ex, vecs) + spike(vecs)
    with pytest.raises(TrainingDiverged, match="gradient"):
        loop.step()
    assert loop.state.step == 0


def test_checkpoint_file_is_safetensors_with_json(tmp_path):
    cfg = make_config(steps=2)
    loop, _ = make_loop(cfg)
    loop.run()
    path = save_checkpoint(tmp_path / "c.safetensors", loop.state, name="toy", init_word="cat",
                           base_family="sdxl", settings=cfg.settings())
    assert checkpoint_step(path) == 2
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        data = json.loads(handle.metadata()["mrti.checkpoint"])
    assert {"rng", "embeddings.clip_l", "embeddings.clip_g", "adamw.exp_avg.clip_l", "adamw.exp_avg_sq.clip_g",
            "adamw.step.clip_l"} <= keys
    assert data["step"] == 2 and len(data["losses"]) == 2 and len(data["bands"]["estimate"]) == 50
    restored = restore_state(read_checkpoint(path), cfg)
    for param in restored.embeddings.values():
        moments = restored.optimizer.state[param]
        assert float(moments["step"]) == 2.0


def test_checkpoint_of_an_earlier_version_reads_with_current_setting_names(tmp_path):
    # Checkpoints written before the trainer's `resolution` became `image_size` still resume and compare.
    cfg = make_config(steps=1)
    loop, _ = make_loop(cfg)
    loop.run()
    old = {("resolution" if key == "image_size" else key): value for key, value in cfg.settings().items()}
    path = save_checkpoint(tmp_path / "old.safetensors", loop.state, name="toy", init_word="cat",
                           base_family="sdxl", settings=old)
    assert read_checkpoint(path).settings == cfg.settings()


def test_bad_checkpoints_name_the_file(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(ConceptFileError, match="nothing.safetensors.*does not exist"):
        read_checkpoint(missing)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ConceptFileError, match="junk.safetensors"):
        read_checkpoint(junk)
    assert checkpoint_step(junk) is None
    from safetensors.torch import save_file
    plain = tmp_path / "plain.safetensors"
    save_file({"clip_l": torch.zeros(1, 1, 4)}, str(plain))
    with pytest.raises(ConceptFileError, match="not a training checkpoint"):
        read_checkpoint(plain)
    broken = tmp_path / "broken.safetensors"
    save_file({"rng": torch.zeros(3, dtype=torch.uint8)}, str(broken),
              metadata={"mrti.checkpoint_version": "1", "mrti.checkpoint": json.dumps({"step": 1})})
    with pytest.raises(ConceptFileError, match="broken.safetensors: checkpoint is incomplete"):
        read_checkpoint(broken)


def test_objective_shape_is_checked():
    cfg = make_config(steps=1)
    loop, toy = make_loop(cfg)
    toy.losses = lambda ex, vecs: torch.zeros(())
    with pytest.raises(MrtiError, match="shape"):
        loop.step()
