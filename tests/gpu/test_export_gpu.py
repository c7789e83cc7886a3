"""Our export on a real decoded TRELLIS.2 mesh at the default options, against o_voxel's ``to_glb``.

One 1024_cascade mesh (12 steps, one view, seed 7, random weights) is decoded once for the session
(``decoded`` in conftest.py; test_unwrap.py and test_raster_gpu.py use it too).
Then: our export at the defaults twice (the first pays Triton JIT and FlexGEMM autotune, the second is
what a warm worker pays; after it, Draco alone on this host's CPU and the worker's CPU budget), once
with ``remesh: false`` and once uncompressed; remesh + simplify with CuMesh's first simplify threshold
at 1e-8 (ours), 1e-7 and 1e-6 and at 256 instead of 512, each with the result's distance to the
decoded surface (ours also with the share of faces that face back into the object and its largest
pieces: the narrow band's inner sheet); o_voxel's ``to_glb`` on the same mesh, and our bake on ``to_glb``'s own unwrapped
mesh, so that the two bakes' textures share one UV layout and are compared texel by texel (to_glb finds
closest points with CuMesh's cuBVH, we with export/closest.py); our closest points against cuBVH's on
remeshing's queries and 3 M texel-like points. Every phase time, size and difference goes to ``record``;
the GLBs go to ``out_dir`` for the Khronos validator afterwards (no node on the device). About 130 s on
an H200 after a warm generation (4 exports ~10 s each, to_glb ~37 s, remeshes ~10 s, closest points
against cuBVH ~15 s); a cold first generation adds up to 90 s.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from trellis_mv.export import GlbOptions, export_glb

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _attribute(data: bytes, name: str) -> np.ndarray:
    """One accessor of an uncompressed GLB's first primitive ("indices" for the indices)."""
    json_length = struct.unpack("<I", data[12:16])[0]
    gltf = json.loads(data[20:20 + json_length])
    binary = data[20 + json_length + 8:]
    primitive = gltf["meshes"][0]["primitives"][0]
    accessor = gltf["accessors"][primitive["indices"] if name == "indices" else primitive["attributes"][name]]
    view = gltf["bufferViews"][accessor["bufferView"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor["type"]]
    values = np.frombuffer(binary, dtype, accessor["count"] * width, view["byteOffset"])
    return values.reshape(accessor["count"], width) if width > 1 else values


def _glb_is_sound(data: bytes) -> None:
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert (magic, version, length) == (b"glTF", 2, len(data))


@pytest.mark.parametrize(("name", "options"), [
    ("cold", GlbOptions()),
    ("warm", GlbOptions()),
    ("noremesh", GlbOptions(remesh=False)),
    # The validator cannot look inside Draco data: this one lets it check every normal and index.
    ("plain", GlbOptions(compression="none")),
])
def test_our_export_of_a_decoded_mesh(decoded, record, out_dir, name, options, monkeypatch):
    from contextlib import contextmanager

    from trellis_mv import timing
    from trellis_mv.export import run

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    peak_so_far: dict[str, float] = {}  # torch's peak above the start when each phase ended: where it jumps, that phase

    @contextmanager
    def timed_with_peak(timings, phase, **options):
        with timing.timed(timings, phase, **options):
            yield
        peak_so_far[phase] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 2)

    monkeypatch.setattr(run, "timed", timed_with_peak)
    start = time.perf_counter()
    glb = export_glb(decoded, options)
    seconds = time.perf_counter() - start
    _glb_is_sound(glb.data)
    (out_dir / f"export_1024_cascade_{name}.glb").write_bytes(glb.data)
    peak_gib = (torch.cuda.max_memory_allocated() - base) / 2**30
    record(f"export_gpu_{name}", {
        "seconds": round(seconds, 2), "phases": glb.timings, "bytes": len(glb.data),
        "vertices": glb.vertices, "faces": glb.faces,
        # torch's allocator only (our closest-point grid included): CuMesh allocates with cudaMalloc itself
        "torch_peak_gib_above_start": round(peak_gib, 2),
        "torch_peak_gib_when_each_phase_ended": peak_so_far,
    })
    assert 0 < glb.faces <= options.decimation_target
    # issue 20: at most 1 GiB over the 3.45 GiB the export took with xatlas and cuBVH (20 GiB when the
    # charts' eigensolver ran on all charts in one batch)
    assert peak_gib <= 4.45
    if name == "warm":  # what the write phase no longer waits for: Draco on this host's CPU, and the threads
        _record_draco_and_threads(glb.mesh, record)
    if options.compression == "none":  # what the validator will say about normals and faces, here already
        normals, positions = _attribute(glb.data, "NORMAL"), _attribute(glb.data, "POSITION")
        corners = positions[_attribute(glb.data, "indices").reshape(-1, 3)].astype(np.float64)
        areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) / 2
        record(f"export_gpu_{name}_checks", {"normal_length_error": float(np.abs(np.linalg.norm(normals, axis=1) - 1).max()),
                                             "smallest_face_area": float(areas.min())})
        assert np.abs(np.linalg.norm(normals, axis=1) - 1).max() < 1e-4
        assert areas.min() > 0
    expected = ({"clean", "bvh", "simplify", "unwrap", "unwrap_cluster", "unwrap_charts", "unwrap_pack", "bake", "pad", "encode", "write"}
                | ({"remesh"} if options.remesh else set()))
    assert set(glb.timings) == expected


