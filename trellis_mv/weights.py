"""Where the worker's weights are: baked into the image, a RunPod cached model, or a folder of yours.

TRELLIS.2 needs four Hugging Face repositories: ``microsoft/TRELLIS.2-4B``, the two its
``pipeline.json`` names by hub id (``microsoft/TRELLIS-image-large``'s sparse-structure decoder and
the gated ``facebook/dinov3-vitl16-pretrain-lvd1689m``), and the background remover
(``ZhengPeng7/BiRefNet``). Each is looked for in these sources, in this order:

1. **baked into the image**: ``/models/<name>/``, the layout ``builder/download_weights.py`` writes,
   with the revision of each folder in ``/models/weights.json``;
2. **RunPod cached model**: ``/runpod-volume/huggingface-cache/hub``, the Hugging Face cache layout
   (``models--<org>--<name>/snapshots/<revision>/``) RunPod fills from the endpoint's *Model* field
   (one repository per endpoint; a gated one needs the endpoint's Hugging Face token);
3. **TRELLIS_MV_MODEL_DIR**: a network volume or any folder, in either layout. Set to the
   ``TRELLIS.2-4B`` folder itself (the older meaning, and the default ``/models/TRELLIS.2-4B``), its
   parent is the folder searched.

A repository is taken at the revision pinned in ``trellis_mv/revisions.py`` (generated from
``builder/versions.env``) from the first source that has it; if no source has that revision, from
the first source with any, and :meth:`Found.describe` says which revision that is. Cache sources are
read with huggingface_hub's own cache functions (``snapshot_download(local_files_only=True)``,
``scan_cache_dir``), never over the network. The background remover is
``Settings.background_model``: a folder (used as is when it exists, else the repository of that
name is looked up as above) or a hub id such as ``briaai/RMBG-2.0``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import revisions
from .config import Settings
from .errors import StartupError

__all__ = ["BAKED", "RUNPOD_CACHE", "Found", "Source", "Weights", "checkpoint", "default_sources", "find_repo",
           "find_weights"]

BAKED = Path("/models")
RUNPOD_CACHE = Path("/runpod-volume/huggingface-cache/hub")


@dataclass(frozen=True)
class Source:
    """A place weights may be: a folder of ``<name>/`` repositories, or a Hugging Face cache."""

    name: str
    root: Path

    def cache_root(self) -> Path | None:
        """The Hugging Face cache folder of this source, if it is one (``<root>`` or ``<root>/hub``)."""
        for folder in (self.root, self.root / "hub"):
            if folder.is_dir() and any(child.name.startswith("models--") for child in folder.iterdir()):
                return folder
        return None

    def __str__(self) -> str:
        return f"{self.name} ({self.root})"


@dataclass(frozen=True)
class Found:
    """One repository on disk: its folder, where it came from, and the revision it is at (None: unknown)."""

    repo: str
    path: Path
    source: Source
    revision: str | None

    @property
    def pinned(self) -> bool:
        """Whether this is the revision the worker pins."""
        return self.revision is not None and self.revision == revisions.PINNED.get(self.repo)

    def describe(self) -> str:
        """``repo@revision from <source> (<folder>)``, saying so when it is not the pinned revision."""
        expected = revisions.PINNED.get(self.repo)
        at = f"@{self.revision[:12]}" if self.revision else ""
        text = f"{self.repo}{at} from {self.source.name} ({self.path})"
        if expected and not self.pinned:
            text += f" [revision {self.revision or 'unknown'}, not the pinned {expected[:12]}]"
        return text


@dataclass(frozen=True)
class Weights:
    """The folders the loader reads: TRELLIS.2, the repositories ``pipeline.json`` names, the remover."""

    model: Found
    named: dict[str, Found]
    background: Found

    @property
    def model_dir(self) -> Path:
        """The TRELLIS.2-4B folder (``pipeline.json``, ``ckpts/``)."""
        return self.model.path

    def path(self, ref: str) -> Path:
        """Where a model ``pipeline.json`` names lives: ``ckpts/x`` in TRELLIS.2, ``owner/repo[/path]`` elsewhere."""
        parts = ref.split("/")
        if len(parts) < 2 or parts[0] == "ckpts":
            return self.model_dir / ref
        repo = "/".join(parts[:2])
        if repo not in self.named:
            raise StartupError(f"weights: pipeline.json names {ref}, whose repository {repo} was not looked for")
        return self.named[repo].path.joinpath(*parts[2:])

    def describe(self) -> str:
        """One line per repository: where it was found and at which revision."""
        return "; ".join(found.describe() for found in (self.model, *self.named.values(), self.background))


def checkpoint(model: Path) -> Path:
    """The safetensors file of the trellis2 model at ``model`` (a :meth:`Weights.path`; ``model``.json is its config)."""
    return model.with_name(model.name + ".safetensors")


def default_sources(settings: Settings, *, baked: Path = BAKED, runpod_cache: Path = RUNPOD_CACHE) -> list[Source]:
    """The three sources, in order, without duplicates (TRELLIS_MV_MODEL_DIR is /models by default)."""
    folder = Path(settings.model_dir)
    if folder.name == revisions.TRELLIS2.split("/")[1] or (folder / "pipeline.json").is_file():
        folder = folder.parent
    sources = [Source("the image", baked), Source("the RunPod cached model", runpod_cache),
               Source("TRELLIS_MV_MODEL_DIR", folder)]
    unique: dict[Path, Source] = {}
    for source in sources:
        unique.setdefault(source.root, source)
    return list(unique.values())


def find_repo(repo: str, sources: Iterable[Source]) -> Found | None:
    """The repository at its pinned revision from the first source that has it, else at any revision."""
    candidates = [found for source in sources if (found := _in_source(repo, source)) is not None]
    return next((found for found in candidates if found.pinned), candidates[0] if candidates else None)


def find_weights(settings: Settings, sources: list[Source] | None = None) -> Weights:
    """Every repository the worker loads, or ``StartupError`` naming each missing one and how to provide it."""
    sources = default_sources(settings) if sources is None else sources
    model = find_repo(revisions.TRELLIS2, sources)
    named_repos = _named_by_pipeline(model) if model is not None else list(revisions.NAMED_BY_PIPELINE)
    named = {repo: find_repo(repo, sources) for repo in named_repos}
    background = _background(settings.background_model, sources)
    missing = [repo for repo, found in [(revisions.TRELLIS2, model), *named.items()] if found is None]
    problems = [_missing(repo, sources) for repo in missing]
    if isinstance(background, str):
        problems.append(background)
    if problems:
        raise StartupError("weights: " + "; ".join(problems))
    return Weights(model=model, named=named, background=background)


def _in_source(repo: str, source: Source) -> Found | None:
    cache = source.cache_root()
    if cache is not None:
        return _in_cache(repo, cache, source)
    folder = source.root / repo.split("/", 1)[1]
    if not folder.is_dir():
        return None
    return Found(repo, folder, source, _baked_revision(source.root, folder.name, repo))


def _in_cache(repo: str, cache: Path, source: Source) -> Found | None:
    # Imported here, not at the top: the head start imports this module before it reads the weights,
    # and huggingface_hub (0.4 s warm, more from a cold disk) is needed only for a cache source.
    from huggingface_hub import scan_cache_dir, snapshot_download
    from huggingface_hub.errors import CacheNotFound, LocalEntryNotFoundError

    pinned = revisions.PINNED.get(repo)
    if pinned is not None:
        try:
            path = snapshot_download(repo, revision=pinned, cache_dir=cache, local_files_only=True)
        except LocalEntryNotFoundError:
            pass
        else:
            return Found(repo, Path(path), source, pinned)
    try:
        cached = scan_cache_dir(cache)
    except CacheNotFound:
        return None
    entry = next((r for r in cached.repos if r.repo_id == repo and r.repo_type == "model"), None)
    if entry is None or not entry.revisions:
        return None
    # What RunPod fetched last is what refs/main names; otherwise the newest snapshot.
    newest = max(entry.revisions, key=lambda revision: ("main" in revision.refs, revision.last_modified))
    return Found(repo, newest.snapshot_path, source, newest.commit_hash)


def _baked_revision(root: Path, name: str, repo: str) -> str | None:
    try:
        record = json.loads((root / "weights.json").read_text(encoding="utf-8")).get(name, {})
    except (OSError, ValueError, AttributeError):
        return None
    return record.get("revision") if isinstance(record, dict) and record.get("repo") == repo else None


def _named_by_pipeline(model: Found) -> list[str]:
    """The hub repositories TRELLIS.2's ``pipeline.json`` names (its decoder and image encoder)."""
    try:
        args = json.loads((model.path / "pipeline.json").read_text(encoding="utf-8"))["args"]
        refs = [*args["models"].values(), args["image_cond_model"]["args"]["model_name"]]
    except (OSError, ValueError, KeyError, TypeError):
        return list(revisions.NAMED_BY_PIPELINE)  # the weights check then names the broken pipeline.json
    repos = ["/".join(ref.split("/")[:2]) for ref in refs if len(ref.split("/")) >= 2 and not ref.startswith("ckpts/")]
    return sorted(set(repos))


