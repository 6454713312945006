"""Sharing a cascade the way diffusers users do, with no network: loading by Hub id from a cache folder in
huggingface_hub's layout (offline), pushing to a local stand-in for the Hub API (tests/hub_server.py), the model
card, and a pipeline that describes itself (repr, `python -m cascade info`)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from hub_server import FakeHub
from huggingface_hub import ModelCard
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download

from cascade import Pipeline, Stage
from cascade.errors import CheckpointError
from cascade.inference.hub import local_folder
from conftest import ROOT, run_in_process, tiny_stage

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def saved(tmp_path):
    """A 2-stage tiny cascade saved locally, with an eval report and a sample grid beside it."""
    pipe = Pipeline([tiny_stage(8, num_classes=3), tiny_stage(16, scale=2)])
    pipe.stages[0].origin = {"trained": {"steps": 600, "data": "ten built-in photos", "seconds": 300.0,
                                         "config": {"train": {"batch_size": 32, "lr": 4e-4}}}}
    pipe.save_pretrained(tmp_path / "local")
    (tmp_path / "local" / "eval").mkdir()
    (tmp_path / "local" / "eval" / "sr.json").write_text(json.dumps({"rows": {"SR3": {"psnr_y": 35.64}}}))
    Pipeline.from_pretrained(tmp_path / "local").save_pretrained(tmp_path / "local")  # saved again: the card has it
    return tmp_path / "local"


def cache_of(root, repo_id, folder, sha=SHA):
    """`folder` as huggingface_hub's cache holds a downloaded repository: models--ORG--NAME/snapshots/SHA/
    with refs/main naming SHA."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return root


