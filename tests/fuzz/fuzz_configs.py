"""Hostile run-folder configs: the tiny run's ``config.yaml`` with fields of the wrong type,
huge, negative, unknown, whole sections of the wrong shape, and YAML that is not a
mapping, not YAML, or a billion-laughs alias bomb.

Entry ``train_config`` reads it the way ``napari-medgan train --config RUN/config.yaml
--resume --out RUN`` does (``cli.build_run_config``), without training; a result must
hold every field in its declared type. A few inputs (``cli_train_resume``) run that
command for real where it is cheap or must be refused before any work.
"""

from __future__ import annotations

import shutil
import typing
from pathlib import Path

from fuzz_cases import Input, write

GROUP = "config"
REMOVE = object()


def _copy_run(folder: Path, bases, whole: bool = False) -> None:
    """The tiny run's ``config.yaml`` (``whole``: the entire run folder, for real resumes)."""
    if whole:
        shutil.copytree(bases.checkpoint_run, folder, dirs_exist_ok=True)
    else:
        shutil.copy2(bases.checkpoint_run / "config.yaml", folder / "config.yaml")


def _edit(folder: Path, section: str | None, field: str, value) -> Path:
    import yaml

    path = folder / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    node = doc if section is None else doc[section]
    if value is REMOVE:
        node.pop(field, None)
    else:
        node[field] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _case(slug, fault, section, field, value, expect, entries=("train_config",), sample=True,
          timeout=30.0, name_field=True):
    def build(folder, bases):
        _copy_run(folder, bases, whole="cli_train_resume" in entries)
        return _edit(folder, section, field, value)

    return Input(f"{GROUP}/{slug}", GROUP, fault, build, expect, entries=entries,
                 field=field if name_field else None, sample=sample, timeout=timeout)


def _text_case(slug, fault, text: str | bytes, expect="refuse"):
    def build(folder, bases):
        _copy_run(folder, bases)
        return write(folder / "config.yaml", text)

    return Input(f"{GROUP}/{slug}", GROUP, fault, build, expect, entries=("train_config",))