def _background(setting: str, sources: list[Source]) -> Found | str:
    """The background remover, or the problem that stops it from being found."""
    path = Path(setting)
    if path.is_dir():
        source = next((s for s in sources if s.root == path.parent), Source("TRELLIS_MV_BACKGROUND_MODEL", path.parent))
        repo = next((r for r in revisions.PINNED if r.split("/")[1] == path.name), path.name)
        return Found(repo, path, source, _baked_revision(path.parent, path.name, repo))
    is_hub_id = not path.is_absolute() and len(path.parts) == 2
    repo = setting if is_hub_id else next((r for r in revisions.PINNED if r.split("/")[1] == path.name), None)
    if repo is None:
        return f"TRELLIS_MV_BACKGROUND_MODEL: {setting} does not exist and names no known repository"
    return find_repo(repo, sources) or _missing(repo, sources)


def _missing(repo: str, sources: list[Source]) -> str:
    name = repo.split("/", 1)[1]
    where = ", ".join(str(source) for source in sources)
    remedy = (f"set the endpoint's Model to {repo}, bake it into the image (builder/download_weights.py) or "
              f"put it in <TRELLIS_MV_MODEL_DIR>/{name}")
    if repo in revisions.GATED:
        remedy = (f"{repo} is gated: accept its licence on huggingface.co, then set the endpoint's Model to "
                  f"{repo} and give the endpoint a Hugging Face token with access (or bake it with "
                  f"docker build --secret id=hf_token,env=HF_TOKEN, or put it in <TRELLIS_MV_MODEL_DIR>/{name})")
    return f"{repo} is in none of {where}: {remedy}"
