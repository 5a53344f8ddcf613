"""Never lose a user's file: every output path is checked against every input before any work.

Issue 16's cases, each on small generated files: outputs that are, hold or lie inside an
input, the model or another output; zarr folders this package did not write; batch name
collisions; outputs of one input published together or not at all; signals during cleanup;
long output names; FIFOs and empty paths as inputs.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tifffile
import zarr

from _helpers import running_command
from _nets import tiny_unet
from napari_tiled_unet import save_model
from napari_tiled_unet.cli import main

FAST = ["--tile", "64", "--device", "cpu"]


@pytest.fixture
def image(rng):
    return (rng.random((96, 112)) * 4000).astype(np.uint16)


@pytest.fixture
def work(tmp_path, image):
    """A folder with ``a.tif`` (96×112 uint16), its labels ``a_lab.tif`` and ``m.pt``."""
    tifffile.imwrite(tmp_path / "a.tif", image)
    tifffile.imwrite(tmp_path / "a_lab.tif", (image > 2000).astype(np.uint8))
    save_model(tiny_unet("same", depth=2), tmp_path / "m.pt")
    return tmp_path


def _fails(argv, capsys, *expected):
    """Run the command line; it must fail with one line naming each of ``expected``."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("napari-tiled-unet: error:"), last
    for text in expected:
        assert text in last, last
    return last


