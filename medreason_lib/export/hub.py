"""Push an exported folder to the Hugging Face Hub.

The token comes from ``HF_TOKEN`` in the environment and goes to the Hub client only: it is
never printed, logged or written anywhere. ``check_push`` refuses (with ``ExportUnavailable``,
before any heavy work) when the repository, the token or the network is missing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medreason_lib.settings import paths
from medreason_lib.training.runs import ExportUnavailable

TOKEN_ENV = "HF_TOKEN"
REPO_ENV = "MEDREASON_HUB_REPO"


class MissingToken(ExportUnavailable):
    """A push was asked for without ``HF_TOKEN`` in the environment."""


def hub_token() -> str:
    """The Hub token from ``HF_TOKEN``; ``MissingToken`` (which never shows a token) if unset."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise MissingToken(
            f"pushing to the Hugging Face Hub needs a write token in the environment variable "
            f"{TOKEN_ENV} (create one at https://huggingface.co/settings/tokens; on Colab keep "
            "it in Secrets): it is read from the environment only, never printed or saved"
        )
    return token


def hub_repo(repo_id: str | None = None) -> str:
    """``repo_id``, else ``MEDREASON_HUB_REPO``; checked to look like ``user/name``."""
    repo = repo_id or os.environ.get(REPO_ENV, "").strip()
    if not repo:
        raise ExportUnavailable(
            f"no Hub repository named: pass one (export --push your-name/medreason-model) or "
            f"set {REPO_ENV}=your-name/medreason-model"
        )
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ExportUnavailable(f"{repo!r} is not a Hub repository id of the form user/name")
    return repo


def check_push(repo_id: str | None = None) -> tuple[str, str]:
    """``(repo_id, token)`` when a push can run; ``ExportUnavailable`` (before any heavy work)
    when the repository, the token or the network is missing."""
    repo = hub_repo(repo_id)
    token = hub_token()
    if paths.hub_offline():
        raise ExportUnavailable(
            "HF_HUB_OFFLINE=1 is set (the tiny profiles set it, to stay offline): pushing needs "
            "the network; run with HF_HUB_OFFLINE=0 to push"
        )
    return repo, token


def _upload(folder: Path, repo_id: str, token: str, private: bool, path_in_repo: str | None):
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        path_in_repo=path_in_repo,
        commit_message="Upload medreason export",
        ignore_patterns=["training_args.bin", "*.pt"],
    )
    return f"https://huggingface.co/{repo_id}"


def push_to_hub(
    folder: str | Path,
    repo_id: str | None = None,
    *,
    private: bool = True,
    path_in_repo: str | None = None,
) -> str:
    """Upload an exported folder (``adapter``, ``merged`` or ``gguf``) to a Hub repository
    (created private if missing). The token comes from ``HF_TOKEN`` and is passed to the Hub
    client only. Returns the repository's URL."""
    repo, token = check_push(repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"nothing to push: {folder} is not a folder")
    url = _upload(folder, repo, token, private, path_in_repo)
    print(f"pushed {folder} to {url}" + (f" ({path_in_repo}/)" if path_in_repo else ""))
    return url
