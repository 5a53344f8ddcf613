import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from _nets import tiny_unet
from napari_tiled_unet import ModelFileError, load_model, predict, save_model


def test_round_trip_keeps_weights_config_and_metadata(tmp_path):
    net = tiny_unet("valid", depth=3, num_classes=4)
    path = save_model(net, tmp_path / "m.pt", class_names=["bg", "a", "b", "c"], axes="YX")
    loaded = load_model(path)
    assert loaded.config == net.config
    assert loaded.metadata["class_names"] == ["bg", "a", "b", "c"]
    assert not loaded.training
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    image = np.random.default_rng(0).random((70, 90), dtype=np.float32)
    np.testing.assert_array_equal(
        predict(image, net, output="probabilities"), predict(image, path, output="probabilities")
    )


def test_file_holds_no_pickled_code(tmp_path):
    path = save_model(tiny_unet(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    assert set(payload) >= {"format", "config", "state_dict", "metadata"}


def test_truncated_file(tmp_path):
    path = save_model(tiny_unet(), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable napari-tiled-unet model"):
        load_model(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelFileError, match="not a napari-tiled-unet model file"):
        load_model(other)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_objects_are_refused_without_running_them(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "napari-tiled-unet model", "x": Payload()}, f)
    with pytest.raises(ModelFileError):
        load_model(path)
    assert "code ran" not in capsys.readouterr().out
    whole = tmp_path / "whole.pt"
    torch.save(tiny_unet(), whole)  # a pickled nn.Module, as some tools save
    with pytest.raises(ModelFileError):
        load_model(whole)


def test_interrupted_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = save_model(tiny_unet(), tmp_path / "m.pt", note="old")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_unet(), path, note="new")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind


def test_killed_save_leaves_old_file_intact(tmp_path):
    """A process killed while writing a big model leaves the previous file readable."""
    path = save_model(tiny_unet(), tmp_path / "m.pt", note="old")
    code = (
        "import os, threading, torch\n"
        "from napari_tiled_unet import UNet, save_model\n"
        "real = torch.save\n"
        "def slow(obj, f):\n"
        "    f.write(b'partial'); f.flush(); os._exit(9)\n"
        "torch.save = slow\n"
        f"save_model(UNet(1, 2, base_channels=4), {str(path)!r})\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert load_model(path).metadata["note"] == "old"


def test_bad_metadata_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"Normalization\.mode"):
        save_model(tiny_unet(), tmp_path / "m.pt", normalization={"mode": "zscore"})
    assert not (tmp_path / "m.pt").exists()


def test_channel_selection_round_trips_and_is_checked(tmp_path):
    path = save_model(
        tiny_unet(in_channels=2), tmp_path / "m.pt", channels=[2, 0], source_channels=3
    )
    loaded = load_model(path)
    assert loaded.metadata["channels"] == [2, 0] and loaded.metadata["source_channels"] == 3
    with pytest.raises(ValueError, match=r"selection \[2\] has 1 channel\(s\) but the model"):
        save_model(tiny_unet(in_channels=2), tmp_path / "bad.pt", channels=[2])
    assert not (tmp_path / "bad.pt").exists()
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["source_channels"] = 2  # channel 2 of 2-channel images
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(ModelFileError, match=r"damaged model file.*does not fit images of 2"):
        load_model(tmp_path / "damaged.pt")