def _snapshot(folder):
    """Every file under ``folder`` with its bytes: what must not change."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _predict(work, *args):
    return ["predict", str(work / "a.tif"), "--model", str(work / "m.pt"), *FAST, *args]


# Section 1: data loss


def test_output_folder_holding_the_input_or_the_model_is_refused(work, capsys):
    """Case 1: ``predict d.zarr/in.tif -o d.zarr`` deleted the input and everything beside it."""
    folder = work / "d.zarr"
    folder.mkdir()
    (work / "a.tif").rename(folder / "in.tif")
    (folder / "notes.txt").write_text("keep me")
    before = _snapshot(work)
    argv = ["predict", str(folder / "in.tif"), "--model", str(work / "m.pt"), *FAST]
    _fails([*argv, "-o", str(folder)], capsys, "holds the input file", str(folder / "in.tif"))
    # the same for the model file stored in the output folder
    (work / "m.pt").rename(folder / "m.pt")
    tifffile.imwrite(work / "b.tif", np.ones((96, 112), np.uint16))
    before = _snapshot(work)
    argv = ["predict", str(work / "b.tif"), "--model", str(folder / "m.pt"), *FAST]
    _fails([*argv, "-o", str(folder)], capsys, "holds the model file")
    assert _snapshot(work) == before


def test_existing_zarr_folder_is_replaced_only_if_this_package_wrote_it(work, capsys):
    """Case 2: any existing ``X.zarr`` folder was replaced whole, unrelated files included."""
    mine = work / "mine.zarr"
    mine.mkdir()
    (mine / "notes.txt").write_text("not an output")
    foreign = work / "foreign.zarr"  # a zarr store, but another program's
    zarr.create_array(store=str(foreign), shape=(4, 4), dtype="uint8", fill_value=3)
    before = _snapshot(work)
    last = _fails(_predict(work, "-o", str(mine)), capsys, "did not write", "choose another name")
    assert "mine-labels.zarr" in last  # a name to use instead
    _fails(_predict(work, "-o", str(foreign)), capsys, "did not write")
    assert _snapshot(work) == before
    np.testing.assert_array_equal(zarr.open_array(str(foreign), mode="r")[:], 3)
    # Our own output, and an empty folder, are replaced.
    (work / "empty.zarr").mkdir()
    for name in ("own.zarr", "own.zarr", "empty.zarr"):
        assert main(_predict(work, "-o", str(work / name))) == 0
        assert zarr.open_array(str(work / name), mode="r").shape == (96, 112)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def test_training_output_is_checked_against_every_input_before_training(work, capsys, monkeypatch):
    """Case 3 (a validation image overwritten by the model) and case 9 (``train -o .``
    failing only after the whole run)."""
    from napari_tiled_unet import jobs

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(jobs, "plan_training", no_training)
    tifffile.imwrite(work / "v.tif", np.ones((96, 112), np.uint16))
    tifffile.imwrite(work / "v_lab.tif", np.ones((96, 112), np.uint8))
    before = _snapshot(work)
    train = ["train", "--image", str(work / "a.tif"), "--labels", str(work / "a_lab.tif")]
    valid = ["--validation-image", str(work / "v.tif"), "--validation-labels"]
    valid.append(str(work / "v_lab.tif"))
    _fails([*train, *valid, "-o", str(work / "v.tif")], capsys, "is the validation image")
    _fails([*train, *valid, "-o", str(work / "v_lab.tif")], capsys, "is the validation labels")
    resume = ["--resume", str(work / "m.pt")]
    _fails([*train, *resume, "-o", str(work / "m.pt")], capsys, "is the --resume model")
    os.link(work / "a_lab.tif", work / "hard.tif")
    _fails([*train, "-o", str(work / "hard.tif")], capsys, "the same file under another name")
    os.unlink(work / "hard.tif")
    started = time.monotonic()
    _fails([*train, "-o", str(work)], capsys, "is a folder", "model.pt")
    _fails([*train, "-o", "."], capsys, "is a folder")
    assert time.monotonic() - started < 5
    assert _snapshot(work) == before


def test_one_file_as_both_outputs_or_as_model_and_output_is_refused(work, capsys):
    """Case 4 (``-o s.tif --probabilities s.tif``) and case 5 (``--model m.tif -o m.tif``)."""
    before = _snapshot(work)
    out = str(work / "s.tif")
    _fails(_predict(work, "-o", out, "--probabilities", out), capsys, "is the output")
    assert not (work / "s.tif").exists()
    model = work / "m.tif"
    (work / "m.pt").rename(model)
    before = _snapshot(work)
    argv = ["predict", str(work / "a.tif"), "--model", str(model), *FAST]
    _fails([*argv, "-o", str(model)], capsys, "is the model file")
    # another name for the same file: a symlink, a hard link, a path through ".."
    (work / "link.tif").symlink_to(model)
    _fails([*argv, "-o", str(work / "link.tif")], capsys, "is the model file")
    os.link(work / "a.tif", work / "hard.tif")
    _fails([*argv, "-o", str(work / "hard.tif")], capsys, "is the input file", "another name")
    _fails([*argv, "-o", str(work / "sub" / ".." / "a.tif")], capsys, "is the input file")
    os.unlink(work / "link.tif")
    os.unlink(work / "hard.tif")
    assert _snapshot(work) == before


def test_output_reached_from_inside_it_is_refused_before_anything_moves(work, capsys, monkeypatch):
    """Case 6: from ``work.zarr/sub``, ``-o ../../work.zarr`` moved the folder away."""
    folder = work / "work.zarr"
    (folder / "sub").mkdir(parents=True)
    (work / "a.tif").rename(folder / "sub" / "in.tif")
    (work / "m.pt").rename(folder / "m.pt")
    before = _snapshot(work)
    monkeypatch.chdir(folder / "sub")
    argv = ["predict", "in.tif", "--model", "../m.pt", *FAST, "-o", "../../work.zarr"]
    _fails(argv, capsys, "holds the input file in.tif")
    assert _snapshot(work) == before
    assert sorted(p.name for p in work.iterdir()) == ["a_lab.tif", "work.zarr"]


def test_replacing_our_own_store_from_inside_it_keeps_its_meaning(work, monkeypatch):
    """The destination is resolved once: moving the old store away (and the working folder
    with it) does not change where the new one goes."""
    from napari_tiled_unet.io.store import write_array

    write_array(work / "own.zarr", np.zeros((32, 32), np.uint8))
    chunks = work / "own.zarr" / "c"
    chunks.mkdir(exist_ok=True)
    monkeypatch.chdir(chunks)
    write_array("../../own.zarr", np.full((32, 32), 7, np.uint8))
    np.testing.assert_array_equal(zarr.open_array(str(work / "own.zarr"), mode="r")[:], 7)
    assert sorted(p.name for p in work.iterdir()) == ["a.tif", "a_lab.tif", "m.pt", "own.zarr"]


def _batch_inputs(folder, names, image):
    """Write ``image`` under each name, each copy with other values."""
    for k, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / name, image // (k + 1))


def _check_outputs(pairs, model):
    """Each output holds the prediction of its own input."""
    from napari_tiled_unet import predict

    for source, made in pairs:
        expected = predict(tifffile.imread(source), model, tile_shape=(64, 64))
        np.testing.assert_array_equal(tifffile.imread(made), expected)


def test_batch_inputs_with_the_same_name_get_outputs_of_their_own(work, image, caplog):
    """Case 7: ``a/img.tif b/img.tif`` and ``x.tif x.tiff x.TIF`` collapsed into one output
    each, and every rerun skipped the others."""
    _batch_inputs(work, ["a/img.tif", "b/img.tif", "c/other.tif"], image)
    out = work / "out"
    argv = ["predict", str(work / "a/img.tif"), str(work / "b/img.tif"), str(work / "c/other.tif")]
    argv += ["--model", str(work / "m.pt"), *FAST, "-o", str(out)]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_img_labels.tif", "b_img_labels.tif", "other_labels.tif"]
    model = work / "m.pt"
    _check_outputs([(work / f"{d}/img.tif", out / f"{d}_img_labels.tif") for d in "ab"], model)
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    caplog.clear()
    assert main(argv) == 0  # a rerun skips exactly the inputs whose own outputs exist
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 3

    same = work / "same"
    _batch_inputs(same, ["x.tif", "x.tiff", "x.TIF"], image)
    assert main(["predict", str(same), "--model", str(work / "m.pt"), *FAST, "-o", str(same)]) == 0
    outputs = sorted(p.name for p in same.iterdir() if "_labels" in p.name)
    assert outputs == ["x.TIF_labels.tif", "x.tif-2_labels.tif", "x.tiff_labels.tif"]
    sources = ["x.TIF", "x.tif", "x.tiff"]
    _check_outputs([(same / s, same / o) for s, o in zip(sources, outputs, strict=True)], model)


def _fsize_limit(limit):
    def preexec():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail with EFBIG rather than die
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_labels_and_probabilities_are_published_together_or_not_at_all(work, tmp_path):
    """Case 8: on a full disk the probabilities failed cleanly but the labels were published."""
    ref = tmp_path / "ref"
    ref.mkdir()
    assert (
        main(_predict(work, "-o", str(ref / "l.tif"), "--probabilities", str(ref / "p.tif"))) == 0
    )
    labels_size, probs_size = (ref / "l.tif").stat().st_size, (ref / "p.tif").stat().st_size
    assert labels_size * 4 < probs_size
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "l.tif").write_bytes(b"older labels")
    (dest / "p.tif").write_bytes(b"older probabilities")
    cmd = [sys.executable, "-m", "napari_tiled_unet.cli", *_predict(work)]
    cmd += ["-o", str(dest / "l.tif"), "--probabilities", str(dest / "p.tif")]
    # The temporary chunks (one plane each) and the labels fit; the probabilities TIFF not.
    result = subprocess.run(
        cmd,
        preexec_fn=_fsize_limit(probs_size * 2 // 3),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "a file would exceed the size limit" in last, last
    assert f"{dest / 'l.tif'} was left as it was" in last and f"{dest / 'p.tif'} was left" in last
    assert (dest / "l.tif").read_bytes() == b"older labels"
    assert (dest / "p.tif").read_bytes() == b"older probabilities"
    assert sorted(p.name for p in dest.iterdir()) == ["l.tif", "p.tif"]  # no temporaries


def test_a_failed_rename_unpublishes_the_others_and_restores_older_outputs(tmp_path, monkeypatch):
    """Publishing several outputs: when one rename fails, none stays published."""
    from napari_tiled_unet.io import atomic
    from napari_tiled_unet.io.store import OutputWriteError, write_arrays

    (tmp_path / "l.zarr").mkdir()
    (tmp_path / "p.tif").write_bytes(b"older")
    replace = os.replace

    def failing(src, dst):
        if str(dst).endswith("p.tif") and not str(src).endswith("previous"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    items = [(tmp_path / "l.zarr", np.ones((20, 20), np.uint8), "YX")]
    items.append((tmp_path / "p.tif", np.ones((2, 20, 20), np.float32), "CYX"))
    with pytest.raises(OutputWriteError, match="the disk is full") as err:
        write_arrays(items)
    assert "l.zarr was left as it was" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.zarr", "p.tif"]
    assert list((tmp_path / "l.zarr").iterdir()) == []
    assert (tmp_path / "p.tif").read_bytes() == b"older"
    monkeypatch.setattr(atomic.os, "replace", replace)
    write_arrays(items)
    assert tifffile.imread(tmp_path / "p.tif").shape == (2, 20, 20)


def test_an_older_output_that_cannot_be_put_back_is_named(tmp_path, monkeypatch):
    """Case 6's message: "was left as it was" only when it was; else where it is now."""
    from napari_tiled_unet.io import atomic
    from napari_tiled_unet.io.store import OutputWriteError, write_array

    write_array(tmp_path / "l.zarr", np.full((8, 8), 5, np.uint8))
    replace = os.replace

    def failing(src, dst):
        if os.path.realpath(dst) == os.path.realpath(tmp_path / "l.zarr"):  # and the undo
            raise OSError(errno.EIO, "Input/output error")
        return replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    with pytest.raises(OutputWriteError) as err:
        write_array(tmp_path / "l.zarr", np.ones((8, 8), np.uint8))
    message = str(err.value)
    assert "was left as it was" not in message, message
    kept = re.search(r"could not be put back and is now (\S+)$", message)
    assert kept, message
    np.testing.assert_array_equal(zarr.open_array(kept[1], mode="r")[:], 5)
    assert not (tmp_path / "l.zarr").exists()


