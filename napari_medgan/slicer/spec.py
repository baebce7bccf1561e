"""A 3D Slicer CLI module declared once in Python: its XML description, its parser, its run.

Slicer (its ``vtkSlicerCLIModuleLogic``) runs an *executable* CLI module like this:

* **Discovery.** In a module path, an executable file whose name has no ``.`` (Linux,
  macOS; ``.exe`` or ``.bat`` on Windows). Its description is ``NAME.xml`` beside it, or else
  what ``NAME --xml`` prints (within 5 s, starting with ``<?xml``, nothing on stderr).
* **Command line.** Flagged parameters first, in declaration order, as ``--longflag value``
  (a file, directory, string or image only when it is set; a boolean as the bare flag when
  true), then the indexed parameters in index order, as bare values.
* **Data.** Images travel as temporary files (``.nrrd`` unless ``fileExtensions`` says
  otherwise): Slicer writes every input, and after a zero exit loads exactly the output
  files it named. A non-zero exit is "completed with errors", with stderr shown.
* **Progress.** ``<filter-start>`` (``<filter-name>``, ``<filter-comment>``),
  ``<filter-progress>FRACTION</filter-progress>`` and ``<filter-end>`` lines on stdout.

A :class:`CLIModule` holds one :class:`Param` per parameter; the XML (:meth:`CLIModule.to_xml`)
and the argparse parser (:meth:`CLIModule.build_parser`) are both made from it, so the two
cannot disagree. Nothing here imports torch: ``--xml`` must answer fast.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from napari_medgan import __version__

#: Parameter tags these modules use, and what they become on the command line.
SCALAR_TAGS = {"integer": int, "float": float, "string": str}
PATH_TAGS = ("image", "file", "directory")
TAGS = (*SCALAR_TAGS, *PATH_TAGS, "boolean", "string-enumeration")
CATEGORY = "napari-medgan"
CONTRIBUTOR = "napari-medgan developers"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SlicerModuleError(ValueError):
    """Bad input to a Slicer module; printed as one line on stderr."""


@dataclass(frozen=True)
class Param:
    """One parameter of a CLI module (an element of a ``<parameters>`` group).

    ``name`` is also the long flag (``--name``) unless ``index`` makes it positional.
    ``channel`` (``input``/``output``) is required for images, files and directories;
    ``image_type="label"`` marks a label map; ``constraints`` is ``(minimum, maximum, step)``.
    """

    tag: str
    name: str
    label: str
    description: str
    channel: str | None = None
    index: int | None = None
    default: Any = None
    image_type: str | None = None
    elements: tuple[str, ...] = ()
    constraints: tuple[float, float, float] | None = None
    file_extensions: tuple[str, ...] = ()
    reference: str | None = None

    def __post_init__(self) -> None:
        def bad(what: str, value: Any, expected: str) -> ValueError:
            return ValueError(f"Param {self.name!r}: {what}: expected {expected}, got {value!r}")

        if self.tag not in TAGS:
            raise bad("tag", self.tag, f"one of {TAGS}")
        if not _IDENTIFIER.match(self.name) or keyword.iskeyword(self.name):
            raise bad("name", self.name, "letters, digits and '_', not starting with a digit")
        if (self.tag in PATH_TAGS) != (self.channel in ("input", "output")):
            raise bad("channel", self.channel, "'input' or 'output' for images, files and "
                      "directories only")
        if self.index is not None and (self.index < 0 or self.tag not in PATH_TAGS):
            raise bad("index", self.index, "a non-negative position, for a path parameter")
        if (self.tag == "string-enumeration") != bool(self.elements):
            raise bad("elements", self.elements, "choices for a string-enumeration only")
        if self.elements and self.default not in self.elements:
            raise bad("default", self.default, f"one of {self.elements}")
        if self.image_type not in (None, "label") or (self.image_type and self.tag != "image"):
            raise bad("image_type", self.image_type, "None or 'label' on an image")
        if self.tag == "boolean" and self.default not in (None, False):
            raise bad("default", self.default, "False (a flag Slicer passes when ticked)")

    @property
    def flag(self) -> str | None:
        return None if self.index is not None else "--" + self.name

    def element(self) -> ET.Element:
        attrs = {}
        if self.image_type:
            attrs["type"] = self.image_type
        if self.file_extensions:
            attrs["fileExtensions"] = ",".join(self.file_extensions)
        if self.reference:
            attrs["reference"] = self.reference
        node = ET.Element(self.tag, attrs)
        ET.SubElement(node, "name").text = self.name
        ET.SubElement(node, "label").text = self.label
        ET.SubElement(node, "description").text = self.description
        if self.channel:
            ET.SubElement(node, "channel").text = self.channel
        if self.index is not None:
            ET.SubElement(node, "index").text = str(self.index)
        else:
            ET.SubElement(node, "longflag").text = self.name
        if self.default is not None:
            text = "false" if self.default is False else str(self.default)
            ET.SubElement(node, "default").text = text
        for choice in self.elements:
            ET.SubElement(node, "element").text = choice
        if self.constraints:
            limits = ET.SubElement(node, "constraints")
            for tag, value in zip(("minimum", "maximum", "step"), self.constraints):
                ET.SubElement(limits, tag).text = f"{value:g}"
        return node

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.tag == "boolean":
            parser.add_argument(self.flag, dest=self.name, action="store_true",
                                help=self.description)
            return
        kind = Path if self.tag in PATH_TAGS else SCALAR_TAGS.get(self.tag, str)
        if self.index is not None:
            parser.add_argument(self.name, type=kind, help=self.description)
            return
        limits = ""
        if self.constraints:
            limits = f" [{self.constraints[0]:g} .. {self.constraints[1]:g}]"
        parser.add_argument(self.flag, dest=self.name, type=kind, default=self.default,
                            choices=self.elements or None, metavar=None if self.elements
                            else self.tag.upper(), help=self.description + limits)

    def check(self, value: Any) -> None:
        """The constraints Slicer's widgets enforce, enforced for a command line too."""
        if self.constraints and value is not None:
            low, high, _ = self.constraints
            if not low <= value <= high:
                raise SlicerModuleError(f"--{self.name}: expected {low:g} .. {high:g}, "
                                        f"got {value:g}")