def _record_draco_and_threads(mesh, record) -> None:
    import DracoPy

    from trellis_mv.export.compress import draco_encode
    from trellis_mv.threads import cpu_budget

    start = time.perf_counter()
    draco = draco_encode(mesh.vertices, mesh.faces, mesh.normals, mesh.uvs)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    DracoPy.decode(draco.data)
    threads, reason = cpu_budget()
    record("export_gpu_draco_on_host_cpu", {
        "encode_and_decode_s": round(encode_s, 3), "decode_s": round(time.perf_counter() - start, 3),
        "geometry_bytes": len(draco.data), "vertices_in": len(mesh.vertices), "vertices_out": draco.vertex_count,
        "cpu_budget": threads, "cpu_budget_reason": reason, "torch_threads": torch.get_num_threads(),
    })


def _distances(points: torch.Tensor, bvh) -> dict[str, float]:
    """Unsigned distances of ``points`` to the mesh behind ``bvh``, in voxels of the 1024 grid."""
    distance = bvh.unsigned_distance(points)[0] * 1024
    return {"mean": round(float(distance.mean()), 3), "p99": round(float(distance.quantile(0.99)), 3),
            "max": round(float(distance.max()), 3)}


def _largest_components(faces: torch.Tensor, count: int = 3) -> list[int]:
    """Face counts of the ``count`` largest connected components (vertex-connected), by label propagation."""
    labels = torch.arange(int(faces.max()) + 1, device=faces.device)
    corners = faces.long()
    while True:
        face_label = labels[corners].amin(dim=1)
        updated = labels.scatter_reduce(0, corners.reshape(-1), face_label.repeat_interleave(3), "amin")
        updated = updated[updated]  # pointer jumping: follow the label's own label
        if torch.equal(updated, labels):
            break
        labels = updated
    sizes = torch.bincount(labels[corners[:, 0]])
    return sizes[sizes > 0].sort(descending=True).values[:count].tolist()


# (remesh resolution, CuMesh's first simplify threshold): ours (bake.SIMPLIFY_THRESHOLD), then CuMesh's
# default and one between (each round is a pass over every face; the threshold grows tenfold only when
# a round removes under 1% of the faces, cumesh.CuMesh.simplify), then a coarser remesh. Each row records the time and
# how far the 200k-face result lies from the decoded surface, both ways, in voxels of the 1024 grid.
SIMPLIFY_VARIANTS = [(512, 1e-6), (512, 1e-8), (512, 1e-7), (256, 1e-6)]


