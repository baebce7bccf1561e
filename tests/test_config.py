import pytest

from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def test_defaults_are_valid_and_round_trip_yaml(tmp_path):
    run = RunConfig()
    run.model.task = "synthesis"
    path = tmp_path / "run.yaml"
    run.to_yaml(path)
    again = RunConfig.from_yaml(path)
    assert again.to_dict() == run.to_dict()


def test_model_gets_its_default_task():
    assert ModelConfig(name="dcgan3d").task == "synthesis"
    assert ModelConfig(name="pix2pix3d").task == "label2image"


@pytest.mark.parametrize(
    "kind, kwargs, field",
    [
        (ModelConfig, {"patch_size": 24}, "model.patch_size"),
        (ModelConfig, {"patch_size": 8}, "model.patch_size"),
        (ModelConfig, {"name": "stylegan9"}, "model.name"),
        (ModelConfig, {"name": "dcgan3d", "task": "denoise"}, "model.task"),
        (ModelConfig, {"name": "dcgan3d", "task": "joint", "num_classes": 1}, "model.num_classes"),
        (ModelConfig, {"superres_factors": 3}, "model.superres_factors"),
        (ModelConfig, {"superres_factors": (1, 1, 1)}, "model.superres_factors"),
        (ModelConfig, {"superres_factors": "1x1"}, "model.superres_factors"),
        (ModelConfig, {"noise": "poisson"}, "model.noise"),
        (ModelConfig, {"noise_std": 0}, "model.noise_std"),
        (TrainConfig, {"fm_weight": -1}, "train.fm_weight"),
        (TrainConfig, {"steps": 0}, "train.steps"),
        (TrainConfig, {"lr_g": 0}, "train.lr_g"),
        (TrainConfig, {"loss": "wgan"}, "train.loss"),
        (TrainConfig, {"device": "tpu"}, "train.device"),
        (TrainConfig, {"precision": "fp8"}, "train.precision"),
        (DataConfig, {"preset": "pet"}, "data.preset"),
        (DataConfig, {"spacing": (1, 0, 1)}, "data.spacing"),
        # wrong types and impossible sizes, as a damaged checkpoint or YAML file holds them
        (ModelConfig, {"patch_size": "abc"}, "model.patch_size"),
        (ModelConfig, {"patch_size": 160000}, "model.patch_size"),
        (ModelConfig, {"channels": 100000}, "model.channels"),
        (ModelConfig, {"latent_dim": 10**9}, "model.latent_dim"),
        (ModelConfig, {"latent_dim": True}, "model.latent_dim"),
        (ModelConfig, {"channels": [32]}, "model.channels"),
        (ModelConfig, {"name": 3}, "model.name"),
        (ModelConfig, {"spectral_norm": "yes"}, "model.spectral_norm"),
        (ModelConfig, {"noise_std": float("nan")}, "model.noise_std"),
        (ModelConfig, {"volume_shape": (4096, 32, 32)}, "model.volume_shape"),
        (TrainConfig, {"steps": "abc"}, "train.steps"),
        (TrainConfig, {"lr_g": None}, "train.lr_g"),
        (TrainConfig, {"batch_size": 10**6}, "train.batch_size"),
        (DataConfig, {"phantom_size": 4096}, "data.phantom_size"),
    ],
)
def test_bad_values_name_the_field(kind, kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        kind(**kwargs)


def test_whole_numbers_and_numeric_text_are_accepted_as_their_type():
    model = ModelConfig(patch_size="32", latent_dim=64.0)
    assert model.patch_size == 32 and isinstance(model.latent_dim, int)
    assert TrainConfig(lr_g="1e-4").lr_g == 1e-4
    with pytest.raises(ValueError, match=r"model\.latent_dim: expected a whole number, got 64\.5"):
        ModelConfig(latent_dim=64.5)


def test_yaml_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: -3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*train\.steps"):
        RunConfig.from_yaml(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        RunConfig.from_yaml(unknown)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        RunConfig.from_yaml(broken)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")


def test_shipped_example_config_is_valid():
    from pathlib import Path

    path = Path(__file__).parents[1] / "resources" / "example_config.yaml"
    run = RunConfig.from_yaml(path)
    assert run.model.name == "dcgan3d" and run.model.task == "joint"


def test_a_changed_field_is_checked_again_and_a_bad_change_is_not_kept():
    """No round trip through dicts: setting a field runs its section's rules, with the
    same one-line error as a config file, and leaves the section as it was."""
    import dataclasses

    run = RunConfig()
    run.train.steps = 50
    run.model.superres_factors = "1x1x4"  # normalised as in a config file
    assert run.train.steps == 50 and run.model.superres_factors == (1, 1, 4)
    with pytest.raises(ValueError, match=r"^train\.steps: expected from 1 to 10\^9, got 0$"):
        run.train.steps = 0
    assert run.train.steps == 50
    with pytest.raises(ValueError, match="data.val_fraction"):
        run.data.val_fraction = 0.9
    with pytest.raises(ValueError, match="model.task"):
        run.model.name = "pix2pix3d"  # the default task 'synthesis' is not one of its tasks
    assert (run.model.name, run.model.task) == ("dcgan3d", "synthesis")
    run.model = dataclasses.replace(run.model, name="pix2pix3d", task="denoise")  # together
    assert run.model.conditional and run.model.superres_factors == (1, 1, 4)
