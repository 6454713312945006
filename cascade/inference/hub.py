"""Pipelines and stages by Hugging Face Hub id, as diffusers users load and share theirs.

`local_folder(name, ...)` turns what a user passes to `from_pretrained` into a local folder:

- a folder that exists is used as it is (a local folder keeps precedence over an id of the same name);
- otherwise `name` must be a Hub id, `org/name`: its files come through `huggingface_hub.snapshot_download`,
  so the cache (`cache_dir`, `HF_HUB_CACHE`), revisions (a branch, a tag or a commit), offline mode
  (`HF_HUB_OFFLINE=1`, `local_files_only=True`) and tokens behave exactly as in diffusers.

`cascade.json` (or `stage.json`) is fetched first, so an id that is not a cascade repository is named as
such before anything large is downloaded. Every failure is one `CheckpointError` line that names the id
and what is missing: not on the Hub, no such revision, offline and not in the cache, not a cascade repo.

`push_folder` uploads a saved folder with `huggingface_hub` (`create_repo`, then `upload_folder`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CheckpointError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name (a folder path with one slash could look alike)


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(str(name))) and not str(name).startswith((".", "/")) and ".." not in str(name)


def local_folder(name: str | Path, index: str, revision: str | None = None, cache_dir: str | Path | None = None,
                 local_files_only: bool | None = None, token: str | bool | None = None, endpoint: str | None = None,
                 subfolder: str | None = None) -> Path:
    """The local folder of a pipeline (`index` "cascade.json") or stage ("stage.json") given as a folder or
    a Hub id (then, with `subfolder`, the folder inside the repository)."""
    path = Path(name)
    if path.exists() or not is_repo_id(str(name)):
        if revision is not None or subfolder is not None:
            raise CheckpointError(f"{name}: a local folder has no revision or subfolder (those are for Hub ids)")
        if not path.exists():
            raise CheckpointError(f"{name}: no such folder, and not a Hub id (org/name)")
        return path
    from huggingface_hub import snapshot_download

    inside = f"{subfolder}/" if subfolder else ""
    options = dict(revision=revision, cache_dir=cache_dir, local_files_only=bool(local_files_only), token=token,
                   endpoint=endpoint)
    _fetch_index(str(name), inside + index, options)
    try:
        root = snapshot_download(str(name), allow_patterns=[f"{inside}*"] if inside else None, **options)
    except Exception as e:  # the same failures as the index's, between the two calls
        raise CheckpointError(_why(str(name), revision, e)) from None
    return Path(root) / subfolder if subfolder else Path(root)


def _fetch_index(repo_id: str, filename: str, options: dict) -> None:
    """Download `filename` alone first: an id that is not a cascade repository fails here, before the weights."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        hf_hub_download(repo_id, filename, **options)
    except RemoteEntryNotFoundError:  # the repository is there, the file is not (offline misses are another error)
        hint = _what_else(repo_id, options)
        raise CheckpointError(f"{repo_id}: not a cascade repository (no {filename}{hint})") from None
    except Exception as e:
        raise CheckpointError(_why(repo_id, options.get("revision"), e)) from None


def _what_else(repo_id: str, options: dict) -> str:
    """'; it is a diffusers pipeline (model_index.json)' where the repository says what it is."""
    try:
        from huggingface_hub import HfApi

        files = set(HfApi(endpoint=options.get("endpoint"), token=options.get("token")).list_repo_files(
            repo_id, revision=options.get("revision")))
    except Exception:
        return ""
    if "model_index.json" in files:
        return "; it is a diffusers pipeline (model_index.json): load it with diffusers"
    if "config.json" in files:
        return "; it holds a single model (config.json), not a cascade"
    return ""


def _why(repo_id: str, revision: str | None, e: Exception) -> str:
    """One line naming the id and what is missing, for an error of huggingface_hub."""
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    if isinstance(e, RevisionNotFoundError):
        return f"{repo_id}: no revision {revision!r} on the Hub"
    if isinstance(e, GatedRepoError):
        return f"{repo_id}: gated repository; accept its terms on the Hub and pass a token (token= or `hf auth login`)"
    if isinstance(e, RepositoryNotFoundError):
        return (f"{repo_id}: not found on the Hub (a private repository needs a token: token= or `hf auth login`)")
    if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return (f"{repo_id}: not in the Hub cache, and offline (HF_HUB_OFFLINE=1 or local_files_only=True); load it "
                f"once online, or give a local folder")
    return f"{repo_id}: cannot download from the Hub ({type(e).__name__}: {' '.join(str(e).split())[:200]})"


def push_folder(folder: str | Path, repo_id: str, private: bool | None = None, commit_message: str | None = None,
                token: str | bool | None = None, endpoint: str | None = None, revision: str | None = None) -> str:
    """Upload `folder` to the model repository `repo_id` (created if missing); returns the commit's URL."""
    from huggingface_hub import HfApi

    if not is_repo_id(repo_id):
        raise CheckpointError(f"{repo_id}: not a Hub id (org/name)")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                 commit_message=commit_message or "Upload cascade pipeline")
    except Exception as e:
        raise CheckpointError(f"{repo_id}: cannot push ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    return str(getattr(info, "commit_url", info))
