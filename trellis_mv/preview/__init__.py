"""The preview of a finished mesh: a PNG contact sheet and the per-view self-check (``views_fit``).

``make_preview`` (``run``) renders what the GLB holds: camera maths (``cameras``), silhouettes and
shaded turntable frames (``render``, on the rasterizer of :mod:`trellis_mv.raster`, which the
export's bake shares), the camera search per view (``views_fit``) and the drawing (``sheet``).
"""

from .run import Preview, PreviewOptions, make_preview

__all__ = ["Preview", "PreviewOptions", "make_preview"]
