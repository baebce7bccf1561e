"""What 3D Slicer does with a CLI module, written from the Slicer Execution Model's documented
rules (no schema file is vendored): a structural validator of the XML description, and the
command line Slicer builds from it."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

EXECUTABLE_CHILDREN = {"category", "title", "description", "version", "documentation-url",
                       "license", "contributor", "acknowledgements", "parameters"}
EXECUTABLE_REQUIRED = ("category", "title", "description", "version", "contributor")
#: Parameter tags and the attributes each may carry.
PARAM_ATTRIBUTES = {
    "integer": {"multiple"}, "float": {"multiple"}, "double": {"multiple"},
    "boolean": {"hidden"}, "string": {"multiple"},
    "integer-vector": set(), "float-vector": set(), "double-vector": set(),
    "string-vector": set(), "string-enumeration": set(), "integer-enumeration": set(),
    "float-enumeration": set(), "double-enumeration": set(),
    "file": {"fileExtensions", "multiple"}, "directory": {"multiple"},
    "image": {"type", "fileExtensions", "reference", "hidden", "multiple"},
    "geometry": {"type", "fileExtensions", "reference", "hidden", "multiple"},
    "transform": {"type", "fileExtensions", "reference", "hidden", "multiple"},
    "table": {"type", "fileExtensions", "reference", "hidden", "multiple"},
}
PARAM_CHILDREN = {"name", "label", "description", "flag", "longflag", "default", "channel",
                  "index", "element", "constraints"}
CHANNEL_TAGS = {"image", "file", "directory", "geometry", "transform", "table"}
ENUM_TAGS = {t for t in PARAM_ATTRIBUTES if t.endswith("-enumeration")}
NUMBER_TAGS = {"integer": int, "float": float, "double": float}
IMAGE_TYPES = {"scalar", "label", "vector", "tensor", "diffusion-weighted",
               "dynamic-contrast-enhanced"}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_description(text: str) -> list[str]:
    """Problems of a CLI module description; ``[]`` when it follows the rules."""
    if not text.startswith("<?xml "):
        return ["the description must start with '<?xml ' (Slicer's parser checks it)"]
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
    problems: list[str] = []
    if root.tag != "executable":
        return [f"the outermost element must be <executable>, got <{root.tag}>"]
    tags = [child.tag for child in root]
    problems += [f"<executable> may not hold <{t}>" for t in tags if t not in EXECUTABLE_CHILDREN]
    problems += [f"<executable> needs exactly one <{t}>" for t in EXECUTABLE_REQUIRED
                 if tags.count(t) != 1 or not (root.findtext(t) or "").strip()]
    groups = root.findall("parameters")
    if not groups:
        problems.append("<executable> needs at least one <parameters> group")
    names, indices, params = [], [], []
    for group in groups:
        if set(group.attrib) - {"advanced"} or group.get("advanced", "false") not in ("true",
                                                                                    "false"):
            problems.append(f"<parameters> attributes {group.attrib}: only advanced=true|false")
        if not (group.findtext("label") or "").strip():
            problems.append("every <parameters> group needs a <label>")
        for child in group:
            if child.tag in ("label", "description"):
                continue
            if child.tag not in PARAM_ATTRIBUTES:
                problems.append(f"<parameters> may not hold <{child.tag}>")
                continue
            params.append(child)
    for p in params:
        name = (p.findtext("name") or "").strip()
        where = f"<{p.tag}> {name or '(no name)'}"
        children = [c.tag for c in p]
        problems += [f"{where}: unknown child <{t}>" for t in children if t not in PARAM_CHILDREN]
        problems += [f"{where}: <{t}> more than once" for t in set(children)
                     if t != "element" and children.count(t) > 1]
        problems += [f"{where}: attribute {a!r} not allowed" for a in p.attrib
                     if a not in PARAM_ATTRIBUTES[p.tag]]
        if not IDENTIFIER.match(name):
            problems.append(f"{where}: <name> must be letters, digits and '_', not starting "
                            "with a digit")
        names.append(name)
        for required in ("label", "description"):
            if not (p.findtext(required) or "").strip():
                problems.append(f"{where}: needs a <{required}>")
        channel = p.findtext("channel")
        if p.tag in CHANNEL_TAGS and channel not in ("input", "output"):
            problems.append(f"{where}: needs <channel>input</channel> or output, got {channel!r}")
        index, longflag, flag = p.findtext("index"), p.findtext("longflag"), p.findtext("flag")
        if index is not None:
            if longflag is not None or flag is not None:
                problems.append(f"{where}: <index> excludes <flag> and <longflag>")
            if not index.strip().isdigit():
                problems.append(f"{where}: <index> must be a non-negative integer")
            else:
                indices.append(int(index))
        elif longflag is None and flag is None:
            problems.append(f"{where}: needs an <index> or a <longflag>/<flag>")
        if longflag is not None and not IDENTIFIER.match(longflag.strip().lstrip("-")):
            problems.append(f"{where}: <longflag> {longflag!r} must be letters, digits, '_'")
        if flag is not None and len(flag.strip().lstrip("-")) != 1:
            problems.append(f"{where}: <flag> must be one character")
        if p.tag == "image" and p.get("type", "scalar") not in IMAGE_TYPES:
            problems.append(f"{where}: image type {p.get('type')!r} not in {sorted(IMAGE_TYPES)}")
        default = p.findtext("default")
        elements = [(e.text or "").strip() for e in p.findall("element")]
        if p.tag in ENUM_TAGS:
            if not elements:
                problems.append(f"{where}: an enumeration needs <element>s")
            if default is None or default.strip() not in elements:
                problems.append(f"{where}: default {default!r} is not one of {elements}")
        elif elements:
            problems.append(f"{where}: <element> only in enumerations")
        if p.tag in NUMBER_TAGS and default is not None:
            try:
                value = NUMBER_TAGS[p.tag](default.strip())
            except ValueError:
                problems.append(f"{where}: default {default!r} is not a {p.tag}")
                value = None
            limits = p.find("constraints")
            if limits is not None:
                try:
                    low, high, step = (float(limits.findtext(t)) for t in
                                       ("minimum", "maximum", "step"))
                except (TypeError, ValueError):
                    problems.append(f"{where}: <constraints> needs numeric minimum, maximum, "
                                    "step")
                else:
                    if not low <= high or step <= 0:
                        problems.append(f"{where}: constraints {low}..{high} step {step}")
                    elif value is not None and not low <= value <= high:
                        problems.append(f"{where}: default {value} outside {low}..{high}")
        elif p.find("constraints") is not None:
            problems.append(f"{where}: <constraints> only on numbers")
        if p.get("reference") is not None and p.get("reference") not in {
                (q.findtext("name") or "").strip() for q in params}:
            problems.append(f"{where}: reference {p.get('reference')!r} names no parameter")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"parameter names repeat: {repeated}")
    if sorted(indices) != list(range(len(indices))):
        problems.append(f"<index> values must be 0, 1, ... without gaps or repeats, "
                        f"got {sorted(indices)}")
    return problems


def parameters(text: str) -> list[ET.Element]:
    root = ET.fromstring(text.encode("utf-8"))
    return [p for g in root.findall("parameters") for p in g if p.tag in PARAM_ATTRIBUTES]


def slicer_command(text: str, executable: str, values: dict[str, str]) -> list[str]:
    """The command line Slicer builds for an executable CLI module: every flagged parameter
    in declaration order (``--longflag value``; scalars always, with their default when not
    set; files, directories, strings and images only when set; booleans as the bare flag
    when true), then the indexed ones in index order. ``values`` maps parameter names to
    what the user chose (file names for images, as Slicer's temporary files)."""
    flagged: list[str] = []
    indexed: dict[int, str] = {}
    for p in parameters(text):
        name = p.findtext("name").strip()
        value = str(values.get(name, (p.findtext("default") or "").strip()))
        if p.findtext("index") is not None:
            if not value:
                raise ValueError(f"No value assigned to {name!r}")  # Slicer refuses to run
            indexed[int(p.findtext("index"))] = value
            continue
        longflag = p.findtext("longflag")
        flag = ("--" + longflag.strip().lstrip("-")) if longflag else "-" + p.findtext("flag")
        if p.tag == "boolean":
            flagged += [flag] if value == "true" else []
        elif p.tag in ("image", "file", "directory", "string") and not value:
            continue
        else:
            flagged += [flag, value]
    return [executable, *flagged, *(indexed[i] for i in sorted(indexed))]


def slicer_environment() -> dict[str, str]:
    """The environment Slicer's launcher gives its modules: its own Python's home and path
    (which would break any other interpreter) and its libraries first on the search path."""
    env = dict(os.environ)
    env.update(PYTHONHOME="/opt/Slicer-5.8/lib/Python",
               PYTHONPATH="/opt/Slicer-5.8/lib/Python/lib/python3.12/site-packages",
               LD_LIBRARY_PATH="/opt/Slicer-5.8/lib/Slicer-5.8:" + env.get("LD_LIBRARY_PATH", ""),
               ITK_AUTOLOAD_PATH="", OMP_NUM_THREADS="2")
    return env
