"""The modules' XML descriptions follow the Slicer Execution Model, and the parser made from
the same declaration accepts exactly what Slicer passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from slicer_helpers import parameters, slicer_command, validate_description

from napari_medgan.slicer import MODULE_NAMES, get_modules
from napari_medgan.slicer.spec import CLIModule, Group, Param

MODULES = {m.name: m for m in get_modules()}


def _xml(body: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<executable><category>c</category>'
            '<title>t</title><description>d</description><version>1</version>'
            f'<contributor>me</contributor><parameters><label>g</label>{body}'
            '</parameters></executable>')


IMAGE_IN = ('<image><name>inputVolume</name><label>In</label><description>x</description>'
            '<channel>input</channel><index>0</index></image>')


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_description_is_valid(name):
    assert validate_description(MODULES[name].to_xml()) == []


@pytest.mark.parametrize("body, problem", [
    (IMAGE_IN, None),
    (IMAGE_IN.replace("<index>0", "<index>1"), "without gaps"),
    (IMAGE_IN.replace("<channel>input</channel>", ""), "needs <channel>"),
    (IMAGE_IN.replace("inputVolume", "input-volume"), "<name> must be"),
    (IMAGE_IN.replace("<index>0</index>", ""), "needs an <index> or a <longflag>"),
    (IMAGE_IN.replace("<index>0</index>", "<index>0</index><longflag>x</longflag>"),
     "excludes"),
    (IMAGE_IN.replace("<image>", '<image type="mask">'), "image type"),
    (IMAGE_IN.replace("<image>", '<image shape="x">'), "attribute 'shape'"),
    (IMAGE_IN + IMAGE_IN.replace("<index>0", "<index>1"), "names repeat"),
    ("<string-enumeration><name>m</name><label>M</label><description>x</description>"
     "<longflag>m</longflag><default>c</default><element>a</element><element>b</element>"
     "</string-enumeration>", "is not one of"),
    ("<integer><name>n</name><label>N</label><description>x</description>"
     "<longflag>n-count</longflag><default>3</default></integer>", "<longflag>"),
    ("<float><name>f</name><label>F</label><description>x</description><longflag>f</longflag>"
     "<default>2</default><constraints><minimum>0</minimum><maximum>1</maximum>"
     "<step>0.1</step></constraints></float>", "outside"),
    ("<widget><name>w</name></widget>", "may not hold <widget>"),
])
def test_validator_finds_each_broken_rule(body, problem):
    """The validator is not vacuous: each rule, broken once, is reported."""
    problems = validate_description(_xml(body))
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_validator_needs_the_xml_declaration_and_the_header_fields():
    assert validate_description(_xml(IMAGE_IN).split("\n", 1)[1])
    text = _xml(IMAGE_IN).replace("<version>1</version>", "")
    assert any("<version>" in p for p in validate_description(text))


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_parser_accepts_what_slicer_passes(name, tmp_path):
    """Every parameter of the XML reaches the parser under its own name, in the order and
    form Slicer uses (flags with their defaults, then the positional files)."""
    module = MODULES[name]
    xml = module.to_xml()
    values = {}
    for p in parameters(xml):
        if p.tag in ("image", "file", "directory"):
            values[p.findtext("name")] = str(tmp_path / f"{p.findtext('name')}.nrrd")
    argv = slicer_command(xml, module.script, values)[1:]
    args = module.build_parser().parse_args(argv)
    for p in parameters(xml):
        got = getattr(args, p.findtext("name"))
        expected = values.get(p.findtext("name"), p.findtext("default"))
        if p.tag == "boolean":  # XML writes false, the parser holds False
            assert isinstance(got, bool), p.findtext("name")
            got = str(got).lower()
        assert str(got) == str(expected), p.findtext("name")


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_xml_flag_is_fast_and_clean(name):
    """Slicer's discovery runs ``MODULE --xml`` with a 5 s limit and treats any stderr output
    as an error: the description comes before torch is imported (what would make it slow)."""
    code = (f"import sys; from napari_medgan.slicer.{name} import main; main(['--xml']); "
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert proc.stdout == MODULES[name].to_xml()
    assert proc.stderr.strip() == "False"


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_console_script_and_python_m_print_the_description(name):
    module = MODULES[name]
    script = Path(sys.executable).parent / module.script
    assert script.exists(), f"{script}: reinstall the package (pip install -e .)"
    for cmd in ([str(script), "--xml"],
                [sys.executable, "-m", f"napari_medgan.slicer.{name}", "--xml"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, module.to_xml(), "")


@pytest.mark.parametrize("make, message", [
    (lambda: Param("image", "x", "X", "d"), "channel"),
    (lambda: Param("integer", "2x", "X", "d", default=1), "name"),
    (lambda: Param("integer", "n", "N", "d", index=0), "index"),
    (lambda: Param("string-enumeration", "e", "E", "d", default="c", elements=("a",)),
     "default"),
    (lambda: CLIModule("m", "M", "m", "T", "d", (Group("g", "d", (
        Param("image", "a", "A", "d", channel="input", index=1),)),), run=None), "indices"),
    (lambda: CLIModule("m", "M.py", "m", "T", "d", (), run=None), "launcher"),
])
def test_declarations_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()
