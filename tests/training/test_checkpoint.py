"""Checkpoints: exact resume, RNG, refusal to unpickle, damage, incompatibility, crashes."""

from __future__ import annotations

import copy
import json
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from napari_medgan import __version__
from napari_medgan.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    save_checkpoint,
)
from napari_medgan.training.rng import capture_rng, restore_rng


class Tiny(nn.Module):
    """Conv + BatchNorm (buffers, int64 counter) + Linear; ``width`` changes every shape."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, width, 3, padding=1)
        self.norm = nn.BatchNorm3d(width)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3, 4)))


class FakeCompiled(nn.Module):
    """Stands in for torch.compile's OptimizedModule (same ``_orig_mod.`` key prefix)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self._orig_mod = inner


class Evil:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _make(width=4, seed=0):
    torch.manual_seed(seed)
    model = Tiny(width)
    ema = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    return model, ema, opt


def _train(model, ema, opt, gen, steps=3):
    """Draws from torch, numpy (global and a Generator) and python RNGs, like the trainer."""
    for _ in range(steps):
        scale = float(np.random.uniform(0.5, 1.5)) + random.random() + float(gen.random())
        x = torch.randn(2, 1, 4, 4, 4) * scale
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 0.1)


def _save_tiny(directory, width=4, **state):
    model, ema, opt = _make(width)
    _train(model, ema, opt, np.random.default_rng(0), steps=1)
    return save_checkpoint(directory, modules={"generator": model, "ema": ema},
                           optimizers={"optim_g": opt}, state={"step": 1, **state})


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_resume_is_bit_identical(tmp_path):
    model, ema, opt = _make()
    gen = np.random.default_rng(7)
    _train(model, ema, opt, gen)
    path = save_checkpoint(
        tmp_path / "run" / "checkpoints" / "step-000003",
        modules={"generator": model, "ema": ema}, optimizers={"optim_g": opt},
        state={"step": 3, "rng": capture_rng({"data": gen}), "model": {"channels": 4}})
    _train(model, ema, opt, gen)

    model2, ema2, opt2 = _make(seed=123)  # different init: everything must come from disk
    gen2 = np.random.default_rng(999)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.path == path and ckpt.step == 3 and ckpt.state["model"] == {"channels": 4}
    ckpt.load_module("generator", model2)
    ckpt.load_module("ema", ema2)
    ckpt.load_optimizer("optim_g", opt2)
    restore_rng(ckpt.state, {"data": gen2})
    _train(model2, ema2, opt2, gen2)

    _assert_same(model.state_dict(), model2.state_dict())
    _assert_same(ema.state_dict(), ema2.state_dict())
    for idx, entry in opt.state_dict()["state"].items():
        _assert_same(entry, opt2.state_dict()["state"][idx])
    assert opt2.param_groups[0]["betas"] == (0.5, 0.999)


def test_on_disk_layout_is_safetensors_and_json(tmp_path):
    path = _save_tiny(tmp_path / "ck")
    assert sorted(p.name for p in path.iterdir()) == ["state.json", "weights.safetensors"]
    tensors = safetensors.torch.load_file(path / "weights.safetensors")
    assert "generator.conv.weight" in tensors and "ema.norm.num_batches_tracked" in tensors
    assert "optim_g.state.0.exp_avg" in tensors and "optim_g.state.0.step" in tensors
    doc = json.loads((path / "state.json").read_text())
    assert doc["format_version"] == 1 and doc["package_version"] == __version__
    assert doc["optimizers"]["optim_g"]["param_groups"][0]["lr"] == 1e-2
    assert doc["state"]["step"] == 1


