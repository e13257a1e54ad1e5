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
from mrti.training.loop import LoopHooks, TrainingDiverged, TrainingLoop, error_norm_factor, new_state
from mrti.training.timesteps import band_of

WIDTHS = {"clip_l": 6, "clip_g": 10}
TEMPLATES = ("a photo of {}", "a drawing of {}")


class Toy:
    """A stand-in model whose raw output error of an example is ``r = (tanh(vectors) - target) * w(t) + noise``:
    the text encoder's output is ``tanh`` of the concatenated vectors, and the loss is ``mean(r^2)``."""

    def __init__(self, loop_ref: list, nan_at: int | None = None) -> None:
        gen = torch.Generator().manual_seed(42)
        self.targets = {k: torch.randn(1, 2, w, generator=gen) + 0.1 * torch.randn(3, 2, w, generator=gen)
                        for k, w in WIDTHS.items()}
        self.loop_ref, self.nan_at, self.calls = loop_ref, nan_at, []
        self.output_size = 2 * sum(WIDTHS.values())
        self.last_contexts = None

    def contexts(self):
        return self.last_contexts

    def denoised_scales(self):
        """A stand-in for sigma(t): grows with the timestep, as a denoised picture's error does."""
        return [0.1 + ex.timestep / 100 for ex, _ in self.calls[-self.batch:]]

    def errors(self, examples, vectors):
        """Per example: (text-encoder output, raw output error r)."""
        out = []
        for ex, vecs in zip(examples, vectors):
            context = torch.tanh(torch.cat([vecs[k].flatten() for k in WIDTHS]).double())
            target = torch.cat([torch.tanh(self.targets[k][ex.image]).flatten() for k in WIDTHS]).double()
            noise = torch.randn(self.output_size, generator=torch.Generator().manual_seed(ex.noise_seed)) * 0.01
            out.append((context, (context - target) * math.sqrt(1.0 + ex.timestep / 1000) + noise.double()))
        return out

    def losses(self, examples, vectors):
        out, contexts = [], []
        self.batch = len(examples)
        for ex, vecs, (context, error) in zip(examples, vectors, self.errors(examples, vectors)):
            self.calls.append((ex, {k: v.detach().clone() for k, v in vecs.items()}))
            if context.requires_grad:
                context.retain_grad()
            contexts.append(context)
            loss = error.pow(2).mean().float()
            if self.nan_at is not None and len(self.calls) == self.nan_at:
                loss = loss * float("nan")
            out.append(loss)
        self.last_contexts = contexts
        return torch.stack(out)


def make_config(**overrides) -> TrainingConfig:
    values = dict(name="toy", init_word="cat", templates=TEMPLATES, num_scales=4, vectors_per_token=2, steps=20,
                  batch_size=2, gradient_accumulation=2, learning_rate=0.05, scale_lr=False,
                  timestep_sampling="adaptive", seed=7, save_every=0, flip=True)
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
    """g(t) is equation 4's norm of the gradient of the unsquared error ||r|| (the loss is mean(r^2)), with
    respect to the concept's vectors and to the text encoder's output, each example on its own."""
    cfg = make_config(steps=1, gradient_accumulation=1, batch_size=3, learning_rate=0.0, weight_decay=0.0)
    loop, _ = make_loop(cfg)
    report = loop.step()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in loop.state.embeddings.items()}
    assert report.grad_norms == report.measures["concept vectors"]
    for i, ex in enumerate(report.examples):
        vecs = {k: params[k][ex.bucket] for k in params}
        (context, error), = Toy([]).errors([ex], [vecs])
        context.retain_grad()
        error.norm().backward(retain_graph=True)
        unsquared = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params.values()))
        # float32 vectors: both sides round the same float64 gradient to float32 once, by other factors
        assert report.measures["concept vectors"][i] == pytest.approx(unsquared, rel=1e-6)
        assert report.measures["text encoder output"][i] == pytest.approx(float(context.grad.norm()), rel=1e-6)
        loss_grads = torch.autograd.grad(error.pow(2).mean(), list(params.values()))
        squared = math.sqrt(sum(float(g.double().pow(2).sum()) for g in loss_grads))
        assert report.measures["squared loss"][i] == pytest.approx(squared, rel=1e-6)
        assert report.example_losses[i] == pytest.approx(float(error.detach().pow(2).mean()), rel=1e-6)
        for p in params.values():
            p.grad = None


def test_the_unsquared_error_factor_is_exact_in_float64():
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    target = torch.randn(7, generator=gen, dtype=torch.float64)
    c = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    error = weights @ torch.tanh(c) - target
    (squared,) = torch.autograd.grad(error.pow(2).mean(), c, retain_graph=True)
    (unsquared,) = torch.autograd.grad(error.norm(), c)
    factor = error_norm_factor(float(error.detach().pow(2).mean()), error.numel())
    assert torch.allclose(squared * factor, unsquared, rtol=1e-13, atol=0)
    assert math.isnan(error_norm_factor(0.0, 7))


