"""The export's CPU phases, encode and write, before and after, side by side in one run (no GPU needed).

    python benchmarks/export_cpu.py [--repeat 3] [--threads 3]

On a mesh shaped like the default job's (200k faces, about 335k vertices after UV seams: a noisy
sphere cut into charts of 2 and 18 faces) and two 2048² textures (noise, as random weights bake, and
smooth charts padded by push-pull), it prints:

1. encode + write as the export did them (textures in two threads, then Draco encode and decode)
   against what it does now (Draco on a worker thread while the textures encode, WebP method 0),
   best wall time of ``--repeat`` runs each, alternated; and the CPU time of Draco's encode and of the
   decode that tells the accessor counts. On the GPU the Draco thread also overlaps the bake.
2. WebP methods 0, 1 and 4 at quality 80 on both textures: CPU seconds, megabytes and PSNR.
3. The GLB's size at the defaults, against the 8 MB budget.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trellis_mv.export.clean import vertex_normals  # noqa: E402
from trellis_mv.export.compress import draco_encode  # noqa: E402
from trellis_mv.export.glb import TexturedMesh, write_glb  # noqa: E402
from trellis_mv.export.texture import encode_images, push_pull  # noqa: E402

SIZE = 2048


def default_like_mesh(rows: int = 317, seed: int = 0) -> dict[str, np.ndarray]:
    """A noisy uv-sphere grid of ``rows`` x ``rows`` quads; quad rows go into bands of height 1 (89% of
    bands) or 3, each band cut into square charts, every chart with its own vertices and atlas cell."""
    rng = np.random.default_rng(seed)
    theta, phi = np.linspace(0.02, np.pi - 0.02, rows + 1), np.linspace(0, 2 * np.pi, rows + 1)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    radius = 0.4 * (1 + 0.02 * rng.standard_normal(t.shape))
    grid = np.stack([radius * np.sin(t) * np.cos(p), radius * np.sin(t) * np.sin(p), radius * np.cos(t)], -1).reshape(-1, 3)
    heights = np.where(rng.random(rows) < 0.89, 1, 3)
    band_start = np.concatenate([[0], np.cumsum(heights)])
    band_start = band_start[band_start < rows]
    height = np.minimum(heights[: len(band_start)], rows - band_start)
    band_of_row = np.repeat(np.arange(len(band_start)), height)
    i, j = np.meshgrid(np.arange(rows), np.arange(rows), indexing="ij")
    k = height[band_of_row][:, None].repeat(rows, 1)
    chart = band_of_row[:, None] * rows + j // k
    a, b, c, d = i * (rows + 1) + j, i * (rows + 1) + j + 1, (i + 1) * (rows + 1) + j, (i + 1) * (rows + 1) + j + 1
    corners = np.stack([np.stack([a, c, b], -1), np.stack([b, c, d], -1)], 2).reshape(-1, 3)
    face_chart = np.repeat(chart.reshape(-1), 2)
    keys, inverse = np.unique(np.stack([corners.reshape(-1), np.repeat(face_chart, 3)], 1), axis=0, return_inverse=True)
    faces = inverse.reshape(-1, 3).astype(np.int64)
    vertex, vertex_chart = keys[:, 0], keys[:, 1]
    charts, cell = np.unique(vertex_chart, return_inverse=True)
    cells = int(np.ceil(np.sqrt(len(charts))))
    row, col = vertex // (rows + 1), vertex % (rows + 1)
    band = vertex_chart // rows
    size = height[np.minimum(band, len(height) - 1)]
    local = np.stack([(col - (vertex_chart % rows) * size) / size, (row - band_start[band]) / size], 1)
    uvs = (np.stack([cell % cells, cell // cells], 1) + 0.05 + 0.9 * np.clip(local, 0, 1)) / cells
    vertices = grid[vertex].astype(np.float32)
    normals = vertex_normals(torch.from_numpy(vertices), torch.from_numpy(faces)).numpy()
    return {"vertices": vertices, "faces": faces, "normals": normals, "uvs": uvs.astype(np.float32)}


def textures(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    field = np.stack([0.5 + 0.4 * np.sin(9 * x + 3 * y), 0.5 + 0.4 * np.sin(7 * y - 2 * x + 1), 0.5 + 0.3 * np.cos(30 * x * y)], -1)
    field += 0.03 * rng.standard_normal(field.shape)
    mask = torch.from_numpy((rng.random((SIZE // 32, SIZE // 32)) < 0.65).repeat(32, 0).repeat(32, 1))
    smooth = (push_pull(torch.from_numpy(field).float(), mask).clamp(0, 1) * 255).to(torch.uint8).numpy()
    return {"noise": rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "smooth": smooth}


def webp(pixels: np.ndarray, method: int) -> tuple[bytes, float]:
    buffer, start = io.BytesIO(), time.process_time()
    Image.fromarray(pixels).save(buffer, "WEBP", quality=80, method=method)
    return buffer.getvalue(), time.process_time() - start


def psnr(data: bytes, pixels: np.ndarray) -> float:
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((back - pixels) ** 2)))


def before(geometry: dict, images: list[np.ndarray]) -> bytes:
    with ThreadPoolExecutor(2) as pool:
        encoded = [data for data, _ in pool.map(lambda pixels: webp(pixels, 1), images)]
    return write_glb(TexturedMesh(**geometry, base_color=encoded[0], metallic_roughness=encoded[1], image_format="webp"))


def after(geometry: dict, images: list[np.ndarray], threads: int) -> bytes:
    with ThreadPoolExecutor(threads) as pool:
        draco = pool.submit(draco_encode, geometry["vertices"], geometry["faces"], geometry["normals"], geometry["uvs"])
        encoded = encode_images(images, "webp", pool)
        mesh = TexturedMesh(**geometry, base_color=encoded[0], metallic_roughness=encoded[1], image_format="webp")
        return write_glb(mesh, draco=draco.result())


def best_wall(function, repeat: int) -> tuple[float, bytes]:
    times, result = [], b""
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=3, help="the export's threads (torch's count at most 3)")
    args = parser.parse_args()
    geometry, pictures = default_like_mesh(), textures()
    images = [pictures["noise"], pictures["noise"][..., ::-1].copy()]
    print(f"mesh: {len(geometry['faces'])} faces, {len(geometry['vertices'])} vertices; textures {SIZE}²")

    old = new = float("inf")
    for _ in range(args.repeat):  # alternated, so that a busy moment hits both
        seconds, old_glb = best_wall(lambda: before(geometry, images), 1)
        old = min(old, seconds)
        seconds, new_glb = best_wall(lambda: after(geometry, images, args.threads), 1)
        new = min(new, seconds)
    start = time.process_time()
    draco = draco_encode(geometry["vertices"], geometry["faces"], geometry["normals"], geometry["uvs"])
    draco_cpu = time.process_time() - start
    import DracoPy

    start = time.process_time()
    DracoPy.decode(draco.data)
    decode_cpu = time.process_time() - start
    print(f"1. encode+write: before {old:.2f} s, after {new:.2f} s (after/before {new / old:.2f}); "
          f"Draco encode+decode {draco_cpu:.2f} s CPU, of which the decode {decode_cpu:.2f} s")

    print("2. WebP q80: method, CPU s, MB, PSNR dB")
    for name, pixels in pictures.items():
        rows = []
        for method in (0, 1, 4):
            data, cpu = min((webp(pixels, method) for _ in range(args.repeat)), key=lambda pair: pair[1])
            rows.append(f"m{method} {cpu:.2f} s {len(data) / 1e6:.3f} MB {psnr(data, pixels):.2f} dB")
        print(f"   {name}: " + "; ".join(rows))

    print(f"3. GLB at the defaults: {len(new_glb) / 1e6:.2f} MB (before {len(old_glb) / 1e6:.2f} MB; budget 8 MB), "
          f"of which geometry {len(draco.data) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
