"""prefetch: what a profile needs from the hub (listed without any request), the pre-quantized
repository Unsloth really loads, and the offline read path: a cache laid out as the real
fetch leaves it, with rows in each dataset's hub schema, read back through the course's own
loaders with the hub switched off.

The command runs through ``cli.main`` in this process (``run_cli``, tests/conftest.py), with
the environment a fresh ``python -m medreason_lib prefetch`` would get: prefetch reads
HF_HOME, HF_HUB_OFFLINE and the cache variables when it runs, not at import. ``--check``
still starts its own child process (``prefetch.check``), which must begin with the hub off;
that child's output is read with ``capfd``."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import datasets
import huggingface_hub
import pytest
from datasets.naming import camelcase_to_snakecase

from conftest import run_cli
from medreason_lib import data
from medreason_lib.data.raw_formats import MMLU_SUBJECTS, official_pubmedqa_test_pmids
from medreason_lib.models.tiny import tiny_model_path
from medreason_lib.runtime import install, prefetch
from medreason_lib.settings.profiles import PROFILES

GPU_PROFILES = [p for p in PROFILES.values() if p.uses_unsloth]


def _env(home: Path, **extra) -> dict:
    """This process's HF_ settings unset, HF_HOME at ``home`` (``None`` unsets, for run_cli)."""
    env = {k: None for k in os.environ if k.startswith(("HF_", "HUGGINGFACE_"))}
    return env | {"HF_HOME": str(home), "MEDREASON_PROFILE": "tiny"} | extra


def medreason(capfd, *args, env: dict) -> SimpleNamespace:
    """``python -m medreason_lib ARGS`` with ``env``, run in this process (``run_cli``); the
    output of the child process ``--check`` starts follows the command's own."""
    capfd.readouterr()
    done = run_cli(*args, env=env)
    child = capfd.readouterr()
    done.stdout += child.out
    done.stderr += child.err
    return done


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def _answer(self):
        type(self).requests.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.end_headers()

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    """A local HTTP server as HF_ENDPOINT that records every request it gets."""
    _Recorder.requests = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", _Recorder.requests
    server.shutdown()


# --------------------------------------------------------------------------- --dry-run


def _expected_repos(profile) -> set[str]:
    """Every (repo, config) the loaders read for ``profile``, from data.py's own tables."""
    repos = {profile.model_id, prefetch.UNSLOTH_4BIT[profile.model_id]}
    hub = {task: (repo, config) for task, (repo, config, _) in data.HUB_IDS.items()}
    repos |= {f"{r} [{c}]" if c else r for t, (r, c) in hub.items() if t != "mmlu_medical"}
    repos.add("{} [{}]".format(*data.PUBMEDQA_ARTIFICIAL))
    repos |= {f"{data.HUB_IDS['mmlu_medical'][0]} [{s}]" for s in MMLU_SUBJECTS}
    return repos


def test_dry_run_lists_every_repository_and_sends_no_request(tmp_path, monkeypatch, capfd):
    """Online, but nothing may be asked: this process's hub libraries read HF_HUB_OFFLINE at
    import (the test session sets it), so they are switched online here, and every connection
    this process tries is refused and recorded."""
    connections = []

    def refuse(sock, address):
        connections.append(address)
        raise ConnectionRefusedError(f"the dry run connected to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    folder = tmp_path / "shared-drive"
    done = medreason(capfd, "prefetch", "--profile", "3b", "--reference", "--dry-run",
                     "--to", str(folder), env=_env(tmp_path / "home"))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    listed = {re.sub(r"\s+", " ", m) for m in re.findall(r"^  (?:model|dataset)\s+(.+?)(?: \(|:)",
                                                        out, re.M)}  # fmt: skip
    assert _expected_repos(PROFILES["3b"]) | {"hooman650/MedQwen3B-Reasoner"} == listed, out
    assert "(train, test)" in out and "medmcqa (validation)" in out  # the hub splits read
    assert "nothing fetched" in out and f"HF_HOME={folder.resolve()}" in out
    assert "HF_HUB_OFFLINE=1" in out and "HF_DATASETS_OFFLINE=1" in out
    assert connections == [] and not folder.exists() and not (tmp_path / "home").exists()


def test_tiny_needs_nothing_and_a_real_fetch_refuses_offline(tmp_path, capfd):
    env = _env(tmp_path / "home", HF_HUB_OFFLINE="1")
    done = medreason(capfd, "prefetch", "--profile", "tiny", env=env)
    assert done.returncode == 0 and "needs nothing from the hub" in done.stdout
    done = medreason(capfd, "prefetch", "--profile", "3b", "--to", str(tmp_path / "d"), env=env)
    assert done.returncode == 2 and "HF_HUB_OFFLINE is set" in done.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.name)
