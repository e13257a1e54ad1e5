"""Training settings, templates, learning-rate schedule, image preparation and charts."""
from __future__ import annotations

import math

import pytest
import torch

from mrti.errors import MrtiError
from mrti.training.config import TrainingConfig, changed_settings, lr_factor
from mrti.training.images import prepare_images
from mrti.training.plots import gradient_image, loss_curve_image, moving_average
from mrti.training.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES, parse_custom_templates, templates_for


def config(**overrides) -> TrainingConfig:
    values = {"name": "jane", "init_word": "cat", "templates": OBJECT_TEMPLATES}
    values.update(overrides)
    return TrainingConfig(**values)


def test_defaults_follow_the_reference():
    cfg = config().validate()
    assert (cfg.num_scales, cfg.vectors_per_token, cfg.learning_rate, cfg.gradient_accumulation) == (10, 1, 5e-4, 4)
    assert cfg.effective_learning_rate == pytest.approx(5e-4 * 1 * 4)
    assert config(scale_lr=False).effective_learning_rate == 5e-4


@pytest.mark.parametrize("overrides, culprit", [
    ({"name": "bad name"}, "name"),
    ({"name": ""}, "name"),
    ({"init_word": "two words"}, "init_word"),
    ({"init_word": "  "}, "init_word"),
    ({"num_scales": 0}, "num_scales"),
    ({"steps": 0}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"image_size": 100}, "image_size"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"timestep_sampling": "sometimes"}, "timestep_sampling"),
    ({"timestep_sampling": "interval", "t_min": 600, "t_max": 500}, "t_min"),
    ({"t_max": 1000}, "t_max"),
    ({"precision": "fp8"}, "precision"),
    ({"adaptive_floor": 1.5}, "adaptive_floor"),
    ({"g_power": "4"}, "g_power"),
    ({"templates": ("no placeholder",)}, "no placeholder"),
])
def test_bad_settings_name_the_input(overrides, culprit):
    with pytest.raises(MrtiError, match=culprit):
        config(**overrides).validate()


def test_a_resume_names_the_trajectory_settings_that_changed():
    ours = config(num_scales=1, timestep_sampling="adaptive").validate().settings()
    assert changed_settings(dict(ours), ours) == []
    assert changed_settings({**ours, "seed": 3, "steps": 99}, ours) == [("seed", 3, 0)]  # steps only ends a run
    # g_power is compared as used: `auto` for one embedding is 3, and a checkpoint from before g_power drew on
    # g(t) itself, so resuming it with auto is a change
    before = {k: v for k, v in ours.items() if k not in ("g_power", "g_power_used")}
    assert changed_settings(before, ours) == [("g_power_used", 1, 3)]
    power_one = config(num_scales=1, timestep_sampling="adaptive", g_power="1").validate().settings()
    assert changed_settings(before, power_one) == []


def test_settings_are_scalar_metadata():
    settings = config(templates=("a {}", "b {}")).settings()
    assert settings["templates"] == "a {}\nb {}"
    assert "name" not in settings
    assert all(isinstance(v, (str, int, float, bool)) for v in settings.values())


def test_templates():
    assert templates_for("object") == OBJECT_TEMPLATES
    assert templates_for("style") == STYLE_TEMPLATES
    assert all(t.count("{}") == 1 for t in OBJECT_TEMPLATES + STYLE_TEMPLATES)
    assert parse_custom_templates("a photo of {}\n\n  {} in snow  \n") == ("a photo of {}", "{} in snow")
    with pytest.raises(MrtiError, match="line 2 'no slot here'"):
        parse_custom_templates("a {}\nno slot here")
    with pytest.raises(MrtiError, match="2 '{}' placeholders"):
        parse_custom_templates("{} and {}")
    with pytest.raises(MrtiError, match=r"line 2 'embedding:\{\}': its '\{\}' follows 'embedding:'"):
        parse_custom_templates("a photo of {}\nembedding:{}")  # was "list index out of range"
    with pytest.raises(MrtiError, match=r"line 1 'a \(embedding: \{\}\)'"):
        parse_custom_templates("a (embedding: {})")
    assert parse_custom_templates("embedding:style_x {}") == ("embedding:style_x {}",)
    with pytest.raises(MrtiError, match="no templates"):
        templates_for("custom", "  \n ")
    with pytest.raises(MrtiError, match="unknown kind"):
        templates_for("poems")


