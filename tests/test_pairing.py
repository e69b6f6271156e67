"""Pairing: names -> pairs and splits (plan_pairs), pixel checks (check_pair), the manifest."""

import csv
import os

import numpy as np
import pytest
import tifffile

from flowrestore.data import pairing
from flowrestore.errors import InputError
from flowrestore.data.pairing import (COLUMNS, Pair, assign_split, check_pair, pairs_from_folder, pairs_from_sheet,
                                 plan_pairs, read_rows, write_manifest, write_rows)
from flowrestore.data.simulate import make_pair, write_demo

WF, CF = "{acquisition}_wf.tif", "{acquisition}_confocal.tif"
SHAPE = (64, 64)


def data_config(folder, **extra):
    return {"folder": str(folder), "input_pattern": WF, "target_pattern": CF,
            "split": {"val": 0.15, "test": 0.25, "seed": 0}, **extra}


def run(data, out, tolerance=5.0, require_splits=()):
    """What the workflow does: plan, one checked row file per pair, then the manifest."""
    row_files = []
    for pair in plan_pairs(data):
        row = check_pair(pair, registration_tolerance=tolerance)
        row_file = out / "pairs" / f"{pair.acquisition}.tsv"
        write_rows([row], row_file)
        row_files.append(str(row_file))
    return write_manifest(row_files, out / "pairs.tsv", require_splits)


def fails(call, *args, path, **kwargs):
    """Expect an InputError naming `path` and saying how to fix it; return the problem."""
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert os.fspath(path) in message, message
    assert "Fix:" in message, message
    return info.value.problem  # without the path: tmp_path names contain the test's words


def written(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder)
                  for d, dirs, files in os.walk(folder) for n in files + dirs) if os.path.exists(folder) else []


@pytest.fixture
def demo(tmp_path):
    """A folder with two simulated pairs, and an empty output folder."""
    folder = tmp_path / "data"
    write_demo(folder, 2, SHAPE, seed=0)
    out = tmp_path / "results"
    out.mkdir()
    return folder, out


def write_tif(path, data):
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def write_sheet(path, rows, header=("acquisition", "input", "target")):
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------- errors from names


def test_missing_target_partner(demo):
    folder, out = demo
    os.remove(folder / "demo001_confocal.tif")
    message = fails(run, data_config(folder), out, path=folder / "demo001_wf.tif")
    assert "no target partner" in message and "demo001_confocal.tif" in message
    assert written(out) == []


def test_missing_input_partner(demo):
    folder, out = demo
    os.remove(folder / "demo000_wf.tif")
    message = fails(run, data_config(folder), out, path=folder / "demo000_confocal.tif")
    assert "no input partner" in message and "demo000_wf.tif" in message
    assert written(out) == []


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    assert "no file matches" in fails(run, data_config(folder), tmp_path / "out", path=folder)
    assert written(tmp_path / "out") == []


def test_folder_does_not_exist(tmp_path):
    folder = tmp_path / "typo"
    assert "does not exist" in fails(run, data_config(folder), tmp_path / "out", path=folder)
    assert written(tmp_path / "out") == []


def test_pattern_without_acquisition(demo):
    folder, out = demo
    with pytest.raises(InputError, match="Fix:.*acquisition"):
        run(data_config(folder, input_pattern="wf.tif"), out)
    assert written(out) == []


def test_star_pattern_matching_two_files_is_a_duplicate(demo):
    folder, out = demo
    write_tif(folder / "demo000_wf.tiff", make_pair(SHAPE, 0)[0])
    message = fails(run, data_config(folder, input_pattern="{acquisition}_wf.tif*"), out,
                    path=folder / "demo000_wf.tiff")
    assert "demo000_wf.tif " in message and "two files" in message
    assert written(out) == []