@pytest.mark.parametrize(("resolution", "threshold"), SIMPLIFY_VARIANTS)
def test_simplify_after_remeshing_at(decoded, record, resolution, threshold):
    import cumesh

    from trellis_mv.export import bake

    cu, surface = bake.prepare(decoded)
    bvh = bake.surface_bvh(surface)
    torch.cuda.synchronize()
    start = time.perf_counter()
    bake.remesh(cu, surface, bvh, resolution)
    torch.cuda.synchronize()
    remeshed, remesh_seconds = cu.num_faces, time.perf_counter() - start
    start = time.perf_counter()
    cu.simplify(GlbOptions().decimation_target, options={"thresh": threshold})
    torch.cuda.synchronize()
    simplify_seconds = time.perf_counter() - start
    vertices, faces = cu.read()
    centroids = vertices[faces.long()].mean(dim=1)
    result = {
        "faces_after_remesh": remeshed, "remesh_s": round(remesh_seconds, 2), "simplify_s": round(simplify_seconds, 2),
        "faces": cu.num_faces, "to_surface_voxels": _distances(torch.cat([vertices, centroids]), bvh),
        "from_surface_voxels": _distances(surface.vertices[surface.faces.long()].mean(dim=1),
                                          cumesh.cuBVH(vertices, faces)),
    }
    if (resolution, threshold) == SIMPLIFY_VARIANTS[0]:
        # The narrow band's zero set is two sheets around a closed surface, one inside it: how much of
        # the result faces back into the object (a ray along its normal meets the decoded surface),
        # and the largest pieces it falls into.
        normals = torch.nn.functional.normalize(torch.linalg.cross(
            vertices[faces[:, 1].long()] - vertices[faces[:, 0].long()],
            vertices[faces[:, 2].long()] - vertices[faces[:, 0].long()]), dim=1)
        # (cuBVH's ray tracing: the harness may use it, the worker no longer does)
        _, hit, _ = cumesh.cuBVH(surface.vertices, surface.faces).ray_trace(centroids + normals * 1e-4, normals)
        result["facing_the_surface_share"] = round(float((hit >= 0).float().mean()), 3)
        result["largest_components_faces"] = _largest_components(faces)
    record(f"export_gpu_remesh_{resolution}_thresh_{threshold:g}", result)
    assert cu.num_faces <= GlbOptions().decimation_target < remeshed


def test_our_bake_against_o_voxels_on_one_uv_layout(decoded, record, out_dir):
    import o_voxel.postprocess  # not imported by o_voxel itself as built for the image (builder/lib.sh)
    from PIL import Image

    from trellis_mv.export import bake
    from trellis_mv.export.clean import UnwrappedMesh
    from trellis_mv.export.texture import push_pull, texture_images

    start = time.perf_counter()
    old = o_voxel.postprocess.to_glb(
        vertices=decoded.vertices, faces=decoded.faces, attr_volume=decoded.attrs, coords=decoded.coords,
        attr_layout=decoded.layout, voxel_size=decoded.voxel_size, aabb=[[-0.5] * 3, [0.5] * 3],
        decimation_target=200_000, texture_size=2048, remesh=True, remesh_band=1, remesh_project=0,
    )
    old_seconds = time.perf_counter() - start
    # to_glb's mesh back in TRELLIS.2's frame and the bake's UV convention (it swapped axes, flipped v).
    v = torch.as_tensor(np.asarray(old.vertices), dtype=torch.float32, device="cuda")
    uv = torch.as_tensor(np.asarray(old.visual.uv), dtype=torch.float32, device="cuda")
    unwrapped = UnwrappedMesh(
        vertices=torch.stack([v[:, 0], -v[:, 2], v[:, 1]], dim=1),
        faces=torch.as_tensor(np.asarray(old.faces), dtype=torch.int32, device="cuda"),
        uvs=torch.stack([uv[:, 0], 1 - uv[:, 1]], dim=1),
        normals=torch.zeros_like(v),
    )
    volume = bake.volume_of(decoded)
    _, surface = bake.prepare(decoded)
    attrs, mask = bake.bake(unwrapped, surface, bake.surface_bvh(surface), volume, 2048)
    base_color, metallic_roughness = texture_images(attrs, mask, volume.layout)

    material = old.visual.material
    old_base = np.asarray(material.baseColorTexture)[..., :3].astype(np.int16)
    old_mr = np.asarray(material.metallicRoughnessTexture)[..., 1:].astype(np.int16)  # G roughness, B metallic
    covered = mask.cpu().numpy()
    # Texels within 2 of a chart: what bilinear filtering and the first mipmaps read from the padding.
    band = torch.nn.functional.max_pool2d(mask[None, None].float(), 5, stride=1, padding=2)[0, 0].bool().cpu().numpy() & ~covered
    differences = {
        "base_color_covered": float(np.abs(base_color.astype(np.int16) - old_base)[covered].mean()),
        "metallic_roughness_covered": float(np.abs(metallic_roughness[..., 1:].astype(np.int16) - old_mr)[covered].mean()),
        "base_color_padding_band": float(np.abs(base_color.astype(np.int16) - old_base)[band].mean()),
        "covered_texels": int(covered.sum()),
        "band_texels": int(band.sum()),
    }
    record("export_gpu_o_voxel", {"seconds": round(old_seconds, 2), "vertices": len(old.vertices), "faces": len(old.faces)})
    record("export_gpu_bake_mean_abs_difference_0_255", differences)
    Image.fromarray(base_color).save(out_dir / "export_bake_ours.webp", quality=90)
    Image.fromarray(old_base.astype(np.uint8)).save(out_dir / "export_bake_o_voxel.webp", quality=90)
    # Same rasterization, projection and sampling: covered texels differ by rounding only.
    assert differences["base_color_covered"] < 1.0
    assert torch.equal(push_pull(attrs, mask)[mask], attrs[mask])


