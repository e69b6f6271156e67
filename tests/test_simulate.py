import os

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from flowrestore.data import simulate as S
from flowrestore.data.simulate import Microscope

SHAPE_2D = (128, 128)
SHAPE_3D = (12, 64, 64)


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def band_power(img, lo, hi):
    """Fraction of (mean-free) in-plane power between `lo` and `hi` cycles/px."""
    img = np.asarray(img, dtype=np.float64)
    power = np.abs(np.fft.fft2(img - img.mean(), axes=(-2, -1))) ** 2
    fy = np.fft.fftfreq(img.shape[-2])[:, None]
    fx = np.fft.fftfreq(img.shape[-1])[None, :]
    f = np.hypot(fy, fx)
    return float(power[..., (f >= lo) & (f < hi)].sum() / power.sum())


def low_freq_share(img):
    return band_power(img, 0.0, 0.02)


def haze_ratio(img):
    """Power of haze-scale frequencies over that of structure-scale ones.

    Unlike a plain share, the noise floor at high frequencies does not dilute it.
    """
    return band_power(img, 0.0, 0.02) / band_power(img, 0.05, 0.15)


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
def test_make_pair_deterministic_shapes_dtypes(shape):
    wf, cf = S.make_pair(shape, seed=7)
    wf2, cf2 = S.make_pair(shape, seed=7)
    other, _ = S.make_pair(shape, seed=8)
    assert wf.shape == cf.shape == shape
    assert wf.dtype == cf.dtype == np.uint16
    np.testing.assert_array_equal(wf, wf2)
    np.testing.assert_array_equal(cf, cf2)
    assert not np.array_equal(wf, other)
    # Not blank and not saturated.
    assert 0 < cf.mean() < 60000 and cf.max() > 10 * np.median(cf) + 10


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
def test_render_truth_range_and_content(shape):
    truth = S.render_truth(shape, np.random.default_rng(0))
    assert truth.shape == shape and truth.dtype == np.float32
    assert truth.min() >= 0 and truth.max() <= 1
    # Sparse, bright structures on a dark background.
    assert truth.max() > 0.5 and 0.005 < truth.mean() < 0.3
    denser = S.render_truth(shape, np.random.default_rng(0), density=3.0)
    assert denser.mean() > truth.mean()


def test_render_truth_rejects_bad_ndim():
    with pytest.raises(ValueError):
        S.render_truth((4, 4, 4, 4), np.random.default_rng(0))


@pytest.mark.parametrize("shape", [(192, 192), (16, 96, 96)])
def test_widefield_is_hazier_than_confocal(shape):
    rng = np.random.default_rng(3)
    truth = S.render_truth(shape, rng)
    wf, cf = S.degrade(truth, rng)
    blurred = ndimage.gaussian_filter(truth, Microscope().focus_sigma)
    # Haze and noise, not just the PSF, separate input from target.
    assert corr(wf, cf) < corr(blurred, cf) - 0.03
    assert low_freq_share(wf) > 1.05 * low_freq_share(cf)
    assert haze_ratio(wf) > 1.4 * haze_ratio(cf)
    # Haze lifts the dark background well above the offset alone.
    m = Microscope()
    dark = blurred < 0.01
    assert wf[dark].mean() > 1.3 * m.background * m.photons


def test_no_haze_means_no_extra_low_frequencies():
    """Control for the test above: without haze the two share their spectrum."""
    rng = np.random.default_rng(3)
    truth = S.render_truth((192, 192), rng)
    m = Microscope(haze_fraction=0.0, background=0.0, photons=2000.0, read_noise=1.0)
    wf, cf = S.degrade(truth, rng, m)
    assert haze_ratio(wf) == pytest.approx(haze_ratio(cf), rel=0.1)
    assert corr(wf, cf) > 0.99


