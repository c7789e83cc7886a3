"""Mesh -> GLB: the only package that imports CuMesh and FlexGEMM, always inside functions.

``export_glb`` is o_voxel's ``to_glb`` taken apart into timed phases and made faster where the time
went (``bake``), with closest points on the decoded surface in torch (``closest``, in place of
CuMesh's research-only cuBVH), mesh hygiene in torch (``clean``), UV padding and texture encoding (``texture``),
Draco geometry (``compress``) and our own GLB writer (``glb``). ``run`` puts them in order.
"""

from .glb import Compression
from .run import ExportedGlb, GlbOptions, export_glb

__all__ = ["Compression", "ExportedGlb", "GlbOptions", "export_glb"]