def test_state_values_and_dtypes_round_trip(tmp_path):
    module = nn.Linear(2, 3).to(torch.bfloat16)
    module.register_buffer("counts", torch.arange(4, dtype=torch.int64))
    shared = torch.randn(5)
    state = {"spacing": (1.0, 2.0, 0.5), "np": np.float32(0.25), "arr": np.arange(3),
             "path": Path("/data/x.nii.gz"), "z": shared, "z_again": shared, "best": float("inf"),
             "geometry": {"spacing": [1.0, 1.0, 1.0], "shape": [8, 8, 8]}}
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "ck", modules={"net": module}, state=state))
    _assert_same(ckpt.module_state("net"), module.state_dict())
    assert ckpt.state["spacing"] == [1.0, 2.0, 0.5] and ckpt.state["np"] == 0.25
    assert ckpt.state["arr"] == [0, 1, 2] and ckpt.state["path"] == "/data/x.nii.gz"
    assert torch.equal(ckpt.state["z"], shared) and torch.equal(ckpt.state["z_again"], shared)
    assert ckpt.state["best"] == float("inf") and ckpt.state["geometry"]["shape"] == [8, 8, 8]


def test_unsupported_state_is_rejected_before_writing(tmp_path):
    good = _save_tiny(tmp_path / "ck", tag="old")
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(good, modules={"net": nn.Linear(2, 2)}, state={"bad": object()})
    with pytest.raises(ValueError, match="names"):
        save_checkpoint(tmp_path / "x", modules={"a.b": nn.Linear(2, 2)}, state={})
    assert load_checkpoint(good).state["tag"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scan.nii.gz").write_bytes(b"precious")
    with pytest.raises(CheckpointError, match="not a napari-medgan checkpoint"):
        save_checkpoint(tmp_path / "data", modules={"net": nn.Linear(2, 2)}, state={})
    assert (tmp_path / "data" / "scan.nii.gz").read_bytes() == b"precious"


@pytest.mark.parametrize("wrap", ["dataparallel", "compiled", "ddp"])
def test_wrapped_modules_are_unwrapped(tmp_path, wrap):
    import torch.distributed as dist

    model = Tiny()
    if wrap == "ddp":
        try:
            dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}",
                                    rank=0, world_size=1)
        except (AttributeError, RuntimeError, ValueError) as exc:  # no gloo / no loopback
            pytest.skip(f"cannot start a single-process gloo group: {exc}")
    try:
        wrapped = {"dataparallel": nn.DataParallel, "compiled": FakeCompiled,
                   "ddp": nn.parallel.DistributedDataParallel}[wrap](model)
        ckpt = load_checkpoint(save_checkpoint(tmp_path / "ck", modules={"g": wrapped}, state={}))
        assert set(ckpt.module_state("g")) == set(model.state_dict())
        target = Tiny()
        ckpt.load_module("g", {"dataparallel": nn.DataParallel, "compiled": FakeCompiled,
                               "ddp": lambda m: m}[wrap](target))
        _assert_same(target.state_dict(), model.state_dict())
    finally:
        if wrap == "ddp":
            dist.destroy_process_group()


@pytest.mark.slow
def test_torch_compile_module(tmp_path):
    model = Tiny()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "ck", modules={"g": torch.compile(model)},
                                           state={}))
    assert set(ckpt.module_state("g")) == set(model.state_dict())


def test_spectral_norm_modules_round_trip(tmp_path):
    net = nn.Sequential(nn.utils.spectral_norm(nn.Linear(3, 3)),
                        nn.utils.parametrizations.spectral_norm(nn.Linear(3, 3)))
    net(torch.randn(2, 3))
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "ck", modules={"d": net}, state={}))
    other = nn.Sequential(nn.utils.spectral_norm(nn.Linear(3, 3)),
                          nn.utils.parametrizations.spectral_norm(nn.Linear(3, 3)))
    ckpt.load_module("d", other)
    _assert_same(other.state_dict(), net.state_dict())


