"""trellis-mv: several photos of one object -> one textured GLB, with TRELLIS.2 on RunPod."""

__version__ = "0.1.0"