def test_needs_follow_the_profile(profile):
    labels = {" ".join(i.label.split()) for i in prefetch.needs(profile)}
    assert {re.sub(r" \(.*", "", label).split(" ", 1)[1] for label in labels} == (
        _expected_repos(profile)
    )
    # a profile that trains on MedQA only reads MedQA's train split, not PubMedQA's PQA-A
    other = profile.replace(mix_weights={"medqa": 1.0}, train_splits={})
    items = {(i.repo_id, i.config): i for i in prefetch.needs(other)}
    assert items[(data.HUB_IDS["medqa"][0], None)].splits == ("train", "test")
    assert data.PUBMEDQA_ARTIFICIAL not in items
    assert items[("openai/gsm8k", "main")].splits == ("test",)  # evaluation only
    bundled = profile.replace(data_source="bundled")
    assert {i.kind for i in prefetch.needs(bundled)} == {"model"}
    with pytest.raises(ValueError, match="no reference model"):
        prefetch.needs(PROFILES["20b"], reference=True)


def test_the_4bit_repositories_are_the_ones_the_pinned_unsloth_loads():
    """Unsloth's loader maps a 16-bit id to a pre-quantized repository with load_in_4bit
    (loader_utils.__get_model_name: FLOAT_TO_INT_MAPPER[name.lower()], then BAD_MAPPINGS);
    the mapper is plain data, run here from the pinned wheel."""
    pin = install.read_pins(install.ROOT / "requirements-gpu.txt")["training"]["unsloth"]
    wheels = sorted((install.ROOT / ".cache" / "wheels").glob(f"unsloth-{pin}-*.whl"))
    if not wheels:
        pytest.fail(f"unsloth {pin} wheel not in .cache/wheels: run `make wheels`", pytrace=False)
    with zipfile.ZipFile(wheels[0]) as wheel:
        mapper = wheel.read("unsloth/models/mapper.py").decode()
        loader_utils = wheel.read("unsloth/models/loader_utils.py").decode()
    assert not re.search(r"^\s*(import|from)\s", mapper, re.M)  # data only: safe to run
    namespace: dict = {}
    exec(compile(mapper, "unsloth/models/mapper.py", "exec"), namespace)
    bad = {k.lower() for k in re.findall(r'"([^"]+)"\.lower\(\)\s*:', loader_utils)}
    assert bad, "BAD_MAPPINGS not found in loader_utils.py"
    for profile in GPU_PROFILES:
        assert profile.load_in_4bit
        mapped = namespace["FLOAT_TO_INT_MAPPER"][profile.model_id.lower()]
        assert mapped.lower() not in bad
        assert prefetch.UNSLOTH_4BIT[profile.model_id] == mapped, profile.name


# --------------------------------------------------------------------------- the offline read


def _hub_rows(repo: str, config: str | None, split: str) -> list[dict]:
    """A few rows in the hub schema of each dataset the course reads."""
    if repo == "qiaojin/PubMedQA":
        test = sorted(official_pubmedqa_test_pmids())[:3] if config == "pqa_labeled" else []
        others = [str(90000000 + i) for i in range(3 if config == "pqa_labeled" else 4)]
        labels = ["yes", "no", "maybe"] if config == "pqa_labeled" else ["yes", "no"]
        return [
            {"pubid": int(pmid), "question": f"Does treatment {k} help?",
             "context": {"contexts": [f"Abstract {k}."], "labels": ["RESULTS"],
                         "meshes": ["Humans"]},
             "long_answer": "It did.", "final_decision": labels[k % len(labels)]}
            for k, pmid in enumerate(test + others)
        ]  # fmt: skip
    if repo == "openai/gsm8k":
        n = 3 if split == "train" else 2
        return [{"question": f"What is {k} + 1000?", "answer": f"{k} + 1000 = {k + 1000}\n"
                 f"#### {k + 1000:,}"} for k in range(n)]  # fmt: skip
    if repo == "GBaker/MedQA-USMLE-4-options":
        return [{"question": f"A {k}-year-old has a fever. Next step?", "answer": "Rest",
                 "options": {"A": "Rest", "B": "Surgery", "C": "CT", "D": "Wait"},
                 "meta_info": "step1", "answer_idx": "A"} for k in range(2)]  # fmt: skip
    if repo == "openlifescienceai/medmcqa":
        return [{"id": f"mcq-{k}", "question": f"Which nerve {k}?", "opa": "Ulnar",
                 "opb": "Radial", "opc": "Median", "opd": "Axillary", "cop": k,
                 "choice_type": "single", "exp": "", "subject_name": "Anatomy",
                 "topic_name": ""} for k in range(2)]  # fmt: skip
    if repo == "cais/mmlu":
        choices = ["one", "two", "three", "four"]
        return [{"question": f"{config} question {k}?", "subject": config, "choices": choices,
                 "answer": k} for k in range(2)]  # fmt: skip
    raise AssertionError(f"no test rows for {repo}: add them to _hub_rows")