@dataclass(frozen=True)
class Group:
    """A ``<parameters>`` group: a collapsible box in Slicer's generated panel."""

    label: str
    description: str
    params: tuple[Param, ...]
    advanced: bool = False


class Progress:
    """Progress in the form Slicer's CLI logic reads from stdout (it keeps the last
    ``<filter-progress>`` fraction and shows the last ``<filter-comment>``)."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream or sys.stdout
        self._stage: float | None = None
        self._fraction = 0.0

    def _emit(self, *lines: str) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()  # a pipe is block-buffered: Slicer would see nothing until exit

    def _end_stage(self) -> None:
        if self._stage is not None:
            self._emit("<filter-end>", f"<filter-name>{_text(self.name)}</filter-name>",
                       f"<filter-time>{time.monotonic() - self._stage:.2f}</filter-time>",
                       "</filter-end>")
            self._stage = None

    def stage(self, comment: str, fraction: float) -> None:
        """Start the stage ``comment``; ``fraction`` (0..1) of the whole job is done."""
        self._end_stage()
        self._fraction = max(self._fraction, min(1.0, float(fraction)))
        self._emit("<filter-start>", f"<filter-name>{_text(self.name)}</filter-name>",
                   f"<filter-comment>{_text(comment)}</filter-comment>", "</filter-start>",
                   f"<filter-progress>{self._fraction:.3f}</filter-progress>")
        self._stage = time.monotonic()

    def done(self) -> None:
        self._end_stage()
        self._emit("<filter-progress>1</filter-progress>")


def _text(value: str) -> str:
    """Text Slicer's tag scanner can hold: it reads up to the next ``<``."""
    return " ".join(str(value).replace("<", "(").replace(">", ")").split())


#: What a module's ``run`` returns: the files it wrote.
Runner = Callable[[argparse.Namespace, Progress], list[Path]]
#: Errors that are the user's input, not a bug: one line on stderr, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


@dataclass(frozen=True)
class CLIModule:
    """A Slicer CLI module: its description, its parameters, and the function that runs it.

    ``name`` is the Python module (``python -m napari_medgan.slicer.NAME``), ``launcher`` the
    file Slicer finds in its module path (no ``.``), ``script`` the console script.
    """

    name: str
    launcher: str
    script: str
    title: str
    description: str
    groups: tuple[Group, ...]
    run: Runner = field(compare=False)
    category: str = CATEGORY

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: parameter names repeat: {names}")
        indices = sorted(p.index for p in self.params if p.index is not None)
        if indices != list(range(len(indices))):
            raise ValueError(f"{self.name}: indices must run 0, 1, ... without gaps, "
                             f"got {indices}")
        if "." in self.launcher:
            raise ValueError(f"{self.name}: launcher {self.launcher!r}: Slicer skips file "
                             "names with a '.' on Linux and macOS")

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(p for g in self.groups for p in g.params)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def to_xml(self) -> str:
        """The Slicer Execution Model description (what ``--xml`` prints)."""
        root = ET.Element("executable")
        for tag, text in (("category", self.category), ("title", self.title),
                          ("description", self.description), ("version", __version__),
                          ("license", "BSD-3-Clause"), ("contributor", CONTRIBUTOR)):
            ET.SubElement(root, tag).text = text
        for group in self.groups:
            node = ET.SubElement(root, "parameters",
                                 {"advanced": "true"} if group.advanced else {})
            ET.SubElement(node, "label").text = group.label
            ET.SubElement(node, "description").text = group.description
            node.extend(p.element() for p in group.params)
        ET.indent(root, space="  ")
        return ('<?xml version="1.0" encoding="utf-8"?>\n'
                + ET.tostring(root, encoding="unicode") + "\n")

    def build_parser(self) -> argparse.ArgumentParser:
        parser = _OneLineParser(prog=self.script, description=f"{self.title}: "
                                f"{self.description} (3D Slicer CLI module; --xml prints "
                                "its description)")
        parser.add_argument("--xml", action="store_true",
                            help="print the Slicer Execution Model description and exit")
        for p in sorted((p for p in self.params if p.index is not None),
                        key=lambda p: p.index):
            p.add_to(parser)
        for p in self.params:
            if p.index is None:
                p.add_to(parser)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        """Entry point: ``--xml``, or parse, run and report; user errors are one line on
        stderr with exit status 2 (argparse's own errors too), tracebacks only for bugs."""
        argv = sys.argv[1:] if argv is None else list(argv)
        if "--xml" in argv:  # Slicer's discovery call: the description and nothing else
            sys.stdout.write(self.to_xml())
            sys.stdout.flush()
            return 0
        args = self.build_parser().parse_args(argv)
        progress = Progress(self.title)
        try:
            for p in self.params:
                p.check(getattr(args, p.name))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("default")
                written = self.run(args, progress)
            for w in caught:  # on stderr Slicer would show them as errors of a good run
                print(f"note: {_text(str(w.message))}")
            progress.done()
        except KeyboardInterrupt:
            print(f"{self.script}: interrupted", file=sys.stderr)
            return 130
        except USER_ERRORS as exc:
            print(f"{self.script}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        for path in written:
            print(f"wrote {path}")
        return 0


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage lines first: Slicer wants one line
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