def test_haze_truth_only_reaches_widefield():
    truth = np.zeros((96, 96), np.float32)
    hidden = np.zeros_like(truth)
    hidden[40:56, 40:56] = 1.0
    m = Microscope(background=0.0, read_noise=0.0, target_read_noise=0.0)
    wf, cf = S.degrade(truth, np.random.default_rng(0), m, haze_truth=hidden)
    assert cf.max() == 0
    # Spread out, not sharp: light well beyond the square but no in-focus edge.
    assert wf[48, 48] > 0 and wf[48, 30] > 0.05 * wf[48, 48]
    assert wf.max() < 0.5 * m.photons


@pytest.mark.parametrize("level", [0.05, 0.5])
def test_poisson_gaussian_noise_statistics(level):
    truth = np.full((256, 256), level, np.float32)
    m = Microscope(haze_fraction=0.0, background=0.0, photons=200.0, read_noise=3.0,
                   target_photons=2000.0, target_read_noise=1.0)
    wf, cf = S.degrade(truth, np.random.default_rng(1), m)
    for img, photons, read in ((wf, m.photons, m.read_noise), (cf, m.target_photons, m.target_read_noise)):
        expected = level * photons
        assert img.mean() == pytest.approx(expected, rel=0.02, abs=0.1)
        # Shot noise makes the variance track the signal (pure Gaussian would not).
        assert img.var() == pytest.approx(expected + read**2, rel=0.05)


def test_noise_variance_grows_with_signal_in_one_image():
    truth = np.zeros((128, 256), np.float32)
    truth[:, 128:] = 0.6
    m = Microscope(haze_fraction=0.0, background=0.1, read_noise=2.0)
    wf, _ = S.degrade(truth, np.random.default_rng(2), m)
    left, right = wf[:, :100], wf[:, 156:]  # away from the blurred step
    for part, level in ((left, 0.1), (right, 0.7)):
        assert part.var() == pytest.approx(level * m.photons + m.read_noise**2, rel=0.07)


def test_write_demo_files_metadata_and_append(tmp_path):
    ids = S.write_demo(tmp_path, 3, (64, 64), seed=5)
    assert ids == ["demo000", "demo001", "demo002"]
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(f"{i}{s}" for i in ids for s in ("_wf.tif", "_confocal.tif"))
    before = {n: (tmp_path / n).read_bytes() for n in names}
    mtimes = {n: os.stat(tmp_path / n).st_mtime_ns for n in names}

    with tifffile.TiffFile(tmp_path / "demo001_wf.tif") as tif:
        assert tif.series[0].axes == "YX"
        assert tif.series[0].dtype == np.uint16
        assert 'PhysicalSizeX="0.1"' in tif.ome_metadata
        assert 'PhysicalSizeY="0.1"' in tif.ome_metadata
        wf = tif.asarray()
    ref_wf, _ = S._pair((64, 64), np.random.default_rng([5, 1]), Microscope())
    np.testing.assert_array_equal(wf, ref_wf)

    ids = S.write_demo(tmp_path, 4, (64, 64), seed=5)
    assert ids[-1] == "demo003"
    for n, data in before.items():
        assert (tmp_path / n).read_bytes() == data
        assert os.stat(tmp_path / n).st_mtime_ns == mtimes[n]
    assert len(os.listdir(tmp_path)) == 8
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".") or "tmp" in n]


def test_write_demo_3d_custom_names_and_pixel_size(tmp_path):
    ids = S.write_demo(tmp_path / "sub", 1, (6, 32, 32), seed=1, pixel_size=(0.5, 0.2, 0.2),
                       input_suffix="_in.tif", target_suffix="_gt.tif", prefix="cell")
    assert ids == ["cell000"]
    for suffix in ("_in.tif", "_gt.tif"):
        with tifffile.TiffFile(tmp_path / "sub" / f"cell000{suffix}") as tif:
            assert tif.series[0].axes == "ZYX"
            assert tif.series[0].shape == (6, 32, 32)
            xml = tif.ome_metadata
            assert 'PhysicalSizeX="0.2"' in xml and 'PhysicalSizeZ="0.5"' in xml


def test_write_demo_rejects_mismatched_pixel_size(tmp_path):
    with pytest.raises(ValueError):
        S.write_demo(tmp_path, 1, (32, 32), pixel_size=(0.3, 0.1, 0.1))