def test_duplicate_acquisition_in_sheet(demo):
    folder, out = demo
    sheet = write_sheet(folder / "samples.tsv", [("a", "demo000_wf.tif", "demo000_confocal.tif"),
                                                 ("a", "demo001_wf.tif", "demo001_confocal.tif")])
    assert "'a' is listed twice" in fails(run, {"samples": str(sheet)}, out, path=sheet)
    assert written(out) == []


def test_same_file_in_two_pairs(demo):
    folder, out = demo
    sheet = write_sheet(folder / "samples.tsv", [("a", "demo000_wf.tif", "demo000_confocal.tif"),
                                                 ("b", "demo001_wf.tif", "./demo000_confocal.tif")])
    message = fails(run, {"samples": str(sheet)}, out, path=folder / "demo000_confocal.tif")
    assert "two pairs" in message
    assert written(out) == []


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_sheet_path_outside_folder(demo, tmp_path, where):
    folder, out = demo
    outside = write_tif(tmp_path / "outside_wf.tif", make_pair(SHAPE, 0)[0])
    listed = "../outside_wf.tif" if where == "relative" else str(outside)
    sheet = write_sheet(folder / "samples.tsv", [("a", listed, "demo000_confocal.tif")])
    message = fails(run, {"samples": str(sheet)}, out, path=sheet)
    assert listed in message and "outside the data folder" in message
    assert written(out) == []


def test_sheet_absolute_path_inside_folder_is_fine(demo):
    folder, out = demo
    sheet = write_sheet(folder / "samples.tsv", [("a", str(folder / "demo000_wf.tif"), "demo000_confocal.tif")])
    [pair] = plan_pairs({"samples": str(sheet)})
    assert pair.input == str(folder / "demo000_wf.tif") and pair.target == str(folder / "demo000_confocal.tif")


def test_sheet_relative_to_configured_folder(demo, tmp_path):
    folder, _ = demo
    sheet = write_sheet(tmp_path / "samples.tsv", [("a", "demo000_wf.tif", "demo000_confocal.tif")])
    [pair] = plan_pairs({"samples": str(sheet), "folder": str(folder)})
    assert pair.input == str(folder / "demo000_wf.tif")


@pytest.mark.parametrize("name", ["bad name", "x;rm", "-x", "ä"])
def test_unsafe_acquisition_name_in_folder(demo, name):
    folder, out = demo
    os.rename(folder / "demo000_wf.tif", folder / f"{name}_wf.tif")
    os.rename(folder / "demo000_confocal.tif", folder / f"{name}_confocal.tif")
    assert "unsafe" in fails(run, data_config(folder), out, path=folder / f"{name}_wf.tif")
    assert written(out) == []


def test_unsafe_acquisition_name_in_sheet(demo):
    folder, out = demo
    sheet = write_sheet(folder / "samples.tsv", [("../evil", "demo000_wf.tif", "demo000_confocal.tif")])
    assert "unsafe" in fails(run, {"samples": str(sheet)}, out, path=folder / "demo000_wf.tif")
    assert written(out) == []


@pytest.mark.parametrize("case", ["no-rows", "missing-column", "bad-split", "short-row", "empty-cell"])
def test_malformed_sheet(demo, case):
    folder, out = demo
    sheet = folder / "samples.tsv"
    if case == "no-rows":
        write_sheet(sheet, [])
    elif case == "missing-column":
        write_sheet(sheet, [("a", "demo000_wf.tif")], header=("acquisition", "input"))
    elif case == "bad-split":
        write_sheet(sheet, [("a", "demo000_wf.tif", "demo000_confocal.tif", "training")],
                    header=("acquisition", "input", "target", "split"))
    elif case == "short-row":
        sheet.write_text("acquisition\tinput\ttarget\na\tdemo000_wf.tif\n")
    else:
        write_sheet(sheet, [("a", "demo000_wf.tif", " ")])
    fails(run, {"samples": str(sheet)}, out, path=sheet)
    assert written(out) == []


# ---------------------------------------------------------------------------- errors from pixels


