"""The Hugging Face revision the worker expects of each repository it loads.

Generated from builder/versions.env by ``builder/pins.py revisions > trellis_mv/revisions.py``;
tests/test_weights.py fails when the two differ. Do not edit by hand.
"""

TRELLIS2 = "microsoft/TRELLIS.2-4B"
# what TRELLIS.2-4B's pipeline.json names by hub id, and the default background remover
NAMED_BY_PIPELINE = ("microsoft/TRELLIS-image-large", "facebook/dinov3-vitl16-pretrain-lvd1689m")
BACKGROUND = "ZhengPeng7/BiRefNet"
GATED = ("facebook/dinov3-vitl16-pretrain-lvd1689m", "briaai/RMBG-2.0")
PINNED = {
    "ZhengPeng7/BiRefNet": "26e7919b869d089e5096e898c0492898f935604c",
    "briaai/RMBG-2.0": "5df4c9c76d8170882c34f6986e848ee07fd0ba43",
    "facebook/dinov3-vitl16-pretrain-lvd1689m": "ea8dc2863c51be0a264bab82070e3e8836b02d51",
    "microsoft/TRELLIS-image-large": "25e0d31ffbebe4b5a97464dd851910efc3002d96",
    "microsoft/TRELLIS.2-4B": "af44b45f2e35a493886929c6d786e563ec68364d",
}