def test_a_cached_repo_loads_by_id_offline_and_samples_bit_for_bit(saved, tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hf_constants.HF_HUB_OFFLINE  # no network at all
    cache = cache_of(tmp_path / "hub", "me/tiny", saved)
    local = Pipeline.from_pretrained(saved)
    by_id = Pipeline.from_pretrained("me/tiny", cache_dir=cache)
    assert by_id.folder == cache / "models--me--tiny" / "snapshots" / SHA and by_id.source == "me/tiny"
    # the same files, each weight loaded into storage of its own (cascade.models.weights): the same numbers
    a = local([0, 2], seed=0, output_type="pt", progress=False)
    b = by_id([0, 2], seed=0, output_type="pt", progress=False)
    assert torch.equal(a, b)
    assert Pipeline.from_pretrained("me/tiny", revision=SHA, cache_dir=cache, local_files_only=True).stages[0].origin
    stage = Stage.from_pretrained("me/tiny", subfolder="stage_1", cache_dir=cache)
    assert stage.kind.name == "sr3" and torch.equal(stage.unet.state_dict()["conv_in.weight"],
                                                     local.stages[1].unet.state_dict()["conv_in.weight"])


def test_a_local_folder_takes_precedence_over_an_id_of_the_same_name(saved, tmp_path, monkeypatch):
    (tmp_path / "me").mkdir()
    shutil.copytree(saved, tmp_path / "me" / "tiny")
    monkeypatch.chdir(tmp_path)
    assert Pipeline.from_pretrained("me/tiny").folder.resolve() == (tmp_path / "me" / "tiny").resolve()


def test_hub_failures_name_the_id_and_what_is_missing(saved, tmp_path):
    cache = cache_of(tmp_path / "hub", "me/tiny", saved)
    cases = [(dict(name="me/absent", cache_dir=cache), "me/absent: not in the Hub cache, and offline"),
             (dict(name="no such folder"), "no such folder: no such folder, and not a Hub id"),
             (dict(name="me/tiny", cache_dir=cache, revision="f" * 40), "me/tiny: not in the Hub cache")]
    for kwargs, message in cases:
        with pytest.raises(CheckpointError, match=message):
            Pipeline.from_pretrained(**kwargs)
    newer = tmp_path / "newer"
    shutil.copytree(saved, newer)
    index = json.loads((newer / "cascade.json").read_text())
    (newer / "cascade.json").write_text(json.dumps({**index, "version": 99}))
    with pytest.raises(CheckpointError, match="cascade.json has format version 99; this cascade reads up to 2"):
        Pipeline.from_pretrained(newer)
    proc = run_in_process("-m", "cascade", "info", "me/absent", "--cache-dir", cache, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: me/absent: not in the Hub")


def test_repr_and_info_describe_every_stage(saved, tmp_path):
    pipe = Pipeline.from_pretrained(saved)
    text = repr(pipe)
    lines = text.splitlines()
    assert lines[0].startswith("Pipeline: 2 stages") and "network evaluations per output pixel" in lines[0]
    assert "base" in lines[1] and "-> 8x8" in lines[1] and "dpm++ x3" in lines[1] and "guidance 1.5" in lines[1]
    assert "trained 600 steps on ten built-in photos (5.0 min)" in lines[1]
    assert "sr3 x2" in lines[2] and "8x8 -> 16x16" in lines[2] and "aug 0" in lines[2]
    # NFE per output pixel: the SR stage's 3 at every pixel, the base's 3 x 2 (guided) at a quarter of them
    assert "4.5 network evaluations per output pixel" in lines[0]
    proc = run_in_process("-m", "cascade", "info", saved)
    assert proc.stdout.splitlines()[:3] == lines and "eval/sr.json: SR3: psnr_y 35.64" in proc.stdout


def test_the_model_card_has_valid_metadata_and_what_the_folder_knows(saved):
    card = ModelCard.load(saved / "README.md")
    assert card.data.library_name == "cascade" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.license == "apache-2.0" and "super-resolution" in card.data.tags
    assert "| 0 | base |" in card.text and "psnr_y 35.64" in card.text and "Pipeline.from_pretrained" in card.text
    assert "600 steps at batch 32" in card.text


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub allowed to make requests (to the local stand-in only: every call names its endpoint)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    with FakeHub() as hub:
        yield hub


def test_push_to_hub_uploads_a_folder_that_loads_back(saved, tmp_path, online):
    pipe = Pipeline.from_pretrained(saved)
    url = pipe.push_to_hub("me/pushed", private=True, commit_message="first", token="fake", endpoint=online.url)
    assert online.repos["me/pushed"]["private"] and online.repos["me/pushed"]["commits"][-1]["message"] == "first"
    files = online.files("me/pushed")
    assert {"cascade.json", "README.md", "eval/sr.json", "stage_0/stage.json",
            "stage_1/unet/diffusion_pytorch_model.safetensors"} <= set(files) and SHA not in url
    assert b"library_name: cascade" in files["README.md"] and b"me/pushed" in files["README.md"]
    cache = tmp_path / "cache"
    snapshot_download("me/pushed", cache_dir=cache, endpoint=online.url, token="fake")
    back = Pipeline.from_pretrained("me/pushed", cache_dir=cache, local_files_only=True)
    assert torch.equal(back([1], seed=3, output_type="pt", progress=False), pipe([1], seed=3, output_type="pt",
                                                                                  progress=False))


def test_the_push_command_and_an_id_that_is_not_a_cascade_repo(saved, tmp_path, online):
    env = dict(os.environ, HF_HUB_OFFLINE="0", HF_ENDPOINT=online.url, HF_TOKEN="fake", HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "cascade", "push", str(saved), "me/cli", "--message", "from the CLI"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pushed" in proc.stdout and online.repos["me/cli"]["commits"][-1]["message"] == "from the CLI"
    other = tmp_path / "diffusers_like"
    other.mkdir()
    (other / "model_index.json").write_text("{}")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=online.url, token="fake")
    api.create_repo("google/ddpm-like")
    api.upload_folder(folder_path=str(other), repo_id="google/ddpm-like")
    with pytest.raises(CheckpointError, match=r"google/ddpm-like: not a cascade repository \(no cascade.json; it is a "
                                              r"diffusers pipeline"):
        local_folder("google/ddpm-like", "cascade.json", cache_dir=tmp_path / "c", endpoint=online.url)
    with pytest.raises(CheckpointError, match="me/none: not found on the Hub"):
        local_folder("me/none", "cascade.json", cache_dir=tmp_path / "c", endpoint=online.url)


def test_a_cascade_whose_stages_live_in_other_repos_loads(saved, tmp_path, online):
    """cascade.json naming {"repo": "me/base"} and {"repo": "me/sr"}: what `assemble --link` writes."""
    pipe = Pipeline.from_pretrained(saved)
    for repo, stage in (("me/base", pipe.stages[0]), ("me/sr", pipe.stages[1])):
        Pipeline([stage]).push_to_hub(repo, token="fake", endpoint=online.url)
    cache = tmp_path / "cache"
    for repo in ("me/base", "me/sr"):
        snapshot_download(repo, cache_dir=cache, endpoint=online.url, token="fake")
    proc = run_in_process("-m", "cascade", "assemble", tmp_path / "linked", "me/base", "me/sr", "--link",
                          "--cache-dir", cache)
    assert "2 stages" in proc.stdout
    index = json.loads((tmp_path / "linked" / "cascade.json").read_text())
    assert index["version"] == 2 and index["stages"][1] == {"repo": "me/sr", "revision": None, "subfolder": "stage_0"}
    assert not (tmp_path / "linked" / "stage_0").exists()  # references, not copies
    linked = Pipeline.from_pretrained(tmp_path / "linked", cache_dir=cache, local_files_only=True)
    assert torch.equal(linked([0], seed=1, output_type="pt", progress=False),
                       pipe([0], seed=1, output_type="pt", progress=False))