# Section 4: signals, long names, FIFOs, empty paths


@pytest.mark.skipif(os.name != "posix", reason="signals")
@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["process", "process-group"])
def test_two_quick_signals_still_leave_no_temporaries(tmp_path, rng, group):
    """Two signals ~20 ms apart (``timeout`` signals the process, then its group) used to cut
    the cleanup short, leave temporary folders and still claim they were removed."""
    image = tmp_path / "big.tif"
    tifffile.imwrite(image, rng.random((1500, 1500), dtype=np.float32))
    model = save_model(tiny_unet("same", depth=2), tmp_path / "m.pt")
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "napari_tiled_unet.cli", "predict", str(image), *FAST]
    cmd += ["--model", str(model), "-o", str(out / "labels.zarr"), "--kind", "instances"]
    with running_command(cmd, start_new_session=group) as run:
        assert run.proc.poll() is None, run.stderr()
        assert any(out.iterdir())  # temporaries exist while tiles are written
        for second in (False, True):
            if group:
                os.killpg(run.proc.pid, signal.SIGTERM)
            else:
                run.proc.send_signal(signal.SIGINT if second else signal.SIGTERM)
            time.sleep(0.02)
        run.proc.wait(timeout=60)
    proc, stderr = run.proc, run.stderr()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "terminated; unfinished outputs were removed" in stderr, stderr
    assert list(out.iterdir()) == []