class _Timed:
    """Passes ``unsigned_distance`` on to a BVH, keeping the points asked about and the seconds taken."""

    def __init__(self, bvh):
        self.bvh, self.points, self.seconds = bvh, [], 0.0

    def unsigned_distance(self, points, return_uvw=False):
        torch.cuda.synchronize()
        start = time.perf_counter()
        answer = self.bvh.unsigned_distance(points, return_uvw)
        torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.points.append(points.clone())
        return answer


def _timed(make):
    torch.cuda.synchronize()
    start = time.perf_counter()
    value = make()
    torch.cuda.synchronize()
    return value, time.perf_counter() - start


def test_closest_points_against_cubvh(decoded, record):
    """Our closest points (export/closest.py) against CuMesh's cuBVH, which the export used until its
    research-only licence was found: the same remeshing, the same distances within the search radius
    (a lower bound beyond it), the same projection of texel-like points of the simplified mesh."""
    import cumesh

    from trellis_mv.export import bake

    cu, surface = bake.prepare(decoded)
    ours, ours_build = _timed(lambda: bake.surface_bvh(surface))
    theirs, their_build = _timed(lambda: cumesh.cuBVH(surface.vertices, surface.faces))
    for bvh in (ours, theirs):  # CUDA modules load on first use
        bvh.unsigned_distance(surface.vertices[:1000], return_uvw=True)
    radius = bake.SEARCH_RADIUS
    runs = {}
    for name, bvh in (("cubvh", theirs), ("closest", ours)):  # ours last: cu keeps our remeshed mesh
        timed = _Timed(bvh)
        bake.remesh(cu, surface, timed)
        runs[name] = {"faces": cu.num_faces, "seconds": timed.seconds, "points": timed.points}
    # Remeshing's own questions, as cuBVH's run asked them.
    asked = torch.cat(runs["cubvh"]["points"])
    exact = theirs.unsigned_distance(asked)[0]
    got = ours.unsigned_distance(asked)[0]
    near, beyond = exact < radius * (1 - 1e-4), exact > radius * (1 + 1e-4)
    remesh_max_abs = float((got[near] - exact[near]).abs().max())
    lower_bound_ok = bool(((got[beyond] <= exact[beyond] + 1e-6) & (got[beyond] >= radius * (1 - 1e-6))).all())
    # The bake's question: points spread over the simplified mesh, projected onto the decoded surface.
    bake.simplify(cu, GlbOptions().decimation_target)
    vertices, faces = cu.read()
    generator = torch.Generator(device="cuda").manual_seed(7)
    chosen = torch.randint(len(faces), (3_000_000,), device="cuda", generator=generator)
    weights = torch.rand(len(chosen), 3, device="cuda", generator=generator)
    texels = (vertices[faces[chosen].long()] * (weights / weights.sum(1, keepdim=True))[..., None]).sum(dim=1)
    (their_distance, their_face, their_uvw), their_query = _timed(lambda: theirs.unsigned_distance(texels, return_uvw=True))
    (our_distance, our_face, our_uvw), our_query = _timed(lambda: ours.unsigned_distance(texels, return_uvw=True))
    # The same grid searched by the torch path (what runs without Triton) instead of the kernel.
    (path_distance, path_face, _), path_query = _timed(lambda: replace(ours, corners=None).unsigned_distance(texels, return_uvw=True))
    kernel_vs_torch = {"max_abs": float((our_distance - path_distance).abs().max()),
                       "same_face": float((our_face == path_face).float().mean()), "torch_path_query_s": round(path_query, 4)}
    within = our_face >= 0
    corners = surface.vertices[surface.faces.long()]
    moved = ((corners[our_face[within]] * our_uvw[within, :, None]).sum(1)
             - (corners[their_face[within]] * their_uvw[within, :, None]).sum(1)).norm(dim=1)
    bake_max_abs = float((our_distance[within] - their_distance[within]).abs().max())
    record("closest_vs_cubvh_max_abs", max(remesh_max_abs, bake_max_abs))
    record("closest_build_s", round(ours_build, 4))
    record("cubvh_build_s", round(their_build, 4))
    record("closest_query_s", round(runs["closest"]["seconds"] + our_query, 4))
    record("cubvh_query_s", round(runs["cubvh"]["seconds"] + their_query, 4))
    record("closest_vs_cubvh", {
        "surface_faces": len(surface.faces), "search_radius": radius,
        "remesh": {name: {"faces": run["faces"], "query_s": round(run["seconds"], 4),
                          "points_per_call": [len(points) for points in run["points"]]} for name, run in runs.items()},
        "remesh_max_abs": remesh_max_abs, "remesh_lower_bound_ok": lower_bound_ok,
        "bake_points": len(texels), "bake_query_s": {"closest": round(our_query, 4), "cubvh": round(their_query, 4)},
        "bake_max_abs": bake_max_abs, "bake_beyond_radius": int((~within).sum()),
        "bake_cubvh_max_distance": float(their_distance.max()),
        "bake_same_face": float((our_face == their_face).float().mean()),
        "bake_projected_max_abs": float(moved.max()), "bake_projected_over_1e-5": int((moved > 1e-5).sum()),
        "kernel_vs_torch_path": kernel_vs_torch,
    })
    assert ours.corners is not None and kernel_vs_torch["max_abs"] < 1e-6
    assert remesh_max_abs < 1e-5 and bake_max_abs < 1e-5 and lower_bound_ok
    assert abs(runs["closest"]["faces"] - runs["cubvh"]["faces"]) <= 1e-3 * runs["cubvh"]["faces"]
    assert int((moved > 1e-5).sum()) <= 1e-4 * len(texels)


