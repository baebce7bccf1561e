"""Each module run exactly as 3D Slicer runs it: the launcher from the module folder, started
in Slicer's environment, with the command line Slicer builds from the XML description and
NRRD files in its temporary folder; then the output file, its geometry and the progress."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from slicer_helpers import slicer_command

from napari_medgan.io import load_volume
from napari_medgan.slicer import get_modules
from napari_medgan.slicer.spec import CLIModule

MODULES = {m.name: m for m in get_modules()}
OUT = "BJDE_vtkMRMLScalarVolumeNodeF.nrrd"
OUT_LABELS = "BJDE_vtkMRMLLabelMapVolumeNodeG.nrrd"

#: case -> (module, task of the model, parameters: input keys of slicer_inputs or values)
CASES = {
    "synthesize-joint": ("synthesize", "joint", {"referenceVolume": "image", "seed": "7",
                                                 "outputVolume": OUT, "outputLabels": OUT_LABELS}),
    "label2image": ("label2image", "label2image", {"inputLabels": "labels", "outputVolume": OUT}),
    "denoise": ("image2image", "denoise", {"inputVolume": "image", "outputVolume": OUT,
                                           "expectedTask": "denoise"}),
    "translate": ("image2image", "translate", {"inputVolume": "image", "outputVolume": OUT}),
    "inpaint": ("image2image", "inpaint", {"inputVolume": "image", "maskLabels": "mask",
                                           "outputVolume": OUT}),
    "superres": ("image2image", "superres", {"inputVolume": "image", "outputVolume": OUT}),
}


def test_module_folder_holds_launchers_slicer_finds(module_folder, slicer_env):
    """Slicer takes an executable without '.' in its name (Linux, macOS) and reads NAME.xml
    beside it, or runs ``NAME --xml``: both give the module's description."""
    assert subprocess.run([sys.executable, "-c", "pass"], env=slicer_env,
                          capture_output=True).returncode != 0, "Slicer's environment is harmless?"
    expected = {m.launcher for m in MODULES.values()} | {f"{m.launcher}.xml"
                                                        for m in MODULES.values()}
    assert {p.name for p in module_folder.iterdir()} == expected
    for module in MODULES.values():
        launcher = module_folder / module.launcher
        assert "." not in launcher.name and os.access(launcher, os.X_OK)
        assert (module_folder / f"{module.launcher}.xml").read_text() == module.to_xml()
        proc = subprocess.run([str(launcher), "--xml"], env=slicer_env, capture_output=True,
                              text=True, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, module.to_xml(), "")