def one_pair(tmp_path, input_data, target_data):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    write_tif(folder / "x_wf.tif", input_data)
    write_tif(folder / "x_confocal.tif", target_data)
    out = tmp_path / "results"
    return data_config(folder), out, folder / "x_wf.tif", folder / "x_confocal.tif"


def test_shape_mismatch(tmp_path):
    wf, cf = make_pair(SHAPE, 1)
    data, out, inp, tgt = one_pair(tmp_path, wf, cf[:, :60])
    message = fails(run, data, out, path=tgt)
    assert str(inp) in message and "(64, 60)" in message
    assert written(out) == []


@pytest.mark.parametrize("damage", ["random-bytes", "truncated", "corrupt-compressed-strip"])
def test_unreadable_file(tmp_path, damage):
    wf, cf = make_pair(SHAPE, 1)
    data, out, inp, tgt = one_pair(tmp_path, wf, cf)
    if damage == "random-bytes":
        tgt.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "truncated":
        with open(tgt, "r+b") as fh:
            fh.truncate(tgt.stat().st_size // 2)
    else:  # the file is whole, but its pixels do not decode: only found when they are read
        tifffile.imwrite(tgt, cf, compression="zlib")
        with tifffile.TiffFile(tgt) as tif:
            offset, count = tif.pages.first.dataoffsets[0], tif.pages.first.databytecounts[0]
        with open(tgt, "r+b") as fh:
            fh.seek(offset + count // 3)
            fh.write(b"\x00\xff" * 64)
    fails(run, data, out, path=tgt)
    assert written(out) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels(tmp_path, bad):
    wf, cf = make_pair(SHAPE, 1)
    wf = wf.astype(np.float32)
    wf[10, 20] = bad
    wf[30, 5] = bad
    data, out, inp, _ = one_pair(tmp_path, wf, cf)
    assert "2 NaN or infinite pixels" in fails(run, data, out, path=inp)
    assert written(out) == []


def test_constant_image(tmp_path):
    wf, _ = make_pair(SHAPE, 1)
    data, out, _, tgt = one_pair(tmp_path, wf, np.full(SHAPE, 100, np.uint16))
    assert "is constant (every pixel is 100)" in fails(run, data, out, path=tgt)
    assert written(out) == []


def test_no_contrast_between_percentiles(tmp_path):
    wf, _ = make_pair(SHAPE, 1)
    almost_empty = np.zeros(SHAPE, np.uint16)
    almost_empty[5, 5] = 1000  # one hot pixel: min != max, but the 0.1-99.9 range is empty
    data, out, _, tgt = one_pair(tmp_path, wf, almost_empty)
    assert "no contrast" in fails(run, data, out, path=tgt)
    assert written(out) == []


def test_registration_shift_above_tolerance(tmp_path):
    wf, cf = make_pair((128, 128), 2)
    data, out, _, tgt = one_pair(tmp_path, wf, np.roll(cf, 12, axis=1))
    message = fails(run, data, out, tolerance=5.0, path=tgt)
    assert "shifted by" in message and "12.0" in message
    assert written(out) == []


@pytest.mark.parametrize("shift,tolerance", [(0, 5.0), (1, 5.0), (12, None)])
def test_registration_within_tolerance_or_skipped(tmp_path, shift, tolerance):
    wf, cf = make_pair((128, 128), 2)
    data, out, _, _ = one_pair(tmp_path, wf, np.roll(cf, shift, axis=0))
    rows = run(data, out, tolerance=tolerance)
    assert [r["pair_id"] for r in rows] == ["x"]
    assert (out / "pairs.tsv").exists()


def test_registration_shift_3d(tmp_path):
    wf, cf = make_pair((12, 64, 64), 2)
    data, out, _, tgt = one_pair(tmp_path, wf, np.roll(cf, 8, axis=2))
    fails(run, data, out, tolerance=5.0, path=tgt)
    assert written(out) == []


# ---------------------------------------------------------------------------- manifest


def rows_with_splits(tmp_path, splits):
    files = []
    for i, split in enumerate(splits):
        row = dict.fromkeys(COLUMNS, "1")
        row.update(pair_id=f"p{i}", split=split)
        path = tmp_path / "pairs" / f"p{i}.tsv"
        write_rows([row], path)
        files.append(str(path))
    return files


@pytest.mark.parametrize("missing", ["train", "val", "test"])
def test_manifest_empty_split(tmp_path, missing):
    files = rows_with_splits(tmp_path, [s for s in ("train", "train", "val", "test") if s != missing])
    manifest = tmp_path / "pairs.tsv"
    assert f"the {missing} split is empty" in fails(write_manifest, files, manifest, path=manifest)
    assert not manifest.exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_manifest_duplicate_pair(tmp_path):
    files = rows_with_splits(tmp_path, ["train", "val", "test"])
    manifest = tmp_path / "pairs.tsv"
    assert "'p0'" in fails(write_manifest, files + files[:1], manifest, path=manifest)
    assert not manifest.exists()


def test_manifest_columns_order_and_raw_percentiles(tmp_path):
    folder = tmp_path / "data"
    write_demo(folder, 3, SHAPE, seed=4)
    sheet = write_sheet(folder / "samples.tsv", [
        (f"demo00{i}", f"demo00{i}_wf.tif", f"demo00{i}_confocal.tif", s) for i, s in enumerate(["test", "train", "val"])],
        header=("acquisition", "input", "target", "split"))
    out = tmp_path / "results"
    run({"samples": str(sheet)}, out, require_splits=pairing.SPLITS)
    manifest = out / "pairs.tsv"
    with open(manifest, newline="") as fh:
        assert next(csv.reader(fh, delimiter="\t")) == COLUMNS
    rows = read_rows(manifest)
    assert [(r["split"], r["pair_id"]) for r in rows] == [("train", "demo001"), ("val", "demo002"), ("test", "demo000")]
    for row in rows:
        assert (row["axes"], row["shape"], row["dtype"], row["pixel_size"]) == ("YX", "64x64", "uint16", "0.1,0.1")
        for role in ("input", "target"):
            raw = tifffile.imread(row[role]).astype(np.float64)
            low, high = np.percentile(raw, [0.1, 99.9])
            assert float(row[f"{role}_low"]) == pytest.approx(low)
            assert float(row[f"{role}_high"]) == pytest.approx(high)
        assert float(row["target_high"]) > 10  # photon counts, not normalised to [0, 1]
    assert sorted(written(out)) == ["pairs", "pairs.tsv", "pairs/demo000.tsv", "pairs/demo001.tsv", "pairs/demo002.tsv"]


def test_check_pair_3d_row(tmp_path):
    write_demo(tmp_path, 1, (8, 48, 48), seed=5)
    pair = Pair("demo000", str(tmp_path / "demo000_wf.tif"), str(tmp_path / "demo000_confocal.tif"), "val")
    row = check_pair(pair)
    assert (row["axes"], row["shape"], row["pixel_size"], row["split"]) == ("ZYX", "8x48x48", "0.3,0.1,0.1", "val")
    assert row["input_low"] < row["input_high"] and row["target_low"] < row["target_high"]


# ---------------------------------------------------------------------------- splits


def test_split_deterministic_and_seeded():
    names = [f"acq{i:04d}" for i in range(200)]
    first = [assign_split(n, 0.15, 0.25, seed=0) for n in names]
    assert first == [assign_split(n, 0.15, 0.25, seed=0) for n in names]
    assert first != [assign_split(n, 0.15, 0.25, seed=1) for n in names]
    assert set(first) == set(pairing.SPLITS)


def test_split_stable_when_acquisitions_are_added(tmp_path):
    data = {"folder": "", "split": {"val": 0.15, "test": 0.25, "seed": 3}}
    raw = [(f"acq{i:04d}", f"/d/acq{i:04d}_wf.tif", f"/d/acq{i:04d}_cf.tif", None) for i in range(300)]
    before = {p.acquisition: p.split for p in plan_pairs(data, raw[:200])}
    after = {p.acquisition: p.split for p in plan_pairs(data, raw[150:] + raw[:150])}  # more, other order
    assert all(after[a] == s for a, s in before.items())


def test_split_stable_when_files_are_added(tmp_path):
    folder = tmp_path / "data"
    write_demo(folder, 6, (16, 16), seed=0)
    before = {p.acquisition: p.split for p in plan_pairs(data_config(folder))}
    write_demo(folder, 12, (16, 16), seed=0)
    after = {p.acquisition: p.split for p in plan_pairs(data_config(folder))}
    assert len(after) == 12 and all(after[a] == s for a, s in before.items())


@pytest.mark.parametrize("val,test", [(0.15, 0.25), (0.1, 0.1), (0.0, 0.5)])
def test_split_fractions(val, test):
    counts = {s: 0 for s in pairing.SPLITS}
    for i in range(1000):
        counts[assign_split(f"sample_{i}", val, test)] += 1
    assert counts["val"] / 1000 == pytest.approx(val, abs=0.05)
    assert counts["test"] / 1000 == pytest.approx(test, abs=0.05)
    assert counts["train"] / 1000 == pytest.approx(1 - val - test, abs=0.05)


def test_explicit_split_column_honoured(demo):
    folder, _ = demo
    hashed = assign_split("a", 0.15, 0.25)
    explicit = next(s for s in pairing.SPLITS if s != hashed)
    sheet = write_sheet(folder / "samples.tsv", [("a", "demo000_wf.tif", "demo000_confocal.tif", explicit),
                                                 ("b", "demo001_wf.tif", "demo001_confocal.tif", "")],
                        header=("acquisition", "input", "target", "split"))
    splits = {p.acquisition: p.split for p in plan_pairs({"samples": str(sheet), "split": {"val": 0.15, "test": 0.25}})}
    assert splits == {"a": explicit, "b": assign_split("b", 0.15, 0.25)}


def test_pairs_from_folder_and_sheet_agree(demo):
    folder, _ = demo
    from_folder = pairs_from_folder(folder, WF, CF)
    sheet = write_sheet(folder / "samples.tsv", [(a, os.path.basename(i), os.path.basename(t)) for a, i, t, *_ in from_folder])
    assert pairs_from_sheet(sheet) == from_folder
    assert [a for a, *_ in from_folder] == ["demo000", "demo001"]


# ---------------------------------------------------------------------------- dimensions and pixel sizes (issue 25)


@pytest.mark.parametrize("odd", ["3d-among-2d", "2d-among-3d"])
def test_mixed_2d_and_3d_refused_when_planned(tmp_path, odd):
    """One model restores 2-D or 3-D images: the odd acquisition is named before any job runs."""
    folder = tmp_path / "data"
    write_demo(folder, 3, (3, 32, 32) if odd == "2d-among-3d" else (32, 32), seed=0)
    odd_shape = (32, 32) if odd == "2d-among-3d" else (3, 32, 32)
    write_demo(tmp_path / "other", 1, odd_shape, seed=1)
    for role in ("wf", "confocal"):
        os.replace(tmp_path / "other" / f"demo000_{role}.tif", folder / f"demo100_{role}.tif")
    problem = fails(plan_pairs, data_config(folder), path=folder / "demo100_wf.tif")
    assert f"is {len(odd_shape)}-D" in problem and f"3 of the 4 inputs are {5 - len(odd_shape)}-D" in problem


def test_unreadable_input_left_to_its_check_when_planned(demo):
    """A file that cannot be opened is reported by its own check_pair job, not at parse time."""
    folder, _ = demo
    (folder / "demo001_wf.tif").write_bytes(b"not a tiff")
    assert [p.acquisition for p in plan_pairs(data_config(folder))] == ["demo000", "demo001"]


def _tif(path, data, **kwargs):
    tifffile.imwrite(path, data, photometric="minisblack", **kwargs)
    return path


def test_unknown_pixel_size_reported_and_recorded(tmp_path, caplog):
    """No resolution tags: a warning in the log and the row's note; the manifest says 'unknown'."""
    wf, cf = make_pair(SHAPE, 1)
    data, out, inp, tgt = one_pair(tmp_path, wf, cf)
    with caplog.at_level("WARNING", logger="flowrestore.data.pairing"):
        rows = run(data, out)
    assert rows[0]["pixel_size"] == "unknown,unknown"
    assert f"{inp}: pixel size unknown" in rows[0]["note"] and f"{tgt}: pixel size unknown" in rows[0]["note"]
    assert any(f"{inp}: pixel size unknown" in r.getMessage() for r in caplog.records)
    assert read_rows(out / "pairs.tsv")[0]["note"] == rows[0]["note"]


@pytest.mark.parametrize("given,expected", [(0.2, "0.2,0.2"), ([0.3, 0.2], "0.3,0.2")])
def test_configured_pixel_size_in_manifest(tmp_path, given, expected):
    wf, cf = make_pair(SHAPE, 1)
    _, _, inp, tgt = one_pair(tmp_path, wf, cf)
    row = check_pair(Pair("x", str(inp), str(tgt), "train"), pixel_size=given)
    assert (row["pixel_size"], row["note"]) == (expected, "")


def test_pixel_sizes_of_a_pair_that_differ_are_reported(tmp_path):
    wf, cf = make_pair(SHAPE, 1)
    folder = tmp_path / "data"
    folder.mkdir()
    inp = _tif(folder / "x_wf.tif", wf, resolution=(1e4 / 0.1, 1e4 / 0.1), resolutionunit="CENTIMETER")
    tgt = _tif(folder / "x_confocal.tif", cf, resolution=(1e4 / 0.2, 1e4 / 0.2), resolutionunit="CENTIMETER")
    row = check_pair(Pair("x", str(inp), str(tgt), "train"))
    assert row["pixel_size"] == "0.1,0.1"  # the input's: it labels the restored image
    assert f"{tgt}: pixel size 0.2,0.2 µm differs from 0.1,0.1 µm of its input {inp}" in row["note"]


def test_acquisitions_with_different_pixel_sizes_reported(tmp_path, caplog):
    """0.065 µm and 1 µm in one data set: one warning naming both inputs (and in that row's note)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for i, size in enumerate([0.065, 0.065, 1.0]):
        wf, cf = make_pair(SHAPE, i)
        for role, image in (("wf", wf), ("confocal", cf)):
            _tif(folder / f"a{i}_{role}.tif", image, resolution=(1e4 / size, 1e4 / size), resolutionunit="CENTIMETER")
    with caplog.at_level("WARNING", logger="flowrestore.data.pairing"):
        rows = {r["pair_id"]: r for r in run(data_config(folder), tmp_path / "results")}
    expected = f"{folder / 'a2_wf.tif'}: pixel size 1,1 µm differs from 0.065,0.065 µm of {folder / 'a0_wf.tif'}"
    assert expected in rows["a2"]["note"]
    assert rows["a0"]["note"] == rows["a1"]["note"] == ""
    assert [r.getMessage() for r in caplog.records if "differs" in r.getMessage()] == [rows["a2"]["note"]]
    assert {r["pair_id"]: r["note"] for r in read_rows(tmp_path / "results" / "pairs.tsv")}["a2"] == rows["a2"]["note"]


# ---------------------------------------------------------------------------- references alone, truth (issue 22)

REF, TRUTH = "{acquisition}_reference.tif", "{acquisition}_truth.tif"


@pytest.fixture
def denoise(tmp_path):
    """Four simulated denoising acquisitions (input, reference, truth), and an empty output folder."""
    from flowrestore.data.denoise_demo import write

    folder = tmp_path / "data"
    write(folder, 4, SHAPE, {"input": "_input.tif", "target": "_reference.tif", "truth": "_truth.tif"})
    out = tmp_path / "results"
    out.mkdir()
    return folder, out


def test_references_alone(denoise):
    """No input pattern: every reference is an acquisition without input; its row's input percentiles are the
    reference's (a restoration of it reads the reference)."""
    folder, out = denoise
    for path in folder.glob("*_input.tif"):
        os.remove(path)
    rows = run(data_config(folder, input_pattern="", target_pattern=REF), out)
    assert sorted(r["pair_id"] for r in rows) == [f"demo00{i}" for i in range(4)]
    for row in rows:
        assert row["input"] == "" and row["truth"] == "" and row["target"].endswith("_reference.tif")
        low, high = np.percentile(tifffile.imread(row["target"]).astype(np.float64), [0.1, 99.9])
        assert (float(row["input_low"]), float(row["input_high"])) == pytest.approx((low, high))
        assert float(row["input_low"]) == float(row["target_low"])


def test_references_with_inputs_still_need_partners(denoise):
    """With an input pattern, a reference without its input is still a missing partner (a misnamed file)."""
    folder, out = denoise
    os.remove(folder / "demo002_input.tif")
    message = fails(run, data_config(folder, input_pattern="{acquisition}_input.tif", target_pattern=REF), out,
                    path=folder / "demo002_reference.tif")
    assert "no input partner" in message


def test_truth_role_from_pattern(denoise):
    folder, out = denoise
    rows = run(data_config(folder, input_pattern="{acquisition}_input.tif", target_pattern=REF, truth_pattern=TRUTH), out)
    for row in rows:
        assert row["truth"] == str(folder / f"{row['pair_id']}_truth.tif")
        assert row["input"] == str(folder / f"{row['pair_id']}_input.tif")


def test_truth_is_optional_per_acquisition_but_not_alone(denoise):
    folder, out = denoise
    data = data_config(folder, input_pattern="{acquisition}_input.tif", target_pattern=REF, truth_pattern=TRUTH)
    os.remove(folder / "demo001_truth.tif")
    assert [bool(p.truth) for p in plan_pairs(data)] == [True, False, True, True]
    os.remove(folder / "demo003_reference.tif")
    os.remove(folder / "demo003_input.tif")
    message = fails(plan_pairs, data, path=folder / "demo003_truth.tif")
    assert "truth without its target" in message


def test_truth_checked_like_the_other_roles(denoise):
    folder, out = denoise
    data = data_config(folder, input_pattern="{acquisition}_input.tif", target_pattern=REF, truth_pattern=TRUTH)
    tifffile.imwrite(folder / "demo002_truth.tif", np.zeros((64, 60), np.float32))
    assert "(64, 60)" in fails(run, data, out, path=folder / "demo002_truth.tif")
    truth = tifffile.imread(folder / "demo001_truth.tif")
    tifffile.imwrite(folder / "demo002_truth.tif", np.roll(truth, 12, axis=1))
    message = fails(run, data, out, path=folder / "demo002_reference.tif")
    assert "shifted" in message and "truth" in message


def test_sheet_with_truth_quality_and_references_alone(denoise):
    """Sheet columns truth and quality are optional; an empty input cell is a reference without an input."""
    folder, out = denoise
    sheet = write_sheet(folder / "samples.tsv", [
        ("demo000", "", "demo000_reference.tif", "train", "", ""),
        ("demo001", "", "demo001_reference.tif", "val", "", ""),
        ("demo003", "demo003_input.tif", "demo003_reference.tif", "test", "demo003_truth.tif", "25 photons")],
        header=("acquisition", "input", "target", "split", "truth", "quality"))
    rows = {r["pair_id"]: r for r in run({"samples": str(sheet)}, out, require_splits=pairing.SPLITS)}
    assert rows["demo000"]["input"] == "" and rows["demo000"]["quality"] == ""
    assert rows["demo003"]["quality"] == "25 photons"
    assert rows["demo003"]["truth"] == str(folder / "demo003_truth.tif")
    assert read_rows(out / "pairs.tsv")[-1]["quality"] == "25 photons"


def test_denoise_demo_rows_match_its_files(tmp_path):
    """The demo's rows, known before the files exist, name exactly what it writes; its truth is the input's
    expected value (the input's mean over the image agrees with it within its Poisson-Gaussian noise)."""
    from flowrestore.data import denoise_demo
    from flowrestore.data.demo import demo_rows, make_demo

    demo = {"kind": "denoise", "acquisitions": 8, "shape": [64, 64], "seed": 0}
    data = {"folder": str(tmp_path), "input_pattern": "{acquisition}_input.tif", "target_pattern": REF,
            "truth_pattern": TRUTH}
    rows = demo_rows(demo, data)
    make_demo(demo, data)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for r in rows for p in (r[1], r[2], r[4]))
    assert [r[3] for r in rows] == ["train", "val", "train", "test", "train", "train", "train", "test"]
    assert [r[5] for r in rows if r[3] == "test"] == ["25 photons", "50 photons"]
    cam = denoise_demo.CAMERA
    for acq, inp, tgt, split, truth, quality in rows:
        x, t = tifffile.imread(inp).astype(np.float64), tifffile.imread(truth).astype(np.float64)
        # Var[y] = gain * (E[y] - offset) + read_noise^2 (+ 1/12 for the rounding to integer ADU)
        var = cam.gain * (t - cam.offset) + cam.read_noise**2 + 1 / 12
        z = ((x - t) ** 2 / var).mean()
        assert abs(z - 1) < 5 * np.sqrt(2 / x.size), (acq, z)
    plan = plan_pairs(data, rows)
    assert [p.split for p in plan] == [r[3] for r in rows] and plan[3].quality == "25 photons"

@pytest.mark.parametrize("inp,tgt,factor", [((64, 60), (64, 60), (1, 1)), ((16, 15), (64, 60), (4, 4)),
                                            ((8, 16, 15), (8, 64, 60), (1, 4, 4)), ((16, 15), (64, 30), None),
                                            ((16, 16), (60, 64), None), ((4, 16, 16), (8, 32, 32), None),
                                            ((8, 32, 30), (32, 32, 30), (4, 1, 1)), ((8, 16, 16), (32, 32, 32), None),
                                            ((32, 30), (64, 30), None)])
def test_grid_factor_of_a_pair(inp, tgt, factor):
    assert pairing.grid_factor(inp, tgt) == factor


def test_super_resolution_pair_is_checked_on_the_input_grid(tmp_path):
    from flowrestore.data.simulate_operators import write_known_demo

    write_known_demo(tmp_path, 1, (64, 64), "super_resolution", factor=4, input_suffix="_lo.tif", target_suffix="_hi.tif")
    row = check_pair(Pair("demo000", str(tmp_path / "demo000_lo.tif"), str(tmp_path / "demo000_hi.tif"), "train"))
    assert row["shape"] == "16x16" and row["pixel_size"] == "0.1,0.1" and row["note"] == ""
    hi = tifffile.imread(tmp_path / "demo000_hi.tif")
    tifffile.imwrite(tmp_path / "shifted_hi.tif", np.roll(hi, 40, axis=1))  # 10 input pixels
    with pytest.raises(InputError, match="shifted"):
        check_pair(Pair("shifted", str(tmp_path / "demo000_lo.tif"), str(tmp_path / "shifted_hi.tif"), "train"))
