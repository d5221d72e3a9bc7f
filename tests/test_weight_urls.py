"""Released weights by URL, against a local server laid out like ml-cvnets' release server (never the network):
the preset, ImageNet class names and BGR input from the release path, download once then the cache, offline
mode, a #sha256= pin, a transfer cut short or a file that is no weights refused with nothing kept, and a cached
copy damaged on disk fetched again."""

from __future__ import annotations

import io

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from tests.hubserver import FileServer
from tests.test_mobilevit_v2_v3 import to_cvnets_v2_names
from vitkit.cli.main import main
from vitkit.utils import file_digest

PATH = "/ml-research/models/cvnets-v2/classification/mobilevitv2/imagenet1k/256x256/mobilevitv2-0.5.pt"


@pytest.fixture(scope="module")
def release():
    """A MobileViTv2-0.5 with 1,000 classes, saved in ml-cvnets' layout as its release files are."""
    source = randomize_(vitkit.create_model("mobilevitv2_050")).eval()
    buffer = io.BytesIO()
    torch.save(to_cvnets_v2_names(source.state_dict()), buffer)
    return source, buffer.getvalue()


@pytest.fixture
def server(release, tmp_path, monkeypatch):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE")  # conftest sets it so that nothing reaches the network
    with FileServer({PATH: release[1]}) as files:
        files.address = files.url + PATH
        yield files


def gets(server) -> int:
    return sum(1 for method, _ in server.requests if method == "GET")


def test_an_ml_cvnets_url_gives_the_preset_imagenet_names_and_rgb_input(server, release):
    model = vitkit.create_model("mobilevitv2_050", pretrained=server.address).eval()
    assert model.load_result.source == "ml-cvnets" and model.num_classes == 1000
    assert model.class_names[0] == "tench, Tinca tinca" and model.class_names[999].startswith("toilet tissue")
    rgb = torch.rand(2, 3, 256, 256)
    with torch.no_grad():  # ml-cvnets' weights take BGR; the loaded model takes RGB
        torch.testing.assert_close(model(rgb), release[0](rgb.flip(1)), atol=1e-5, rtol=0)
    assert gets(server) == 1
    vitkit.create_model("mobilevitv2_050", pretrained=server.address)
    assert gets(server) == 1  # the second time from the cache
    with pytest.raises(ValueError, match="holds mobilevitv2_050 weights, not mobilevit_xxs"):
        vitkit.create_model("mobilevit_xxs", pretrained=server.address)


def test_predict_on_a_url_prints_imagenet_class_names(server, tmp_path, capsys):
    from tests.serving import sample_photos

    photo = sample_photos(tmp_path / "photos")[0]
    assert main(["predict", server.address, str(photo), "--top-k", "3"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    names = vitkit.create_model("mobilevitv2_050", pretrained=server.address).class_names
    assert any(name in line for name in names) and "%" in line  # names, not class indices


def test_offline_mode_uses_the_cache_only(server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="is not in the cache and HF_HUB_OFFLINE is set"):
        vitkit.create_model("mobilevitv2_050", pretrained=server.address)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    vitkit.create_model("mobilevitv2_050", pretrained=server.address)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    assert vitkit.create_model("mobilevitv2_050", pretrained=server.address).num_classes == 1000
    assert len(server.requests) == before


def test_a_sha256_pin_is_checked_and_a_wrong_file_is_not_kept(server, release, tmp_path):
    right = server.address + "#sha256=" + __import__("hashlib").sha256(release[1]).hexdigest()
    wrong = server.address + "#sha256=" + "0" * 64
    with pytest.raises(ValueError, match="wrong checksum"):
        vitkit.create_model("mobilevitv2_050", pretrained=wrong)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]
    assert vitkit.create_model("mobilevitv2_050", pretrained=right).num_classes == 1000


def test_a_cut_transfer_or_a_file_that_is_no_weights_keeps_nothing(server, tmp_path):
    server.truncate.add(PATH)
    with pytest.raises(ValueError, match="cut short.*nothing was kept"):
        vitkit.create_model("mobilevitv2_050", pretrained=server.address)
    server.truncate.clear()
    server.files[PATH + ".html"] = b"<html>Moved</html>"  # a server's error page under the file's name
    with pytest.raises(
        ValueError, match=r"is not a weights file vitkit reads \(is not a PyTorch weights file .*nothing was kept"
    ):
        vitkit.create_model("mobilevitv2_050", pretrained=server.address + ".html")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != ".lock"]
    assert vitkit.create_model("mobilevitv2_050", pretrained=server.address).num_classes == 1000  # a retry works


def test_a_cached_copy_damaged_on_disk_is_fetched_again(server, tmp_path):
    vitkit.create_model("mobilevitv2_050", pretrained=server.address)
    cached = next((tmp_path / "cache" / "weights").rglob("mobilevitv2-0.5.pt"))
    recorded = cached.with_name(cached.name + ".sha256").read_text().strip()
    assert recorded == file_digest(cached, "sha256")
    cached.write_bytes(cached.read_bytes()[:-100] + bytes(100))  # a damaged tail
    assert vitkit.create_model("mobilevitv2_050", pretrained=server.address).num_classes == 1000
    assert gets(server) == 2 and file_digest(cached, "sha256") == recorded


def test_release_paths_name_the_preset_and_size_and_keras_files_download_too(server, tmp_path):
    from tests.test_load_weights import KERAS
    from vitkit.weights.importer import import_weights
    from vitkit.weights.urls import cvnets_release

    base = "https://docs-assets.developer.apple.com/ml-research/models/"
    assert cvnets_release(base + "cvnets/classification/mobilevit_xxs.pt") == ("mobilevit_xxs", True, None)
    v2 = base + "cvnets-v2/classification/mobilevitv2/imagenet21k_to_1k/384x384/mobilevitv2-1.75.pt"
    assert cvnets_release(v2) == ("mobilevitv2_175", True, 384)
    assert cvnets_release("https://example.org/weights/mobilevit_xxs.pt") == (None, False, None)
    # a Keras file by URL: downloaded, kept (it is no torch pickle), and imported as a run
    server.files["/ckpt/checkpoint.weights.h5"] = (KERAS / "checkpoint.weights.h5").read_bytes()
    run = import_weights(
        server.url + "/ckpt/checkpoint.weights.h5", "mobilevit_xxs_keras", tmp_path / "run", list("abcde")
    )
    assert run.is_file()