def _check_geometry(out, ref, atol=1e-5):
    assert out.shape == ref.shape
    for name in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(out, name), getattr(ref, name), atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_module_runs_as_slicer_runs_it(case, trained_model, slicer_inputs, module_folder,
                                       slicer_env, tmp_path):
    name, task, chosen = CASES[case]
    module = MODULES[name]
    values = {key: str(slicer_inputs[v]) if v in slicer_inputs else
              str(tmp_path / v) if v.endswith(".nrrd") else v for key, v in chosen.items()}
    values["modelDirectory"] = str(trained_model(task))
    cmd = slicer_command(module.to_xml(), str(module_folder / module.launcher), values)
    proc = subprocess.run(cmd, env=slicer_env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""  # Slicer shows any stderr as an error of the run

    # progress as Slicer reads it: stages opened and closed, the last fraction 1
    for tag in ("<filter-start>", "<filter-name>", "<filter-comment>", "</filter-start>",
                "<filter-end>", "<filter-time>"):
        assert tag in proc.stdout, tag
    fractions = [float(f) for f in re.findall(r"<filter-progress>([^<]*)</filter-progress>",
                                              proc.stdout)]
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0

    # exactly the files Slicer named, nothing else left beside them
    outputs = {k: v for k, v in values.items() if module.param(k).channel == "output"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        os.path.basename(v) for v in outputs.values())
    result = load_volume(values["outputVolume"])
    assert not result.is_label and np.isfinite(np.asarray(result.array)).all()
    source = load_volume(values.get("referenceVolume") or values.get("inputVolume")
                         or values["inputLabels"])
    if task == "superres":  # the finer grid over the same field of view
        np.testing.assert_allclose(result.direction, source.direction, atol=1e-6)
        assert np.all(result.spacing <= source.spacing + 1e-9)
        np.testing.assert_allclose(np.array(result.shape[::-1]) * result.spacing,
                                   np.array(source.shape[::-1]) * source.spacing)
        corner = lambda v: v.origin - v.direction @ (v.spacing / 2)  # noqa: E731
        np.testing.assert_allclose(corner(result), corner(source), atol=1e-5)
    else:
        _check_geometry(result, source)
    if task == "inpaint":  # voxels outside the mask are the input's
        keep = np.asarray(load_volume(values["maskLabels"]).array) == 0
        np.testing.assert_allclose(np.asarray(result.array)[keep],
                                   np.asarray(source.array)[keep], rtol=1e-5, atol=1e-4)
    if "outputLabels" in values:
        labels = load_volume(values["outputLabels"])
        assert labels.is_label and np.asarray(labels.array).dtype.kind in "iu"
        _check_geometry(labels, source)


def _run(module: CLIModule, argv, capsys) -> tuple[int, str, str]:
    code = module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_seg_nrrd_labels_get_segment_names(trained_model, slicer_inputs, tmp_path, capsys):
    from napari_medgan.data.phantom import PHANTOM_LABELS

    out, seg = tmp_path / "synthetic.nrrd", tmp_path / "synthetic.seg.nrrd"
    code, _, err = _run(MODULES["synthesize"], ["--modelDirectory", trained_model("joint"),
                                                "--outputLabels", seg, "--device", "cpu",
                                                out], capsys)
    assert code == 0, err
    segments = load_volume(seg).meta["segments"]
    assert segments and {s["name"] for s in segments} <= set(PHANTOM_LABELS.values())


def test_model_bundle_zip_as_model_file(trained_model, tmp_path, capsys):
    """A bundle .zip (``export-model``) given as *Model bundle file* samples what its run
    does: the same seed, the same volume."""
    from napari_medgan.export_model import export_model

    bundle = export_model(trained_model("joint"), tmp_path / "joint.zip")
    results = []
    for model in (["--modelFile", bundle], ["--modelDirectory", trained_model("joint")]):
        out = tmp_path / f"synthetic-{len(results)}.nrrd"
        code, _, err = _run(MODULES["synthesize"], [*model, "--seed", "3", "--device", "cpu",
                                                    out], capsys)
        assert code == 0, err
        results.append(np.asarray(load_volume(out).array))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("module, task, argv, message", [
    ("image2image", "joint", ["{image}", "{out}"], "use the napari-medgan 'Synthesize' module"),
    ("synthesize", "label2image", ["{out}"], "'Label map to image' module"),
    ("image2image", "inpaint", ["{image}", "{out}"], "needs 'Mask'"),
    ("image2image", "denoise", ["--expectedTask", "superres", "{image}", "{out}"],
     "the task chosen is superres"),
    ("label2image", "label2image", ["{missing}", "{out}"], "missing.nrrd"),
    ("image2image", None, ["{image}", "{out}"], "exactly one of --modelDirectory"),
    ("image2image", "denoise", ["--modelFile", "{missing}", "{image}", "{out}"],
     "exactly one of --modelDirectory"),
    ("image2image", "denoise", ["--overlap", "2", "{image}", "{out}"], "--overlap"),
])
def test_bad_input_is_one_line_and_no_file(module, task, argv, message, trained_model,
                                           slicer_inputs, tmp_path, capsys):
    out = tmp_path / OUT
    names = {"image": slicer_inputs["image"], "out": out, "missing": tmp_path / "missing.nrrd"}
    argv = [a.format(**names) for a in argv]
    if task:
        argv = ["--modelDirectory", str(trained_model(task)), *argv]
    code, _, err = _run(MODULES[module], argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        MODULES["image2image"].main(["only-one.nrrd"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outputVolume" in err


def test_launcher_error_reaches_slicer_as_one_line(module_folder, slicer_inputs, slicer_env,
                                                    tmp_path):
    launcher = module_folder / MODULES["image2image"].launcher
    proc = subprocess.run([str(launcher), "--modelDirectory", str(tmp_path / "no-model"),
                           str(slicer_inputs["image"]), str(tmp_path / OUT)], env=slicer_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no-model" in proc.stderr


def test_one_pass_flag_skips_the_flip_average(trained_model, slicer_inputs, tmp_path, capsys):
    """The default averages the 8 flips of the input, as napari-medgan generate does;
    ``--onePass`` runs the model once; each is exactly what ``synthesize_from`` gives."""
    from napari_medgan.training.inference import load_generator, synthesize_from

    model = trained_model("label2image")
    labels = load_volume(slicer_inputs["labels"], is_label=True)
    loaded = load_generator(model, device="cpu")
    one, eight = (synthesize_from(loaded, labels, flip_ensemble=f).array for f in (False, True))
    tol = 1e-6 * float(np.abs(eight).max())
    assert np.abs(one - eight).max() > 10 * tol
    for flags, expected in (([], eight), (["--onePass"], one)):
        out = tmp_path / f"out{len(flags)}.nrrd"
        code, _, err = _run(MODULES["label2image"], ["--modelDirectory", model, *flags,
                                                     "--device", "cpu", slicer_inputs["labels"],
                                                     out], capsys)
        assert code == 0, err
        np.testing.assert_allclose(load_volume(out).array, expected, rtol=0, atol=tol)