def _write_hub_cache(home: Path, items: list[prefetch.Item]) -> None:
    """What ``load_dataset(repo, config)`` leaves in HF_HOME/datasets after a real fetch,
    built from local parquet files laid out as the hub repository (a README listing the
    configs): the datasets cache names a repo ``<owner>___<name>`` and a local folder
    ``<name>``, so the prepared folder is moved to the hub name. Models: a hub-cache snapshot
    of the tiny model (config, weights, tokenizer) under each model id."""
    cache = home / "datasets"
    by_repo: dict[str, list[prefetch.Item]] = {}
    for item in items:
        if item.kind == "model":
            snapshot = home / "hub" / ("models--" + item.repo_id.replace("/", "--"))
            (snapshot / "refs").mkdir(parents=True)
            (snapshot / "refs" / "main").write_text("0" * 40)
            shutil.copytree(tiny_model_path("qwen2"), snapshot / "snapshots" / ("0" * 40))
        else:
            by_repo.setdefault(item.repo_id, []).append(item)
    for repo, configs in by_repo.items():
        owner, name = repo.split("/")
        local = home.parent / "src" / owner / name
        meta = []
        for item in configs:
            sub = item.config or "data"
            for split in item.splits:
                (local / sub).mkdir(parents=True, exist_ok=True)
                rows = datasets.Dataset.from_list(_hub_rows(repo, item.config, split))
                rows.to_parquet(str(local / sub / f"{split}-00000-of-00001.parquet"))
            if item.config:
                files = "".join(f"  - split: {s}\n    path: {sub}/{s}-*\n" for s in item.splits)
                meta.append(f"- config_name: {item.config}\n  data_files:\n{files}")
        header = f"---\nconfigs:\n{''.join(meta)}---\n" if meta else ""
        (local / "README.md").write_text(header)
        for item in configs:
            datasets.load_dataset(str(local), item.config, cache_dir=str(cache))
        (cache / camelcase_to_snakecase(name)).rename(
            cache / f"{owner}___{camelcase_to_snakecase(name)}"
        )


@pytest.fixture(scope="module")
def prefetched(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefetched") / "hf"
    items = prefetch.needs(PROFILES["3b"])
    _write_hub_cache(home, items)
    return home, items


def test_a_prefetched_folder_is_read_offline_by_the_course_loaders(prefetched, fake_hub, capfd):
    home, items = prefetched
    endpoint, requests = fake_hub
    assert all(prefetch.is_cached(item, home) for item in items)
    env = _env(home.parent / "elsewhere", HF_ENDPOINT=endpoint)  # HF_HOME is not the folder
    done = medreason(capfd, "prefetch", "--profile", "3b", "--to", str(home), "--check", env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for item in items:
        if item.kind == "model":
            assert f"model {item.repo_id}: config and tokenizer load offline" in out
    expected = {  # task/split: the rows _hub_rows wrote that the loader keeps
        "pubmedqa/train": 3, "pubmedqa/train_artificial": 4, "pubmedqa/test": 3,
        "gsm8k/train": 3, "gsm8k/test": 2, "medqa/test": 2, "medmcqa/test": 2,
        "mmlu_medical/test": 2 * len(MMLU_SUBJECTS),
    }  # fmt: skip
    for name, n in expected.items():
        assert re.search(rf"^{name}: {n} items from hub ", out, re.M), (name, out)
    assert "offline check: ok" in out and requests == []


def test_a_missing_config_fails_the_offline_check(prefetched, tmp_path, capfd):
    home, items = prefetched
    partial = tmp_path / "hf"
    shutil.copytree(home, partial, symlinks=True)
    anatomy = next(i for i in items if i.config == "anatomy")
    shutil.rmtree(partial / "datasets" / "cais___mmlu" / "anatomy")
    assert not prefetch.is_cached(anatomy, partial)
    assert prefetch.is_cached(next(i for i in items if i.config == "college_biology"), partial)
    done = medreason(capfd, "prefetch", "--profile", "3b", "--to", str(partial), "--check",
                     env=_env(tmp_path / "elsewhere"))  # fmt: skip
    assert done.returncode == 1
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("NOT OFFLINE")]
    assert "mmlu_medical/test" in line and "prefetch --profile 3b" in line


def test_offline_env_points_every_cache_at_the_folder(tmp_path):
    env = prefetch.offline_env(tmp_path / "f")
    assert env["HF_HOME"] == str((tmp_path / "f").resolve())
    assert env["HF_HUB_CACHE"].endswith("/f/hub") and env["HF_DATASETS_CACHE"].endswith(
        "/f/datasets"
    )
    assert prefetch.offline_env() == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