def test_signals_wait_for_a_step_that_must_not_stop_half_way():
    from napari_tiled_unet.io.atomic import uninterrupted

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert seen == []  # held
        assert seen == [signal.SIGTERM]  # delivered once, after the block
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_interrupted_run_says_what_it_could_not_remove(tmp_path, monkeypatch):
    from napari_tiled_unet import cli
    from napari_tiled_unet.io import atomic
    from napari_tiled_unet.jobs import paths

    left = atomic.make_temporary_dir(tmp_path, "labels.tif")
    (left / "chunk").write_bytes(b"x")
    assert cli._interrupted("terminated") == "terminated; unfinished outputs were removed"
    assert not left.exists()
    monkeypatch.setattr(paths, "remove_unfinished_outputs", lambda: [left])
    message = cli._interrupted("interrupted")
    assert message == f"interrupted; could not remove unfinished outputs: {left}"


@pytest.mark.parametrize("length", [244, 255])
def test_output_names_up_to_the_file_system_limit_work(work, length):
    """A legal 244-character name failed: its temporary name was longer than 255 bytes."""
    tif = "t" * (length - 4) + ".tif"
    zarr_name = "z" * (length - 5) + ".zarr"
    probs = "p" * (length - 5) + ".tiff"
    argv = _predict(work, "-o", str(work / tif), "--probabilities", str(work / probs))
    assert main(argv) == 0
    assert main(_predict(work, "-o", str(work / zarr_name), "--kind", "instances")) == 0
    assert main(_predict(work, "-o", str(work / zarr_name))) == 0  # replacing it, too
    model = "m" * (length - 3) + ".pt"
    save_model(tiny_unet(), work / model)
    assert tifffile.imread(work / tif).shape == (96, 112)
    assert tifffile.imread(work / probs).shape == (3, 96, 112)
    assert zarr.open_array(str(work / zarr_name), mode="r").shape == (96, 112)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def _main_in_thread(argv, fifo):
    """Run ``main(argv)``; a call that blocks on ``fifo`` is released and reported."""
    result = []
    thread = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # release the blocked reader
        os.close(fd)
        thread.join(timeout=10)
        pytest.fail(f"{argv} blocked on the FIFO")
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_not_a_regular_file_and_is_never_opened(work, capsys):
    fifo = work / "pipe.tif"
    os.mkfifo(fifo)
    model, out = str(work / "m.pt"), str(work / "o.tif")
    runs = [
        ["predict", str(fifo), "--model", model, *FAST, "-o", out],
        ["predict", str(work / "a.tif"), "--model", str(fifo), *FAST, "-o", out],
        ["train", "--image", str(fifo), "--labels", str(work / "a_lab.tif"), "-o", out],
        ["predict", str(work / "a.tif"), str(fifo), "--model", model, *FAST, "-o", str(work / "b")],
    ]
    for argv in runs:
        assert _main_in_thread(argv, fifo) == 1
        err = capsys.readouterr().err
        assert "is not a regular file but a FIFO" in err and "not found" not in err, err
        assert "Traceback" not in err
    # the batch ran its regular input
    assert [p.name for p in (work / "b").iterdir()] == ["a_labels.tif"]
    assert not (work / "o.tif").exists()


def test_an_empty_input_path_is_refused(work, capsys, monkeypatch):
    """``predict "" -o out.tif`` ran a batch over the current folder."""
    monkeypatch.chdir(work)
    before = _snapshot(work)
    _fails(
        ["predict", "", "--model", "m.pt", *FAST, "-o", "out.tif"], capsys, "input path is empty"
    )
    _fails(["predict", "a.tif", "", "--model", "m.pt", "-o", "out"], capsys, "input path is empty")
    assert _snapshot(work) == before