def _random_numbers(tensor: torch.Tensor) -> None:
    from trellis_mv.gpu_random import RANDOM_OR_CAPTURE

    with RANDOM_OR_CAPTURE:
        torch.rand(tensor.shape, device="cuda")


def _timed_step(tensor: torch.Tensor) -> None:
    from trellis_mv.timing import timed

    with timed({}, "step"):
        tensor.mul_(1.0)


@pytest.mark.parametrize("work", [_random_numbers, _timed_step], ids=["random_numbers", "timed_waits"])
def test_graph_captures_and_gpu_work_on_another_thread_take_turns(work):
    """The start's races (trellis_mv.gpu_random): the export captures CUDA graphs on one thread while
    another draws random numbers on the GPU, or waits for the whole GPU (a timed step's wait, the
    loader's last); either fails during a capture and breaks it (both once killed a start on the
    H200). Both sides hold the lock, and neither fails."""
    import threading

    from trellis_mv.export.lscm import _replayable

    state, other = torch.ones(1 << 16, device="cuda"), torch.ones(1 << 16, device="cuda")
    failures: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(400):
                work(other)
        except BaseException as error:  # the race's error, kept for the assertion below
            failures.append(error)

    working = threading.Thread(target=run)
    working.start()
    for _ in range(100):
        _replayable(lambda: state.mul_(1.0))()
    working.join()
    torch.cuda.synchronize()
    assert failures == []