def test_rng_capture_restore_through_json():
    gen, tgen = np.random.default_rng(3), torch.Generator().manual_seed(5)
    saved = json.loads(json.dumps({"rng": capture_rng({"np": gen, "torch": tgen})}))

    def draw():
        return (torch.rand(4).tolist(), np.random.rand(4).tolist(), np.random.normal(),
                [random.random() for _ in range(4)], random.gauss(0, 1),
                gen.random(4).tolist(), torch.rand(4, generator=tgen).tolist())

    first = draw()
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    gen, tgen = np.random.default_rng(99), torch.Generator().manual_seed(99)
    restore_rng(saved, {"np": gen, "torch": tgen})
    assert draw() == first
    with pytest.raises(CheckpointError, match="RNG"):
        restore_rng({"step": 3})


@pytest.fixture
def no_unpickling(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for owner, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"),
                        (pickle, "Unpickler")):
        monkeypatch.setattr(owner, name, boom)


def test_payload_is_live(tmp_path):
    """Guard for the test below: unpickling these files really would create the marker."""
    pickle.loads(pickle.dumps(Evil(tmp_path / "a")))
    torch.save({"m": Evil(tmp_path / "b")}, tmp_path / "x.pt")
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()


@pytest.mark.parametrize("case", ["torch_save_pt", "pickle_ckpt", "pickle_bin", "zip_in_dir",
                                  "pickle_in_dir", "run_dir_with_pt"])
def test_malicious_pickle_is_refused(tmp_path, case, no_unpickling):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": Evil(marker)}, protocol=4)
    if case in ("torch_save_pt", "zip_in_dir", "run_dir_with_pt"):
        torch.save({"state_dict": Evil(marker)}, tmp_path / "model.pt")  # zip: b"PK" header
        payload = (tmp_path / "model.pt").read_bytes()
    target = {"torch_save_pt": tmp_path / "model.pt", "pickle_ckpt": tmp_path / "last.ckpt",
              "pickle_bin": tmp_path / "weights.bin", "zip_in_dir": tmp_path / "ck",
              "pickle_in_dir": tmp_path / "ck", "run_dir_with_pt": tmp_path}[case]
    if case in ("zip_in_dir", "pickle_in_dir"):
        _save_tiny(target)  # a real state.json beside the impostor weights
        (target / "weights.safetensors").write_bytes(payload)
    elif target.suffix in (".ckpt", ".bin"):
        target.write_bytes(payload)
    with pytest.raises(CheckpointError, match="refusing to unpickle") as err:
        load_checkpoint(target)
    assert "safetensors + JSON" in str(err.value)
    assert not marker.exists()


def test_truncated_weights_name_the_file(tmp_path):
    path = _save_tiny(tmp_path / "ck")
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"weights\.safetensors.*truncated"):
        load_checkpoint(path)
    doc = json.loads((path / "state.json").read_text())
    del doc["weights_bytes"]  # now only safetensors itself can notice
    (path / "state.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: corrupt or truncated"):
        load_checkpoint(path)
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=r"weights\.safetensors: corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("text,match", [
    ('{"format": "napari-medgan-checkpoint", "format_', "invalid JSON"),
    ("\xff\xfe", "invalid JSON"),
    ('{"hello": 1}', "not a napari-medgan checkpoint"),
])
def test_bad_state_json(tmp_path, text, match):
    path = _save_tiny(tmp_path / "ck")
    (path / "state.json").write_text(text, encoding="latin-1")
    with pytest.raises(CheckpointError, match=rf"state\.json: {match}"):
        load_checkpoint(path)