def test_g_condition_picks_what_the_bands_record():
    cfg = make_config(steps=2, g_condition="text encoder output")
    loop, _ = make_loop(cfg)
    report = loop.step()
    assert report.grad_norms == report.measures["text encoder output"]
    assert report.grad_norms != report.measures["concept vectors"]
    bands = loop.state.bands
    for ex, g in zip(report.examples, report.grad_norms):
        if bands.count[band_of(ex.timestep)] == 1:
            assert bands.estimate[band_of(ex.timestep)] == g


@pytest.mark.parametrize("g_error", ["denoised picture", "relative"])
def test_g_error_rescales_each_example_by_its_own_factor(g_error):
    """`denoised picture`: equation 4's g times the objective's d(denoised)/d(output) of that example;
    `relative`: the gradient of log ||r||, equation 4's g divided by ||r||."""
    loop, toy = make_loop(make_config(steps=1, batch_size=3, g_error=g_error))
    report = loop.step()
    raw = report.measures["concept vectors"]
    for i, ex in enumerate(report.examples):
        if g_error == "denoised picture":
            expected = raw[i] * (0.1 + ex.timestep / 100)
        else:
            expected = raw[i] / math.sqrt(toy.output_size * report.example_losses[i])
        assert report.grad_norms[i] == pytest.approx(expected, rel=1e-12)
        assert report.grad_norms[i] != pytest.approx(raw[i], rel=1e-3)


@pytest.mark.parametrize("num_scales, meant, other", [(1, "denoised picture", "raw output"),
                                                      (4, "raw output", "denoised picture")])
def test_auto_g_error_is_the_denoised_picture_for_one_embedding_and_the_raw_output_for_more(num_scales, meant,
                                                                                           other):
    def norms(g_error):
        loop, _ = make_loop(make_config(steps=1, batch_size=3, num_scales=num_scales, g_error=g_error))
        return loop.step().grad_norms

    assert norms("auto") == norms(meant) != norms(other)


@pytest.mark.parametrize("num_scales, meant", [(1, 3), (4, 1)])
def test_adaptive_sampling_draws_from_the_power_of_g_the_run_asks_for(num_scales, meant):
    """`g_power` reaches the sampler, and `auto` is the power that trained fastest for the number of embeddings
    (3 for one embedding, 1 for more); the run's settings record which one it used."""
    def draw(g_power):
        cfg = make_config(steps=1, num_scales=num_scales, g_power=g_power)
        loop, _ = make_loop(cfg)
        for t in range(0, 1000, 20):
            loop.state.bands.observe(t, 1.0 + t / 100)
        return cfg, loop.sampler.probabilities()

    cfg, auto = draw("auto")
    assert cfg.g_power_used == meant and cfg.settings()["g_power_used"] == meant
    assert torch.equal(auto, draw(str(meant))[1])
    one, two = draw("1")[1], draw("2")[1]
    assert float(two[999] / two[0]) > float(one[999] / one[0]) > 1.0  # the larger power draws more at high g


def test_a_condition_the_objective_cannot_give_is_refused():
    cfg = make_config(steps=1, g_condition="text encoder output")
    loop, toy = make_loop(cfg)
    toy.contexts = lambda: None
    with pytest.raises(MrtiError, match="g_condition 'text encoder output'.*'concept vectors'"):
        loop.step()
    assert loop.state.step == 0


def test_flip_draws_mirrored_examples_only_when_on():
    on, _ = make_loop(make_config(steps=10, flip=True))
    seen_on = [ex.flip for _ in range(10) for ex in on.step().examples]
    assert 10 < sum(seen_on) < 30  # 40 examples, about half mirrored
    off, _ = make_loop(make_config(steps=1, flip=False, timestep_sampling="uniform"))
    examples = off.step().examples
    assert not any(ex.flip for ex in examples)
    # Without flipping, the random stream is the one runs always had: image, template, t, noise seed.
    gen = torch.Generator().manual_seed(7)
    draws = [int(torch.randint(0, high, (1,), generator=gen)) for high in (3, 2, 1000, 2**62)]
    assert (examples[0].image, examples[0].template, examples[0].timestep, examples[0].noise_seed) == tuple(draws)


@pytest.mark.parametrize("num_scales", [4, 1])  # adaptive on g(t), and (auto at N = 1) on g(t) cubed
def test_interrupted_and_resumed_run_equals_a_straight_one(tmp_path, num_scales):
    cfg = make_config(steps=20, save_every=5, num_scales=num_scales)
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
