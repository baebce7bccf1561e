"""Side by side: layers in napari's grid, one per labelled cell, and back again as they were.

Entering the grid changes the user's layers (order, colormap, contrast limits, visibility,
name labels); :class:`LayerLook` records all of it first and puts it back afterwards, so
"Side by side" leaves no trace in the layer list.
"""

from __future__ import annotations

from napari_medgan._widgets._common import layer_kind


def grid_of(viewer):
    """napari's grid settings of ``viewer`` (``viewer.canvas.grid``; ``viewer.grid`` before
    napari 0.6)."""
    return getattr(getattr(viewer, "canvas", None), "grid", None) or viewer.grid


def arrange_grid(viewer, real: str, shown: list[str]) -> LayerLook:
    """Show layer ``real`` (top left) and ``shown`` alone in napari's grid, in that order,
    each cell labelled with its layer's name, the image layers with ``real``'s colormap and
    contrast limits (dims, hence the slice, are shared); hide the others. Returns the look
    the layers had before, to :meth:`~LayerLook.restore`."""
    layers = viewer.layers
    before = LayerLook.take(layers)
    ref = layers[real]
    for name in shown:
        layer = layers[name]
        if layer_kind(layer) == layer_kind(ref) == "image":
            layer.colormap, layer.contrast_limits = ref.colormap, ref.contrast_limits
    keep = {real, *shown}
    for layer in layers:
        layer.visible = layer.name in keep
        if layer.name in keep:
            layer.name_overlay.visible = True  # label each cell
    for i, name in enumerate([real, *shown]):  # grid cells follow the layer order
        if layers.index(name) != i:
            layers.move(layers.index(name), i)  # real first: top left
    grid = grid_of(viewer)
    grid.stride, grid.enabled = 1, True
    return before


class LayerLook:
    """The layer order and each layer's look (visibility, name label, colormap, contrast
    limits and their range) at one moment, to put back after "Side by side"."""

    def __init__(self, order: list[str], looks: dict[str, dict]) -> None:
        self.order, self.looks = order, looks

    @classmethod
    def take(cls, layers) -> LayerLook:
        looks = {}
        for layer in layers:
            look = {"visible": layer.visible, "name_overlay": layer.name_overlay.visible}
            if layer_kind(layer) == "image":
                look.update(colormap=layer.colormap,
                            contrast_limits_range=tuple(layer.contrast_limits_range),
                            contrast_limits=tuple(layer.contrast_limits))
            looks[layer.name] = look
        return cls([layer.name for layer in layers], looks)

    def restore(self, layers) -> None:
        """Put the look back on the layers still there; layers added since keep theirs and
        stay above the others."""
        for layer in layers:
            look = self.looks.get(layer.name)
            if look is None:
                continue
            if "colormap" in look:
                layer.colormap = look["colormap"]
                layer.contrast_limits_range = look["contrast_limits_range"]
                layer.contrast_limits = look["contrast_limits"]
            layer.name_overlay.visible = look["name_overlay"]
            layer.visible = look["visible"]
        present = {layer.name for layer in layers}
        order = [n for n in self.order if n in present]
        order += [layer.name for layer in layers if layer.name not in self.looks]
        for i, name in enumerate(order):
            if layers.index(name) != i:
                layers.move(layers.index(name), i)