def test_lr_schedules():
    assert [lr_factor("constant", s, 10, 0) for s in (0, 9)] == [1.0, 1.0]
    assert [lr_factor("constant", s, 10, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor("cosine", 0, 10, 0) == 1.0
    assert lr_factor("cosine", 5, 10, 0) == pytest.approx(0.5)
    assert 0 < lr_factor("cosine", 9, 10, 0) < 0.03
    assert lr_factor("linear", 5, 10, 0) == pytest.approx(0.5)
    assert lr_factor("linear", 9, 10, 0) == pytest.approx(0.1)
    assert lr_factor("linear", 1, 12, 2) == pytest.approx(1.0)  # end of warm-up, decay not begun
    assert lr_factor("linear", 7, 12, 2) == pytest.approx(0.5)
    with pytest.raises(MrtiError, match="lr_schedule"):
        lr_factor("wobbly", 0, 1, 0)


def test_center_crop_keeps_the_middle_and_stretch_keeps_everything():
    image = torch.zeros(1, 40, 80, 3)
    image[:, :, 16:64] = 1.0  # white a little beyond the middle square (columns 20 to 60)
    cropped = prepare_images(image, 16, "center crop")
    stretched = prepare_images(image, 16, "stretch")
    assert cropped.shape == stretched.shape == (1, 16, 16, 3)
    assert cropped.min() > 0.99  # only the white middle survives the crop
    assert stretched[0, :, 0].max() < 0.01 and stretched[0, :, 8].min() > 0.99


def test_image_channels_and_batches():
    assert prepare_images(torch.rand(2, 8, 8, 4), 8, "stretch").shape == (2, 8, 8, 3)
    gray = prepare_images(torch.full((8, 8, 1), 0.5), 8, "stretch")
    assert gray.shape == (1, 8, 8, 3) and torch.allclose(gray, torch.full_like(gray, 0.5))


def test_an_image_list_of_mixed_sizes_becomes_one_batch():
    # What ComfyUI's LoadImageDataSetFromFolder gives: one [1, H, W, 3] tensor per file, sizes differ.
    white_wide, black_tall = torch.ones(1, 8, 16, 3), torch.zeros(1, 12, 6, 3)
    batch = prepare_images([white_wide, black_tall, torch.rand(2, 8, 8, 3)], 8, "center crop")
    assert batch.shape == (4, 8, 8, 3)
    assert batch[0].min() > 0.99 and batch[1].max() < 0.01


@pytest.mark.parametrize("images, message", [
    (None, "no training images"),
    ([], "no training images"),
    ([torch.rand(1, 8, 8, 3), torch.rand(2, 8, 8, 3), torch.full((1, 8, 8, 3), float("inf"))],
     r"image\(s\) \[0\] contain NaN.*from image 3 on"),
    (torch.zeros(0, 8, 8, 3), "batch is empty"),
    # One batch wired straight in arrives as a one-item list: no list position is added to the message.
    ([torch.zeros(0, 8, 8, 3)], r"^images: the image batch is empty; connect at least one training image$"),
    (torch.zeros(1, 8, 8, 2), "channels"),
    (torch.full((2, 8, 8, 3), float("nan")), r"image\(s\) \[0, 1\]"),
])
def test_bad_images(images, message):
    with pytest.raises(MrtiError, match=message):
        prepare_images(images, 8, "center crop")


@pytest.mark.parametrize("crop", ["center crop", "stretch"])
def test_a_one_pixel_image_is_upscaled_not_refused(crop):
    colour = torch.tensor([0.8, 0.2, 0.4])
    out = prepare_images(colour.view(1, 1, 1, 3), 64, crop)
    assert out.shape == (1, 64, 64, 3) and torch.allclose(out, colour.expand(1, 64, 64, 3), atol=1e-6)


def test_charts_are_comfy_images():
    for image in (loss_curve_image([]), loss_curve_image([1.0]), loss_curve_image([2.0, 1.0, float("nan"), 0.5]),
                  loss_curve_image([3.0] * 5), gradient_image([None] * 50, 10),
                  gradient_image([float(i) for i in range(50)], 7)):
        assert image.shape == (1, 360, 640, 3) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    bars = gradient_image([None] * 49 + [5.0], 10)
    empty = gradient_image([None] * 50, 10)
    assert not torch.equal(bars, empty)
    assert moving_average([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]
    assert math.isclose(sum(moving_average([2.0] * 7, 3)), 14.0)


def test_training_core_imports_without_the_host():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    probe = ("import sys, mrti.training, mrti.training.loop, mrti.training.checkpoint, mrti.training.plots\n"
             "host = [m for m in sys.modules if m.split('.')[0] in {'comfy', 'folder_paths', 'nodes', 'server'}]\n"
             "assert not host, host\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr


def test_config_from_node_inputs_takes_each_input_as_its_field():
    cfg = TrainingConfig.from_inputs({"name": " jane ", "init_word": "cat ", "templates": "custom",
                                      "custom_templates": "a {} here\nthe {} there", "steps": 7,
                                      "image_size": 64, "seed": 3})
    assert (cfg.name, cfg.init_word, cfg.steps, cfg.image_size, cfg.seed) == ("jane", "cat", 7, 64, 3)
    assert cfg.templates == ("a {} here", "the {} there") and cfg.template_kind == "custom"
    assert TrainingConfig.from_inputs({"name": "j", "init_word": "c", "templates": "style"}).templates == STYLE_TEMPLATES


def test_config_from_node_inputs_refuses_an_input_that_is_no_setting():
    with pytest.raises(MrtiError, match="not training settings: resolution"):
        TrainingConfig.from_inputs({"name": "j", "init_word": "c", "templates": "object", "resolution": 512})