def test_newer_format_version_is_refused(tmp_path):
    path = _save_tiny(tmp_path / "ck")
    doc = json.loads((path / "state.json").read_text())
    doc.update(format_version=99, package_version="9.0")
    (path / "state.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="format_version 99.*newer.*upgrade"):
        load_checkpoint(path)


@pytest.mark.parametrize("missing", ["state.json", "weights.safetensors"])
def test_missing_files(tmp_path, missing):
    path = _save_tiny(tmp_path / "ck")
    (path / missing).unlink()
    with pytest.raises(CheckpointError, match=rf"{missing}: missing"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path, match in ((tmp_path / "empty", "no checkpoint found"),
                        (tmp_path / "nope", "no such checkpoint"),
                        (tmp_path / "notes.txt", "not a napari-medgan checkpoint")):
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)


def test_load_by_file_inside_checkpoint(tmp_path):
    path = _save_tiny(tmp_path / "ck")
    assert load_checkpoint(path / "state.json").path == path
    assert load_checkpoint(path / "weights.safetensors", map_location=torch.device("cpu")).path \
        == path


def test_incompatible_model_names_key_and_shapes(tmp_path):
    ckpt = load_checkpoint(_save_tiny(tmp_path / "ck", width=4))
    model, _, opt = _make(width=8)
    with pytest.raises(CheckpointError, match=r"incompatible with the model config: "
                       r"generator\.conv\.weight has shape \(4, 1, 3, 3, 3\) in the checkpoint "
                       r"but \(8, 1, 3, 3, 3\)"):
        ckpt.load_module("generator", model)
    with pytest.raises(CheckpointError, match=r"optim_g\.state\.0\.exp_avg has shape"):
        ckpt.load_optimizer("optim_g", opt)
    with pytest.raises(CheckpointError, match=r"missing .*, first generator\.extra"):
        bigger = Tiny()
        bigger.extra = nn.Linear(2, 2)
        ckpt.load_module("generator", bigger)
    with pytest.raises(CheckpointError, match="Adam.*SGD"):
        ckpt.load_optimizer("optim_g", torch.optim.SGD(Tiny().parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match="no module 'discriminator'.*generator, ema"):
        ckpt.load_module("discriminator", Tiny())


def _save_step(manager, step, metric=None, final=False):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(step)
    return manager.save(step, modules={"g": model}, state={"tag": step}, metric=metric,
                        final=final)


def test_manager_keeps_last_k_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    assert manager.latest() is None and manager.best() is None
    for step, metric in zip(range(1, 6), [5.0, 3.0, 4.0, 1.0, float("nan")]):
        _save_step(manager, step, metric, final=step == 5)
    ckdir = tmp_path / "checkpoints"
    assert [p.name for p in manager.checkpoints()] == ["step-000004", "step-000005"]
    assert sorted(p.name for p in ckdir.iterdir()) == [
        "best", "final", "latest.json", "step-000004", "step-000005"]
    assert json.loads((ckdir / "latest.json").read_text()) == {"name": "step-000005", "step": 5}
    assert manager.latest() == ckdir / "step-000005"
    best = load_checkpoint(manager.best())
    assert best.step == 4 and best.state["metric"] == 1.0
    assert torch.all(best.module_state("g")["weight"] == 4)
    assert load_checkpoint(tmp_path).step == 5 and load_checkpoint(ckdir / "final").step == 5
    assert CheckpointManager(tmp_path).best_metric == 1.0  # resumed managers know the best

    # Resuming from an earlier step: the new checkpoint survives pruning and becomes latest.
    _save_step(manager, 2)
    assert [p.name for p in manager.checkpoints()] == ["step-000002", "step-000005"]
    assert load_checkpoint(tmp_path).step == 2
    (ckdir / "latest.json").write_text("{broken")  # the pointer is a hint; scan by step
    assert manager.latest() == ckdir / "step-000005"
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


def test_interrupted_saves_are_recovered_and_cleaned(tmp_path):
    ckdir = tmp_path / "checkpoints"
    manager = CheckpointManager(tmp_path)
    _save_step(manager, 1)
    # A kill between the two renames of a swap: only the moved-aside copy exists.
    target = ckdir / "step-000001"
    target.rename(ckdir / ".step-000001.old-abcd1234")
    # A kill mid-write: a half temporary directory, and a stray pointer temporary.
    (ckdir / ".step-000002.tmp-xyz").mkdir()
    (ckdir / ".step-000002.tmp-xyz" / "weights.safetensors").write_bytes(b"\x00" * 10)
    (ckdir / ".latest.json.k2j3.part.json").write_text("{")
    assert load_checkpoint(target).state["tag"] == 1
    (ckdir / "latest.json").unlink()
    assert manager.latest() is None and manager.checkpoints() == []  # never a temporary

    _save_step(manager, 2)
    assert sorted(p.name for p in ckdir.iterdir()) == ["latest.json", "step-000001",
                                                        "step-000002"]


_CHILD = textwrap.dedent("""
    import sys, torch
    from napari_medgan.training.checkpoint import CheckpointManager, save_checkpoint
    target, run, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
    net = torch.nn.Linear(1024, 1024)
    manager = CheckpointManager(run, keep_last=2)
    while True:
        with torch.no_grad():
            net.weight.fill_(i), net.bias.fill_(i)
        save_checkpoint(target, modules={"net": net}, state={"i": i})
        manager.save(i, modules={"net": net}, state={"i": i}, metric=float(i % 3))
        print(i, flush=True)
        i += 1
""")


def _assert_whole(ckpt: Checkpoint) -> None:
    i = ckpt.state["i"]
    assert torch.all(ckpt.tensors["net.weight"] == i) and torch.all(ckpt.tensors["net.bias"] == i)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_kill_during_save_leaves_a_whole_checkpoint(tmp_path):
    target, run = tmp_path / "single" / "ck", tmp_path / "run"
    rng = random.Random(0)
    for attempt in range(3):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(target), str(run),
                                  str(100 * attempt)], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == str(100 * attempt)  # one save finished
            try:
                child.wait(timeout=rng.uniform(0.0, 0.3))
            except subprocess.TimeoutExpired:
                pass
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        _assert_whole(load_checkpoint(target))
        _assert_whole(load_checkpoint(run))
        manager = CheckpointManager(run, keep_last=2)
        assert not manager.latest().name.startswith(".")
        for path in manager.checkpoints():
            _assert_whole(load_checkpoint(path))
    model = nn.Linear(1024, 1024)
    save_checkpoint(target, modules={"net": model}, state={"i": -1})
    CheckpointManager(run).save(10**6, modules={"net": model}, state={"i": -1})
    for folder in (target.parent, run / "checkpoints"):
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.gpu
def test_map_location_cuda(tmp_path):
    ckpt = load_checkpoint(_save_tiny(tmp_path / "ck"), map_location="cuda")
    assert ckpt.tensors["generator.conv.weight"].is_cuda
    model, _, _ = _make()
    model.cuda()
    ckpt.load_module("generator", model)
    ckpt.load_optimizer("optim_g", torch.optim.Adam(model.parameters(), lr=1e-2))
    saved = json.loads(json.dumps(capture_rng()))  # CUDA is initialised by now
    assert "cuda" in saved
    first = torch.rand(4, device="cuda")
    restore_rng(saved)
    assert torch.equal(torch.rand(4, device="cuda"), first)


def test_old_pix2pix_layout_is_refused_with_one_line(tmp_path, tiny_run):
    import json

    from napari_medgan.training import events as ev_
    from napari_medgan.training.inference import load_generator
    from napari_medgan.training.trainer import Trainer

    run = tiny_run(tmp_path / "run", model="pix2pix3d", task="denoise", steps=1)
    [e for e in Trainer(run).run() if isinstance(e, ev_.DoneEvent)]
    state = next((tmp_path / "run" / "checkpoints").glob("step-*")) / "state.json"
    doc = json.loads(state.read_text())
    del doc["state"]["model_layout"]  # as napari-medgan 0.1 wrote it
    state.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"layout 1.*builds layout 2.*retrain") as info:
        load_generator(state.parent)
    assert "\n" not in str(info.value) and str(state.parent) in str(info.value)