def _kind(hint) -> tuple[str, bool]:
    """('int' | 'float' | 'str' | 'bool' | 'tuple', optional) of a config field's type hint."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return "tuple", optional
    return hint.__name__, optional


def _field_values(kind: str, optional: bool) -> list[tuple[str, str, object, str]]:
    """(slug, fault, value, expect) for one field."""
    wrong = "config wrong type"
    values = [("string", wrong, "abc", "refuse"), ("list", wrong, [1], "refuse"),
              ("dict", wrong, {"a": 1}, "refuse")]
    if kind == "str":
        values = [("number", wrong, 123, "refuse"), ("list", wrong, [1], "refuse"),
                  ("dict", wrong, {"a": 1}, "refuse"), ("bool", wrong, True, "refuse"),
                  ("huge", "config huge value", "x" * 100000, "any")]
    elif kind == "bool":
        values += [("number", wrong, 5, "refuse")]
    elif kind == "int":
        values += [("bool", wrong, True, "refuse"), ("huge", "config huge value", 10**12, "any"),
                   ("negative", "config invalid value", -1, "any"),
                   ("fractional", wrong, 2.5, "refuse"),
                   ("numeric-string", wrong, "8", "any")]
    elif kind == "float":
        values += [("bool", wrong, True, "refuse"),
                   ("huge", "config huge value", 1e300, "any"),
                   ("negative", "config invalid value", -1.0, "any"),
                   ("nan", "config invalid value", float("nan"), "refuse"),
                   ("numeric-string", wrong, "0.5", "any")]
    elif kind == "tuple":
        values += [("bool", wrong, True, "refuse"), ("short", wrong, [1], "refuse"),
                   ("negative", "config invalid value", [-1, -1, -1], "refuse"),
                   ("huge", "config huge value", [1e300] * 3, "any")]
    if not optional:
        values.append(("null", wrong, None, "refuse"))
    values.append(("removed", "config field removed", REMOVE, "any"))
    return values


def inputs() -> list[Input]:
    from napari_medgan.config import SECTIONS

    cases = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in __import__("dataclasses").fields(cls):
            kind, optional = _kind(hints[f.name])
            for slug, fault, value, expect in _field_values(kind, optional):
                cases.append(_case(f"{section}-{f.name.replace('_', '-')}-{slug}", fault,
                                   section, f.name, value, expect))
        cases.append(_case(f"{section}-unknown-key", "config unknown key", section,
                           "bogus_field", 1, "any"))
        for slug, value, expect in (("string", "abc", "refuse"), ("list", [1], "refuse"),
                                    ("number", 5, "refuse"), ("null", None, "any")):
            cases.append(_case(f"section-{section}-{slug}", "config section wrong type", None,
                               section, value, expect))
    cases += [
        _case("top-unknown-section", "config unknown key", None, "bogus_section", {"a": 1},
              "any"),
        _case("top-init-number", "config wrong type", None, "init", 123, "refuse"),
        _case("top-resume-string", "config wrong type", None, "resume", "abc", "any"),
        _case("top-out-number", "config wrong type", None, "out", 123, "any"),
        _text_case("not-a-mapping-list", "config not a mapping", "- 1\n- 2\n"),
        _text_case("not-a-mapping-scalar", "config not a mapping", "just a string\n"),
        _text_case("not-a-mapping-number", "config not a mapping", "5\n"),
        _text_case("empty-file", "config not a mapping", "", "any"),
        _text_case("invalid-yaml", "config not YAML", "data: [unclosed\n  model: {\n"),
        _text_case("binary-garbage", "config not YAML", bytes(range(256)) * 8),
        _text_case("python-tag", "config not YAML",
                   "data: !!python/object/apply:os.system ['touch UNPICKLED']\n"),
        _text_case("deeply-nested", "config not YAML", "data: " + "[" * 100000 + "]" * 100000),
        _text_case("alias-bomb-in-field", "config alias bomb", _alias_bomb("data:\n  source: ")),
        _text_case("alias-bomb-unknown-key", "config alias bomb", _alias_bomb("bogus: ")),
    ]

    def missing(folder, bases):
        _copy_run(folder, bases)
        (folder / "config.yaml").unlink()
        return folder / "config.yaml"

    def as_folder(folder, bases):
        _copy_run(folder, bases)
        (folder / "config.yaml").unlink()
        (folder / "config.yaml").mkdir()
        return folder / "config.yaml"

    cases += [Input(f"{GROUP}/config-missing", GROUP, "config missing", missing, "refuse",
                    entries=("train_config",)),
              Input(f"{GROUP}/config-is-folder", GROUP, "config missing", as_folder, "refuse",
                    entries=("train_config",))]

    # -- `train --config RUN/config.yaml --resume --out RUN` for real: cheap, or refused
    #    before any work
    resume = ("cli_train_resume",)
    cases += [
        _case("resume-valid-steps-done", "control", "train", "steps", 2, "any", resume,
              timeout=60.0),
        _case("resume-phantom-size-huge", "config huge value", "data", "phantom_size", 100000,
              "refuse", resume, timeout=60.0, name_field=True),
        _case("resume-phantom-count-huge", "config huge value", "data", "phantom_count", 10**9,
              "refuse", resume, sample=False, timeout=60.0),
        _case("resume-batch-size-huge", "config huge value", "train", "batch_size", 10**7,
              "refuse", resume, sample=False, timeout=60.0),
    ]
    return cases


def _alias_bomb(key: str) -> str:
    """``key`` holding nine levels of nine aliases, defined inline: 9^9 (387 million) strings
    for anything that expands it (``repr`` in an error message, a deep copy)."""
    levels = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        levels.append(f"&{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return f"{key}[{', '.join(levels)}]\n"
