"""Pipeline folders, local or on the Hub: what `Pipeline.save_pretrained` writes and `from_pretrained` reads.

    pipeline/
      cascade.json          {"format": "cascade", "version": 1, "stages": ["stage_0", "stage_1", ...]}
      stage_0/, stage_1/    one folder per stage (cascade.inference.stage)
      README.md             the model card (cascade.inference.card)
      samples.png, one_shot.json, eval/*.json    what the folder knows: kept when a loaded pipeline is saved

A stage may live in another repository: version 2 allows an entry {"repo": "org/name", "revision": "main",
"subfolder": "stage_0"} in place of a folder name (`python -m cascade assemble OUT org/base org/sr --link`
writes such a file). Folders of release 0.1 (version 1) load unchanged; a newer version than this code
reads is refused with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import CheckpointError
from ..io.atomic import old_path, replacing_folder
from .card import CARD_FILE, EVAL_FOLDER, SAMPLES_FILE, model_card
from .hub import is_repo_id, local_folder
from .stage import STAGE_FILE, Stage

CASCADE_FILE = "cascade.json"
VERSION = 2  # cascade.json format versions this code reads
KEPT = ("one_shot.json", SAMPLES_FILE, EVAL_FOLDER)  # copied from the folder a pipeline was loaded from


def hub_options(revision=None, cache_dir=None, local_files_only=None, token=None) -> dict:
    return dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)


def load_stages(name: str | Path, options: dict) -> tuple[list[Stage], Path]:
    """The stages of the pipeline `name` (a folder or a Hub id) and its local folder."""
    folder = local_folder(name, CASCADE_FILE, **options) if not _interrupted(name) else None
    if folder is None:
        raise CheckpointError(f"{name}: missing; a save into it was interrupted, and the previous pipeline is "
                              f"whole in {old_path(name)} (rename it back, or save again)")
    index = folder / CASCADE_FILE
    if not index.is_file():
        what = " (it is a stage folder: load it with Stage.from_pretrained)" if (folder / STAGE_FILE).is_file() else ""
        raise CheckpointError(f"{name}: not a cascade pipeline (missing {CASCADE_FILE}){what}")
    try:
        record = json.loads(index.read_text())
        entries = record["stages"]
        assert isinstance(entries, list) and entries
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CheckpointError(f"{name}: invalid {CASCADE_FILE} (expected {{'stages': [...]}})") from None
    if record.get("version", 1) > VERSION:
        raise CheckpointError(f"{name}: {CASCADE_FILE} has format version {record['version']}; this cascade reads up "
                              f"to {VERSION}: upgrade cascade")
    return [_stage(name, folder, entry, options) for entry in entries], folder


def _interrupted(name) -> bool:
    path = Path(name)
    return not path.exists() and old_path(path).is_dir()


def _stage(name, folder: Path, entry, options: dict) -> Stage:
    """One entry of cascade.json: a subfolder's name, or {"repo", "revision", "subfolder"} on the Hub."""
    if isinstance(entry, dict):
        repo = entry.get("repo")
        if not isinstance(repo, str) or not is_repo_id(repo):
            raise CheckpointError(f"{name}: {CASCADE_FILE} entry {entry!r} needs a Hub id as \"repo\"")
        inner = dict(options, revision=entry.get("revision"))
        stage_folder = local_folder(repo, STAGE_FILE, subfolder=entry.get("subfolder"), **inner)
        return Stage.from_pretrained(stage_folder)
    if not isinstance(entry, str) or not (folder / entry).is_dir():
        raise CheckpointError(f"{name}: stage folder {entry!r} listed in {CASCADE_FILE} is missing")
    return Stage.from_pretrained(folder / entry)


def save(pipe, folder: str | Path, extra_files: dict[str, str] | None = None, links: list | None = None,
         repo_id: str | None = None, license: str = "apache-2.0") -> None:
    """Write `pipe` as a pipeline folder in one step (cascade.io.atomic): its stages (or, where `links[i]`
    is a {"repo", ...} entry, a reference to a stage on the Hub), what the folder it was loaded from knows,
    `extra_files` {name: text}, cascade.json and the model card."""
    links = links or [None] * len(pipe.stages)
    source = getattr(pipe, "folder", None)
    with replacing_folder(folder) as tmp:
        entries = []
        for i, (stage, link) in enumerate(zip(pipe.stages, links)):
            if link is None:
                stage.save_pretrained(tmp / f"stage_{i}")
            entries.append(link or f"stage_{i}")
        for kept in KEPT:
            if source is not None and (Path(source) / kept).exists():
                copy = shutil.copytree if (Path(source) / kept).is_dir() else shutil.copy2
                copy(Path(source) / kept, tmp / kept)
        for file, text in (extra_files or {}).items():
            (tmp / file).write_text(text)
        version = 2 if any(isinstance(e, dict) for e in entries) else 1
        (tmp / CASCADE_FILE).write_text(json.dumps({"format": "cascade", "version": version, "stages": entries},
                                                   indent=2))
        (tmp / CARD_FILE).write_text(model_card(pipe, repo_id=repo_id, folder=tmp, license=license,
                                                name=Path(folder).name))