# --------------------------------------------------------------------------- hostile fields
@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, tiny_run):
    """One real dcgan3d checkpoint (2 steps at 16^3); tests edit copies of it."""
    from napari_medgan.training.trainer import Trainer

    out = tmp_path_factory.mktemp("ckpt") / "run"
    for _ in Trainer(tiny_run(out, steps=2, checkpoint_every=2)).run():
        pass
    return next((out / "checkpoints").glob("step-*"))


def _edited(tmp_path, source, edit):
    import json

    target = tmp_path / "edited"
    shutil.copytree(source, target)
    doc = json.loads((target / "state.json").read_text())
    edit(doc["state"])
    (target / "state.json").write_text(json.dumps(doc))
    return target


def _set(path, value):
    def edit(state):
        *parents, last = path.split(".")
        node = state
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "said"), [
    ("model_config.channels", 100000, r"model\.channels: expected from 4 to 1024"),
    ("model_config.latent_dim", 10**9, r"model\.latent_dim: expected from 1 to 4096"),
    ("model_config.patch_size", 160000, r"model\.patch_size: expected a multiple of 16"),
    ("model_config.patch_size", "abc", r"model\.patch_size: expected a whole number, got 'abc'"),
    ("model_config.channels", 16, r"ema\.fc\.weight has shape .* in the checkpoint but"),
    ("model_config.colour", "red", r"model_config field\(s\) 'colour' unknown"),
    ("model_config", _DELETE, r"state has no 'model_config' object"),
    ("step", "abc", r"state field 'step' must be a whole number, got 'abc'"),
    ("step", _DELETE, r"state has no 'step' field"),
    ("normalizer", _DELETE, r"state has no 'normalizer' field"),
    ("normalizer", [1, 2], r"state field 'normalizer' must be a JSON object"),
    ("normalizer.low", "abc", r"state field 'normalizer' is invalid"),
    ("geometry", _DELETE, r"state has no 'geometry' field"),
    ("geometry.spacing", [1, 0, 1], r"state field 'geometry' is invalid .*spacing must be "
                                    "positive"),
    ("geometry.shape", None, r"state field 'geometry' is invalid"),
])
def test_damaged_checkpoint_field_is_one_line_naming_it(tmp_path, trained_checkpoint, path, value,
                                                        said):
    from napari_medgan.training.inference import load_generator

    edited = _edited(tmp_path, trained_checkpoint, _set(path, value))
    with pytest.raises(CheckpointError, match=said) as info:
        load_generator(edited)
    assert str(info.value).startswith(f"{edited}: ") and "\n" not in str(info.value)


