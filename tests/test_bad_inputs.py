"""A corpus of bad input, each kind through the entry point a user would hit.

Every kind must end in a non-zero exit (or an InputError from the library), one line that names
the offending file and says how to fix it, no partial output, and inputs left byte for byte.

- settings and pairing (WORKFLOW_PARSE_CASES): `snakemake` itself; the errors come while the
  workflow is parsed, so the runs are short and go side by side. More kinds of the same sort
  (LIBRARY_PARSE_CASES) call the functions the workflow calls while parsing, in-process;
- unreadable or unusable pixels (PIXEL_CASES): one `snakemake --keep-going` run over a samples
  sheet that lists one pair per kind, so every check_pair / convert job meets its own bad file;
- checkpoints, training and prediction (LIBRARY_CASES): the library inside the frame of a rule
  script (scripts/*.py), and the `flowrestore` command line.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
import yaml
import zarr

from flowrestore.models.checkpoint import load_model
from flowrestore.cli import main, rule_script
from flowrestore.config import check_config
from flowrestore.errors import InputError
from flowrestore.data.normalize import MAX_SAMPLES
from flowrestore.data.pairing import plan_pairs
from flowrestore.inference.predict import partial_path, predict, read_prediction
from flowrestore.data.simulate import make_pair
from flowrestore.training.loop import train_model

from fixtures import ROOT, TINY_NET, digests, files_besides_logs, make_acquisitions, snakemake_command, write_tiff

TINY = ROOT / "tests" / "config" / "tiny.yaml"
SHAPE = (32, 32)
RUN_TIMEOUT = 900


def fix_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Fix:" in line]


def assert_one_line_error(text: str, named: str, words: tuple[str, ...]) -> None:
    lines = fix_lines(text)
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{text[-3000:]}"
    assert named in lines[0], f"{named!r} not named in: {lines[0]}"
    for word in words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"
    assert "Traceback" not in text, text[-3000:]


def good_pair(folder: Path, name: str, seed: int = 0) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    wf, conf = make_pair(SHAPE, seed)
    return (os.path.basename(write_tiff(folder / f"{name}_wf.tif", wf)),
            os.path.basename(write_tiff(folder / f"{name}_confocal.tif", conf)))


def write_sheet(path: Path, rows, header=("acquisition", "input", "target", "split")) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------- settings and pairing


@dataclass
class ParseCase:
    """`build(work)` writes the acquisitions and returns the config to add: YAML text for a setting,
    or the `data` section (paths relative to the workdir) for a pairing problem."""

    build: object
    named: str
    words: tuple[str, ...]


def _two_pairs(work: Path) -> None:
    for i, name in enumerate(("a", "b")):
        good_pair(work / "data", name, seed=i)


def _setting(text: str):
    def build(work: Path) -> str:
        _two_pairs(work)
        return text
    return build


def _unpaired(work: Path) -> dict:
    _two_pairs(work)
    good_pair(work / "data", "c")
    (work / "data" / "c_confocal.tif").unlink()
    return {}


def _one_3d_among_2d(work: Path) -> dict:
    _two_pairs(work)
    wf, conf = make_pair((3, *SHAPE), 5)
    write_tiff(work / "data" / "c_wf.tif", wf)
    write_tiff(work / "data" / "c_confocal.tif", conf)
    return {}


def _two_files_one_acquisition(work: Path) -> dict:
    _two_pairs(work)
    (work / "data" / "a_wf_old.tif").write_bytes((work / "data" / "a_wf.tif").read_bytes())
    return {"input_pattern": "{acquisition}_wf*.tif"}


def _sheet(*rows, header=("acquisition", "input", "target", "split"), outside: bool = False):
    def build(work: Path) -> dict:
        _two_pairs(work)
        if outside:
            good_pair(work, "outside")  # a real file, beside (not inside) the data folder
        write_sheet(work / "data" / "samples.tsv", rows, header)
        return {"samples": "data/samples.tsv"}
    return build


A, B = ("a_wf.tif", "a_confocal.tif"), ("b_wf.tif", "b_confocal.tif")

# Run through `snakemake`: the kinds the issue names, so the whole path to the terminal is shown.
WORKFLOW_PARSE_CASES = {
    "config-typo": ParseCase(_setting("train:\n  stpes: 5\n"), "bad.yaml",
                             ("unknown setting train.stpes", "did you mean train.steps")),
    "config-wrong-type": ParseCase(_setting("train:\n  lr: fast\n"), "bad.yaml", ("train.lr", "a number")),
    "config-negative-value": ParseCase(_setting("predict:\n  samples: -3\n"), "bad.yaml", ("predict.samples", ">= 1")),
    "unpaired-file": ParseCase(_unpaired, "data/c_wf.tif", ("no target partner", "c_confocal.tif")),
    "file-in-two-pairs": ParseCase(_sheet(("a", *A, "train"), ("b", A[0], B[1], "test")), "data/a_wf.tif",
                                   ("used by two pairs",)),
    "2d-and-3d-mixed": ParseCase(_one_3d_among_2d, "data/c_wf.tif", ("is 3-D", "2 of the 3 inputs are 2-D")),
    "sheet-path-escapes-folder": ParseCase(_sheet(("a", *A, "train"), ("c", "../outside_wf.tif", B[1], "test"),
                                                  outside=True), "data/samples.tsv", ("outside the data folder",)),
}

# The same parse-time functions that common.smk calls, in-process: each snakemake run costs seconds
# of start-up, and the frame around them (WorkflowError, one line) is the one shown above.
LIBRARY_PARSE_CASES = {
    "config-typo-in-model": ParseCase(_setting("models:\n  care: {method: regression, train: {bach_size: 2}}\n"),
                                      "bad.yaml", ("models.care.train.bach_size", "did you mean models.care.train.batch_size")),
    "data-folder-missing": ParseCase(lambda work: {"folder": "nowhere"}, "nowhere", ("does not exist",)),
    "two-files-one-acquisition": ParseCase(_two_files_one_acquisition, "data/a_wf_old.tif", ("matches two files",)),
    "sheet-acquisition-twice": ParseCase(_sheet(("a", *A, "train"), ("a", *B, "test")), "data/samples.tsv",
                                         ("listed twice",)),
    "sheet-missing-column": ParseCase(_sheet(("a", A[0]), header=("acquisition", "input")), "data/samples.tsv",
                                      ("needs columns",)),
    "sheet-unsafe-name": ParseCase(_sheet(("scan 1", *A, "train")), "data/a_wf.tif", ("unsafe in file names",)),
    "sheet-file-missing": ParseCase(_sheet(("a", *A, "train"), ("c", "c_wf.tif", B[1], "test")), "data/samples.tsv",
                                    ("'c_wf.tif' does not exist",)),
}


def _extra_config(work: Path, extra) -> Path:
    """A config file with the case's settings; a `data` section keeps the tiny config's folder."""
    text = extra if isinstance(extra, str) else yaml.safe_dump({"data": {"folder": "data", **extra}})
    (work / "bad.yaml").write_text(text)
    return work / "bad.yaml"


@pytest.fixture(scope="module")
def parse_runs(tmp_path_factory):
    """Every case as its own `snakemake` run, all started at once (they mostly wait)."""
    runs = {}
    for name, case in WORKFLOW_PARSE_CASES.items():
        work = tmp_path_factory.mktemp(name)
        config = _extra_config(work, case.build(work))
        inputs = sorted(work.iterdir())
        process = subprocess.Popen(snakemake_command(work, "--cores", "1", configfiles=[TINY, config]),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs[name] = (work, inputs, digests(*inputs), process)
    results = {}
    for name, (work, inputs, before, process) in runs.items():
        output, _ = process.communicate(timeout=RUN_TIMEOUT)
        results[name] = SimpleNamespace(work=work, inputs=inputs, before=before, returncode=process.returncode,
                                        output=output)
    return results


@pytest.mark.parametrize("name", list(WORKFLOW_PARSE_CASES))
def test_bad_setting_or_pairing_stops_the_workflow(parse_runs, name):
    run, case = parse_runs[name], WORKFLOW_PARSE_CASES[name]
    assert run.returncode != 0, run.output[-3000:]
    assert_one_line_error(run.output, case.named, case.words)
    assert not (run.work / "results").exists()  # stopped before any job
    assert digests(*run.inputs) == run.before


@pytest.mark.parametrize("name", list(LIBRARY_PARSE_CASES))
def test_bad_setting_or_pairing_refused_at_parse_time(tmp_path, monkeypatch, name):
    case = LIBRARY_PARSE_CASES[name]
    monkeypatch.chdir(tmp_path)  # what `snakemake -d` does: paths are relative to the workdir
    extra = case.build(tmp_path)
    config = _extra_config(tmp_path, extra)
    before = digests(*sorted(tmp_path.iterdir()))
    with pytest.raises(InputError) as error:
        if isinstance(extra, str):
            settings = yaml.safe_load(TINY.read_text()) | yaml.safe_load(extra)
            check_config(settings, ROOT / "workflow" / "schemas" / "config.schema.yaml", [TINY, config], [TINY, config])
        else:
            plan_pairs({"input_pattern": "{acquisition}_wf.tif", "target_pattern": "{acquisition}_confocal.tif",
                        "folder": "data", **extra})
    assert_one_line_error(str(error.value), case.named, case.words)
    assert digests(*sorted(tmp_path.iterdir())) == before


# ---------------------------------------------------------------------------- pixels: one run, one pair per kind


@dataclass
class PixelCase:
    """`build(data, name)` writes the pair and returns (input, target, bad file); `convert`: also run
    rule convert on the bad file (the kinds that fail while reading, not only when checked)."""

    build: object
    words: tuple[str, ...]
    convert: bool = False
    role: str = "input"


def _with_input(write):
    def build(data: Path, name: str):
        _, target = good_pair(data, name)
        bad = write(data, name)
        return bad, target, bad
    return build


def _with_target(write):
    def build(data: Path, name: str):
        inp, _ = good_pair(data, name)
        bad = write(data, name)
        return inp, bad, bad
    return build


def _tif(data: Path, name: str, array: np.ndarray) -> str:
    tifffile.imwrite(data / f"{name}_wf.tif", array)
    return f"{name}_wf.tif"


def _nan_and_inf(data: Path, name: str) -> str:
    image = make_pair(SHAPE, 1)[0].astype(np.float32)
    image[3, 4], image[5, 6] = np.nan, -np.inf
    return os.path.basename(write_tiff(data / f"{name}_confocal.tif", image))


def _random_bytes(data: Path, name: str) -> str:
    (data / f"{name}_wf.tif").write_bytes(np.random.default_rng(0).bytes(3000))
    return f"{name}_wf.tif"


def _truncated_tiff(data: Path, name: str) -> str:
    path = Path(write_tiff(data / f"{name}_wf.tif", make_pair(SHAPE, 2)[0]))
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    return path.name


def _truncated_zarr_chunk(data: Path, name: str) -> str:
    path = data / f"{name}_wf.zarr"
    array = zarr.open_array(str(path), mode="w", shape=SHAPE, chunks=(16, 16), dtype="uint16", zarr_format=2)
    array[:] = make_pair(SHAPE, 3)[0]
    chunk = path / "1.1"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    return path.name


def _unknown_unit(data: Path, name: str) -> str:
    tifffile.imwrite(data / f"{name}_wf.tif", make_pair(SHAPE, 5)[0], imagej=True, resolution=(10, 10),
                     metadata={"unit": "furlong"})
    return f"{name}_wf.tif"


def _two_positions(data: Path, name: str) -> str:
    with tifffile.TiffWriter(data / f"{name}_wf.ome.tif", ome=True) as tif:
        for seed in (6, 7):
            tif.write(make_pair(SHAPE, seed)[0], metadata={"axes": "YX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1})
    return f"{name}_wf.ome.tif"


def _zarr_missing_chunk(data: Path, name: str) -> str:
    path = data / f"{name}_wf.zarr"
    array = zarr.open_array(str(path), mode="w", shape=SHAPE, chunks=(16, 16), dtype="uint16", zarr_format=3)
    array[:] = make_pair(SHAPE, 8)[0]
    (path / "c" / "1" / "0").unlink()  # a copy that lost one chunk file
    return path.name


def _wider_target(data: Path, name: str) -> str:
    return os.path.basename(write_tiff(data / f"{name}_confocal.tif", make_pair((SHAPE[0], SHAPE[1] + 8), 4)[1]))


PIXEL_CASES = {
    "corrupt-tiff": PixelCase(_with_input(_random_bytes), ("cannot be read",), convert=True),
    "truncated-tiff": PixelCase(_with_input(_truncated_tiff), ("truncated or corrupt",), convert=True),
    "truncated-zarr-chunk": PixelCase(_with_input(_truncated_zarr_chunk), ("cannot be read",), convert=True),
    "unknown-length-unit": PixelCase(_with_input(_unknown_unit), ("unknown length unit 'furlong'",), convert=True),
    "two-position-ome-tiff": PixelCase(_with_input(_two_positions), ("2 OME images",), convert=True),
    "zarr-missing-chunk": PixelCase(_with_input(_zarr_missing_chunk), ("1 of its 4 chunks missing",), convert=True),
    "complex-pixels": PixelCase(_with_input(lambda d, n: _tif(d, n, np.ones(SHAPE, np.complex64))), ("complex",)),
    "bool-pixels": PixelCase(_with_input(lambda d, n: _tif(d, n, np.eye(SHAPE[0], dtype=bool))), ("boolean",)),
    "shape-mismatch": PixelCase(_with_target(_wider_target), ("has shape",), role="target"),
    "nan-and-inf-pixels": PixelCase(_with_target(_nan_and_inf), ("2 NaN or infinite",), role="target"),
    "constant-image": PixelCase(_with_input(lambda d, n: _tif(d, n, np.full(SHAPE, 100, np.uint16))),
                                ("is constant",)),
}


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pixels")
    data = work / "data"
    rows, bad = [], {}
    for name, case in PIXEL_CASES.items():
        inp, tgt, bad[name] = case.build(data, name)
        rows.append((name, inp, tgt, "train"))
    write_sheet(data / "samples.tsv", rows)
    (work / "sheet.yaml").write_text("data:\n  folder: data\n  samples: data/samples.tsv\n")
    targets = ["results/pairs.tsv"] + [f"results/convert/{c.role}/{n}.ome.zarr" for n, c in PIXEL_CASES.items() if c.convert]
    before = digests(data)
    result = subprocess.run(snakemake_command(work, *targets, "--cores", "2", "--keep-going",
                                              configfiles=[TINY, work / "sheet.yaml"]),
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    return SimpleNamespace(work=work, data=data, bad=bad, before=before, result=result)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PIXEL_CASES))
def test_bad_pixels_fail_their_jobs(pixel_run, name):
    run, case = pixel_run, PIXEL_CASES[name]
    assert run.result.returncode != 0
    logs = run.work / "results" / "logs"
    jobs = [logs / "check_pair" / f"{name}.log"] + ([logs / "convert" / case.role / f"{name}.log"] if case.convert else [])
    for log in jobs:
        assert log.exists(), run.result.stderr[-3000:]
        assert_one_line_error(log.read_text(), f"data/{run.bad[name]}", case.words)
    # The same line reaches the terminal.
    assert any(f"data/{run.bad[name]}" in line for line in fix_lines(run.result.stderr))
    assert files_besides_logs(run.work / "results") == []
    assert {p: h for p, h in digests(run.data).items() if f"/{name}_" in p} == \
           {p: h for p, h in run.before.items() if f"/{name}_" in p}


# ---------------------------------------------------------------------------- checkpoints, training, prediction, CLI


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    data = make_acquisitions(root / "data", n=2, shape=(48, 48))
    fast = dict(steps=2, batch_size=2, patch_size=32, val_every=2, checkpoint_every=2, val_batches=1)
    train_model("m", "regression", TINY_NET, fast, data[:1], data[1:], root / "m")
    return SimpleNamespace(root=root, data=data, checkpoint=root / "m" / "checkpoint.pt")


def in_rule_script(log: Path, call, *args) -> int:
    """Run `call` the way a rule script does (scripts/*.py); return the exit code."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as exit_info:
            with rule_script(SimpleNamespace(log=[str(log)], threads=1)):
                call(*args)
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved[0], saved[1]
    return exit_info.value.code


@dataclass
class LibraryCase:
    call: object
    args: tuple
    named: str | None  # None: the error does not name a file yet (see the test)
    words: tuple[str, ...]
    inputs: list = field(default_factory=list)  # hashed before and after
    output: Path | None = None  # must stay empty but for `kept`
    kept: tuple[str, ...] = ()


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _checkpoint_case(tmp: Path, model, kind: str) -> LibraryCase:
    path = tmp / f"{kind}.pt"
    payload = torch.load(model.checkpoint, weights_only=True)
    if kind == "missing":
        path = tmp / "not-trained" / "checkpoint.pt"
        return LibraryCase(load_model, (path,), str(path), ("checkpoint not found",))
    if kind == "other-architecture":
        payload["identity"]["net"]["channels"] = 16  # weights of an 8-channel network
        torch.save(payload, path)
        words = ("does not match the network", "another architecture")
    elif kind == "pickled-code":
        payload["extra"] = _RunsCode(tmp / "code-ran")
        torch.save(payload, path)
        words = ("refused", "pickled code")
    else:
        data = model.checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        words = ("not a readable checkpoint",)
    return LibraryCase(load_model, (path,), str(path), words, inputs=[path])


def _train_case(tmp: Path, model, kind: str) -> LibraryCase:
    out = tmp / "model"
    if kind == "patch-larger-than-image":
        data = make_acquisitions(tmp / "small", n=2, shape=(24, 24))
        settings = dict(steps=2, batch_size=2, patch_size=32)
        return LibraryCase(train_model, ("m", "regression", TINY_NET, settings, data[:1], data[1:], out),
                           data[0].input_path, ("smaller than the patch size", "train.patch_size"),
                           inputs=[tmp / "small"], output=out)
    # A learning rate that overflows the weights after the first (checkpointed) step.
    settings = dict(steps=5, batch_size=2, patch_size=32, warmup=1, lr=1e6, checkpoint_every=1, val_every=1,
                    val_batches=1)
    return LibraryCase(train_model, ("m", "regression", TINY_NET, settings, model.data[:1], model.data[1:], out),
                       str(out / "work" / "last.pt"), ("diverged", "last good state (step 1)", "lower train.lr"),
                       inputs=[model.root / "data"], output=out, kept=("work/last.pt",))


def _predict_case(tmp: Path, model, kind: str) -> LibraryCase:
    image = make_pair((40, 40), 5)[0].astype(np.float32)
    if kind == "nan":
        image[10:20, 10:20] = np.nan
    elif kind == "nan-off-the-subsample":
        # Large enough that the percentiles see every other pixel only; the NaN sits between them.
        image = np.tile(image, (52, 52))
        assert image.size > MAX_SAMPLES
        image[1, 1] = np.nan
    else:
        image[:] = 7
    source = Path(write_tiff(tmp / f"{kind}.tif", image))
    out = tmp / "predicted" / "x.ome.zarr"
    words = ("no contrast",) if kind == "constant" else ("NaN or infinite",)
    return LibraryCase(predict, (model.checkpoint, source, out, {"tile": 32, "samples": 2}), str(source), words,
                       inputs=[source], output=out.parent)


def _tile_case(tmp: Path, model) -> LibraryCase:
    # TINY_NET has 2 levels: tiles must be even. Refused before a partial store is made.
    source = Path(write_tiff(tmp / "image.tif", make_pair((40, 40), 5)[0]))
    out = tmp / "predicted" / "x.ome.zarr"
    return LibraryCase(predict, (model.checkpoint, source, out, {"tile": 33, "samples": 2}), None,
                       ("predict.tile 33 is not a multiple of 2", "use a multiple of 2 (e.g. 32 or 34)"),
                       inputs=[source], output=out.parent)


LIBRARY_CASES = {
    "missing-checkpoint": lambda tmp, m: _checkpoint_case(tmp, m, "missing"),
    "checkpoint-of-other-architecture": lambda tmp, m: _checkpoint_case(tmp, m, "other-architecture"),
    "checkpoint-with-pickled-code": lambda tmp, m: _checkpoint_case(tmp, m, "pickled-code"),
    "truncated-checkpoint": lambda tmp, m: _checkpoint_case(tmp, m, "truncated"),
    "image-smaller-than-patch": lambda tmp, m: _train_case(tmp, m, "patch-larger-than-image"),
    "diverging-training": lambda tmp, m: _train_case(tmp, m, "diverging"),
    "nan-image-to-restore": lambda tmp, m: _predict_case(tmp, m, "nan"),
    "nan-pixel-off-the-percentile-subsample": lambda tmp, m: _predict_case(tmp, m, "nan-off-the-subsample"),
    "constant-image-to-restore": lambda tmp, m: _predict_case(tmp, m, "constant"),
    "tile-not-a-multiple-of-the-network-factor": lambda tmp, m: _tile_case(tmp, m),
}


@pytest.mark.parametrize("name", list(LIBRARY_CASES))
def test_bad_checkpoint_training_or_prediction_input(tmp_path, model, name):
    case = LIBRARY_CASES[name](tmp_path, model)
    before = digests(*case.inputs)
    log = tmp_path / "rule.log"
    assert in_rule_script(log, case.call, *case.args) == 1
    text = log.read_text()
    assert_one_line_error(text, case.named or "", case.words)
    if case.output is not None:
        left = sorted(str(p.relative_to(case.output)) for p in case.output.rglob("*") if p.is_file()) \
            if case.output.exists() else []
        assert left == list(case.kept)
    assert digests(*case.inputs) == before
    assert not (tmp_path / "code-ran").exists()


def test_cli_convert_of_a_truncated_zarr_chunk(tmp_path, capsys):
    source = tmp_path / "stack.zarr"
    array = zarr.open_array(str(source), mode="w", shape=(2, 32, 32), chunks=(1, 16, 16), dtype="uint16", zarr_format=3)
    array[:] = 7 + np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32)
    chunk = source / "c" / "1" / "1" / "1"
    chunk.write_bytes(chunk.read_bytes()[:5])
    before = digests(source)
    assert main(["convert", str(source), str(tmp_path / "out" / "stack.ome.zarr")]) != 0
    assert_one_line_error(capsys.readouterr().err, str(source), ("cannot be read", "corrupt or truncated"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert digests(source) == before


def test_cli_as_a_user_runs_it(tmp_path):
    """`python -m flowrestore`: a non-zero exit and one line on stderr, no traceback."""
    missing = tmp_path / "missing.tif"
    result = subprocess.run([sys.executable, "-m", "flowrestore", "convert", str(missing), str(tmp_path / "o.zarr")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert_one_line_error(result.stderr, str(missing), ("not found",))
    assert not (tmp_path / "o.zarr").exists()


def test_image_smaller_than_the_tile_is_restored_not_refused(tmp_path, model):
    """Smaller than a tile (and than the network's downsampling) is fine: it is padded."""
    for shape in [(5, 3), (1, 40)]:
        source = write_tiff(tmp_path / f"tiny{shape[0]}.tif", make_pair((40, 40), 6)[0][: shape[0], : shape[1]])
        out = tmp_path / f"tiny{shape[0]}.ome.zarr"
        predict(model.checkpoint, source, out, {"tile": 64, "samples": 2})
        mmse = read_prediction(out)["mmse"]
        assert mmse.shape == shape and np.isfinite(mmse).all()
        assert not partial_path(out).exists()