def test_a_config_that_disagrees_with_the_weights_is_refused_before_building(
        tmp_path, trained_checkpoint, monkeypatch):
    from napari_medgan import models
    from napari_medgan.training.inference import load_generator

    built = []
    real = models.build_generator
    monkeypatch.setattr(models, "build_generator",
                        lambda cfg: built.append(torch.empty(0).device.type) or real(cfg))
    edited = _edited(tmp_path, trained_checkpoint, _set("model_config.channels", 1024))
    with pytest.raises(CheckpointError, match="has shape"):
        load_generator(edited)
    assert built == ["meta"]  # only the no-memory skeleton was ever built


def test_non_finite_weights_are_refused_at_load(tmp_path, trained_checkpoint):
    import json

    from napari_medgan.training.inference import load_generator

    target = tmp_path / "nan"
    shutil.copytree(trained_checkpoint, target)
    tensors = safetensors.torch.load_file(target / "weights.safetensors")
    key = next(k for k in tensors if k.startswith("ema.") and tensors[k].is_floating_point())
    tensors[key][...] = float("nan")
    safetensors.torch.save_file(tensors, target / "weights.safetensors")
    doc = json.loads((target / "state.json").read_text())
    doc["weights_bytes"] = (target / "weights.safetensors").stat().st_size
    (target / "state.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=rf"{target}: {key} holds NaN or infinite weights"):
        load_generator(target)


def test_checkpoint_step_reads_the_step_without_the_weights(tmp_path, trained_checkpoint):
    from napari_medgan.training.checkpoint import checkpoint_step

    assert checkpoint_step(trained_checkpoint) == load_checkpoint(trained_checkpoint).step == 2
    assert checkpoint_step(trained_checkpoint.parent.parent) == 2  # the run folder
    assert checkpoint_step(tmp_path) is None
