import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from flowrestore.analysis import metrics as M
from flowrestore.analysis.metrics import MetricUnavailable

W5 = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def texture(shape, sigma=2.0, seed=0):
    """Smooth random texture: white noise blurred with a periodic Gaussian."""
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")


def noisy(x, level, seed=1):
    # Same noise realisation at every level, so quality is strictly monotone in `level`.
    return x + level * x.std() * np.random.default_rng(seed).standard_normal(x.shape)


# --- PSNR -------------------------------------------------------------------------


def test_psnr_hand_computation():
    target = np.arange(100, dtype=float).reshape(10, 10)
    # 0/100 percentiles = min/max = 0/99, so a +9.9 offset is an error of 0.1 -> 20 dB.
    assert M.psnr(target + 9.9, target, low=0, high=100) == pytest.approx(20.0, abs=1e-5)

    # Default percentiles, written out by hand.
    t = texture((64, 64)) * 50 + 200
    p = noisy(t, 0.3)
    lo, hi = np.percentile(t, [0.1, 99.9])
    expected = 10 * np.log10(1.0 / np.mean(((p - t) / (hi - lo)) ** 2))
    assert M.psnr(p, t) == pytest.approx(expected, abs=1e-4)


def test_psnr_identical_images_is_inf_and_compute_all_reports_none():
    t = texture((64, 64))
    assert M.psnr(t, t) == math.inf
    assert M.psnr_affine(t, t) == math.inf
    res = M.compute_all(t, t)
    assert res["psnr"] is None and res["psnr_affine"] is None
    assert "identical" in res["missing"]["psnr"]
    assert res["ssim"] == pytest.approx(1.0)


def test_psnr_constant_target_unavailable():
    with pytest.raises(MetricUnavailable, match="zero intensity range"):
        M.psnr(np.ones((8, 8)), np.full((8, 8), 3.0))


def test_psnr_affine_is_scale_and_offset_invariant():
    t = texture((64, 64))
    p = noisy(t, 0.2)
    scaled = 2.5 * p - 3.0
    assert M.psnr_affine(scaled, t) > M.psnr(scaled, t) + 10
    # Invariance: the affine fit undoes any scale/offset exactly.
    assert M.psnr_affine(scaled, t) == pytest.approx(M.psnr_affine(p, t), abs=1e-4)
    # An exactly affine-related prediction is limited only by float32 rounding.
    assert M.psnr_affine(2.5 * t - 3.0, t) > 100

    # Same value as the PSNR of the explicitly least-squares-fitted image.
    tn = M.normalize_percentile(t).astype(float)
    a, b = np.polyfit(scaled.ravel(), tn.ravel(), 1)
    expected = 10 * np.log10(1.0 / np.mean((a * scaled + b - tn) ** 2))
    assert M.psnr_affine(scaled, t) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_psnr_affine_never_below_psnr(seed):
    rng = np.random.default_rng(seed)
    t = texture((32, 32), seed=seed)
    p = rng.uniform(0.5, 2) * noisy(t, rng.uniform(0.05, 1), seed) + rng.normal()
    assert M.psnr_affine(p, t) >= M.psnr(p, t)


def test_normalize_percentile_uses_reference():
    ref = np.arange(1001, dtype=float)  # 0.1/99.9 percentiles are exactly 1 and 999
    out = M.normalize_percentile(np.array([1.0, 500.0, 999.0]), reference=ref)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 499 / 998, 1.0], rtol=1e-6)


# --- SSIM / MS-SSIM ----------------------------------------------------------------


def test_ssim_identity_and_monotone_in_noise():
    t = texture((64, 64))
    assert M.ssim(t, t) == pytest.approx(1.0, abs=1e-6)
    values = [M.ssim(noisy(t, s), t) for s in (0.05, 0.2, 0.5, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] < 0.9


def test_ssim_3d():
    t = texture((12, 32, 32))
    assert M.ssim(t, t) == pytest.approx(1.0, abs=1e-6)
    assert 0 < M.ssim(noisy(t, 0.5), t) < M.ssim(noisy(t, 0.1), t) < 1


@pytest.mark.parametrize("shape", [(5, 5), (10, 64), (8, 32, 32)])
def test_ssim_small_image_unavailable(shape):
    t = texture(shape)
    with pytest.raises(MetricUnavailable, match="smaller than the SSIM window 11"):
        M.ssim(t, t)
    with pytest.raises(MetricUnavailable):
        M.ms_ssim(t, t)


def test_ms_ssim_identity_and_monotone_in_noise():
    t = texture((128, 128))
    assert M.ms_ssim(t, t) == pytest.approx(1.0, abs=1e-6)
    values = [M.ms_ssim(noisy(t, s), t) for s in (0.05, 0.2, 0.5, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert 0 < values[-1] < 0.9


def test_ms_ssim_anticorrelated_is_finite():
    # Negative cs/SSIM terms are clipped, so fractional powers do not produce NaN.
    t = texture((128, 128))
    assert M.ssim(-t, t) < 0
    value = M.ms_ssim(-t, t)
    assert math.isfinite(value) and 0 < value < 1e-3


def test_ms_ssim_single_scale_equals_skimage_ssim():
    # Checks our own SSIM terms against skimage's implementation.
    t = texture((48, 40))
    p = noisy(t, 0.4)
    assert M.ms_ssim(p, t, weights=(1.0,)) == pytest.approx(M.ssim(p, t), abs=1e-5)


def test_ms_ssim_reduces_scales_for_small_images():
    assert M._n_scales((64, 64), 5) == 3  # 64, 32, 16; 8 < 11
    assert M._n_scales((176, 200), 5) == 5
    assert M._n_scales((175, 200), 5) == 4
    assert M._n_scales((10, 200), 5) == 0
    t = texture((64, 64))
    p = noisy(t, 0.5)
    value = M.ms_ssim(p, t)
    # Dropping scales 4-5 and renormalising is the same as passing only 3 weights.
    assert value == pytest.approx(M.ms_ssim(p, t, weights=W5[:3]), rel=1e-12)
    assert value != pytest.approx(M.ms_ssim(p, t, weights=W5[:2]), rel=1e-6)


# --- FRC -------------------------------------------------------------------------


def blurred_pair(sigma, noise=0.1, n=256, seed=0):
    """Two independent noise realisations of one blurred white-noise texture."""
    rng = np.random.default_rng(seed)
    s = texture((n, n), sigma=sigma, seed=seed)
    return s + noise * rng.standard_normal(s.shape), s + noise * rng.standard_normal(s.shape)


def expected_frc_resolution(sigma, noise, threshold=1 / 7):
    # Signal PSD exp(-4 pi^2 sigma^2 f^2), white noise PSD noise^2: FRC = S / (S + N).
    f = np.sqrt(np.log((1 - threshold) / (threshold * noise**2))) / (2 * np.pi * sigma)
    return 1 / f


def test_frc_resolution_tracks_blur():
    r2 = M.frc_resolution(*blurred_pair(2.0))
    r4 = M.frc_resolution(*blurred_pair(4.0))
    for r in (r2, r4):
        assert math.isfinite(r) and 2.0 < r < 256
    assert r4 > 1.5 * r2  # stronger blur -> worse resolution
    # Agrees with the analytic crossing of S/(S+N) = 1/7 (~5 and ~10 px).
    assert r2 == pytest.approx(expected_frc_resolution(2.0, 0.1), rel=0.15)
    assert r4 == pytest.approx(expected_frc_resolution(4.0, 0.1), rel=0.15)
    # 0.5 is a stricter threshold than 1/7, so it is reached at a coarser scale.
    assert M.frc_resolution(*blurred_pair(2.0), threshold=0.5) > r2


def test_frc_apodisation_suppresses_edge_artefacts():
    # A non-periodic background (ramps) jumps at the wrapped image edges; without
    # apodisation that jump is perfectly correlated at all frequencies -> FRC at Nyquist.
    rng = np.random.default_rng(0)
    s = ndi.gaussian_filter(rng.standard_normal((256, 256)), 2.0, mode="reflect")
    a, b = (s + 0.1 * rng.standard_normal(s.shape) for _ in range(2))
    ramp = np.linspace(0, 5, 256)
    background = ramp[None, :] + ramp[:, None] ** 2
    clean = M.frc_resolution(a, b)
    with_ramp = M.frc_resolution(a + background, b + background)
    assert with_ramp == pytest.approx(clean, rel=0.05)


def test_frc_resolution_in_physical_units():
    a, b = blurred_pair(2.0)
    r1 = M.frc_resolution(a, b, pixel_size=1.0)
    assert M.frc_resolution(a, b, pixel_size=2.0) == pytest.approx(2 * r1, rel=1e-9)
    assert M.frc_resolution(a, b, pixel_size=0.1) == pytest.approx(0.1 * r1, rel=1e-9)


def test_frc_curve_shape_and_limits():
    a, b = blurred_pair(2.0, n=64)
    freq, frc, counts = M.frc_curve(a, b, pixel_size=0.5)
    assert freq.shape == frc.shape == counts.shape == (32,)
    assert freq[0] == pytest.approx(1 / (64 * 0.5)) and freq[-1] == pytest.approx(1 / (2 * 0.5))
    assert np.all(counts > 0) and np.all(np.abs(frc) <= 1 + 1e-12)
    assert frc[0] > 0.9  # low frequencies are signal-dominated
    # A constant offset must not leak into the low rings through the window.
    np.testing.assert_allclose(M.frc_curve(a + 1000, b + 1000, pixel_size=0.5)[1], frc, atol=1e-9)


def test_frc_threshold_crossing_is_interpolated_and_smoothed():
    freq = np.arange(1, 21) / 40.0
    frc = 1.0 - 2 * freq  # linear: the 3-ring running mean leaves the interior unchanged
    # 1 - 2 f = 1/7 at f = 3/7, between rings 17 and 18.
    assert M._resolution_from_curve(freq, frc, 1.0, 1 / 7) == pytest.approx(7 / 3)
    # A single-ring dip is smoothed away rather than taken as the crossing.
    dipped = frc.copy()
    dipped[3] = 0.0
    assert M._resolution_from_curve(freq, dipped, 1.0, 1 / 7) == pytest.approx(7 / 3)
    # Never below: Nyquist; below from the first ring on: 1 / first frequency.
    assert M._resolution_from_curve(freq, np.ones(20), 0.5, 1 / 7) == 1.0
    assert M._resolution_from_curve(freq, np.zeros(20), 1.0, 1 / 7) == pytest.approx(40.0)


def test_frc_identical_images_give_nyquist():
    a, _ = blurred_pair(2.0, n=64)
    assert M.frc_resolution(a, a, pixel_size=0.3) == pytest.approx(0.6)


def test_frc_3d_pools_planes():
    planes = [blurred_pair(2.0, n=128, seed=s) for s in range(3)]
    a3 = np.stack([p[0] for p in planes])
    b3 = np.stack([p[1] for p in planes])
    r3 = M.frc_resolution(a3, b3)
    assert r3 == pytest.approx(expected_frc_resolution(2.0, 0.1), rel=0.15)
    _, _, counts3 = M.frc_curve(a3, b3)
    _, _, counts2 = M.frc_curve(a3[0], b3[0])
    np.testing.assert_array_equal(counts3, 3 * counts2)


def test_frc_small_image_unavailable():
    a = texture((15, 64))
    with pytest.raises(MetricUnavailable, match="smaller than 16 px"):
        M.frc_resolution(a, a)


# --- MicroSSIM / MicroMS3IM (microssim) -------------------------------------------


def micro_ssim_by_formula(target, pred):
    """MicroSSIM written out from Ashesh et al. 2024 and microssim's docs, numpy and scipy only:
    background = 3rd percentile of each image, both divided by the target's largest value above
    its background; alpha maximises the mean SSIM between target and alpha * prediction; the score
    is the mean SSIM at that alpha. SSIM as skimage's (sample covariance, C = (K R)^2, R the
    normalised target's range, border of half a window cropped); microssim fits alpha with
    skimage's default 7x7 uniform window and scores with the Gaussian one (sigma 1.5, 11 taps)."""
    from scipy.optimize import minimize_scalar

    t0, p0 = target - np.percentile(target, 3), pred - np.percentile(pred, 3)
    x, y = t0 / t0.max(), p0 / t0.max()
    r = x.max() - x.min()
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2

    def ssim_map(alpha, blur, taps):
        ux, uy = blur(x), blur(y)
        cov = taps**2 / (taps**2 - 1)
        vx, vy, vxy = cov * (blur(x * x) - ux**2), cov * (blur(y * y) - uy**2), cov * (blur(x * y) - ux * uy)
        s = ((2 * alpha * ux * uy + c1) * (2 * alpha * vxy + c2)
             / ((ux**2 + alpha**2 * uy**2 + c1) * (vx + alpha**2 * vy + c2)))
        return s[taps // 2: -(taps // 2), taps // 2: -(taps // 2)].mean()

    def uniform(a):
        return ndi.uniform_filter(a, 7)

    def gaussian(a):
        return ndi.gaussian_filter(a, 1.5, truncate=3.5, mode="reflect")

    alpha = minimize_scalar(lambda a: -ssim_map(a, uniform, 7), bounds=(1e-3, 1e3), method="bounded",
                            options={"xatol": 1e-9}).x
    return ssim_map(alpha, gaussian, 11)


def test_micro_ssim_matches_its_formula_and_ignores_brightness():
    t = texture((40, 48), seed=4) * 30 + 100
    p = noisy(t, 0.4) * 0.6 + 12  # another brightness and offset, plus noise
    expected = micro_ssim_by_formula(t, p)
    assert 0.2 < expected < 0.95
    assert M.micro_ssim(p, t) == pytest.approx(expected, abs=1e-4)
    # By hand: 3 t + 7 has background 3 p3(t) + 7, so after normalisation it is 3x the target's
    # and alpha = 1/3 makes the two identical: MicroSSIM 1, where plain SSIM sees the offset.
    assert M.micro_ssim(3 * t + 7, t) == pytest.approx(1.0, abs=1e-6)
    assert M.ssim(3 * t + 7, t) < 0.5


def test_micro_ms3im_ignores_brightness_and_falls_with_noise():
    t = texture((192, 192), seed=5) * 30 + 100
    assert M.micro_ms3im(3 * t + 7, t) == pytest.approx(1.0, abs=1e-4)  # same reasoning as MicroSSIM's
    values = [M.micro_ms3im(noisy(t, s), t) for s in (0.1, 0.5, 1.0)]
    assert values[0] > values[1] > values[2]
    with pytest.raises(MetricUnavailable, match="176"):
        M.micro_ms3im(t[:175], t[:175])


def test_micro_metrics_of_a_volume_are_the_mean_of_its_planes():
    t = np.stack([texture((180, 180), seed=s) * 30 + 100 for s in (6, 7)])
    p = noisy(t, 0.5)
    planes = [M.micro_ssim(p[i], t[i]) for i in range(2)]
    # One background and one alpha fitted over the whole volume, then the planes scored with them:
    # close to, not equal to, the mean of planes fitted one by one.
    assert M.micro_ssim(p, t) == pytest.approx(np.mean(planes), abs=0.02)
    assert 0 < M.micro_ms3im(p, t) < 1


# --- compute_all -----------------------------------------------------------------

KEYS = {"psnr", "psnr_affine", "ssim", "ms_ssim", "micro_ssim", "micro_ms3im", "frc_1/7", "frc_0.5", "missing"}


def assert_no_nan(res):
    for k, v in res.items():
        if k != "missing":
            assert v is None or (isinstance(v, float) and math.isfinite(v)), (k, v)


def test_compute_all_tiny_image():
    rng = np.random.default_rng(0)
    res = M.compute_all(rng.random((5, 5)), rng.random((5, 5)))
    assert set(res) == KEYS
    assert_no_nan(res)
    assert isinstance(res["psnr"], float) and isinstance(res["psnr_affine"], float)
    small = {"ssim", "ms_ssim", "micro_ssim", "micro_ms3im", "frc_1/7", "frc_0.5"}
    for k in small:
        assert res[k] is None
        assert "5x5" in res["missing"][k]
    assert set(res["missing"]) == small


def test_compute_all_normal_image():
    t = texture((192, 192))
    res = M.compute_all(noisy(t, 0.3), t, pixel_size=0.1)
    assert set(res) == KEYS and res["missing"] == {}
    assert_no_nan(res)
    assert 0.2 <= res["frc_1/7"] <= res["frc_0.5"] <= 19.2


def test_compute_all_nan_input_gives_none_not_nan():
    t = texture((32, 32))
    p = t.copy()
    p[3, 3] = np.nan
    res = M.compute_all(p, t)
    assert_no_nan(res)
    assert all(res[k] is None for k in KEYS - {"missing"})
    assert "non-finite" in res["missing"]["psnr"]


def test_compute_all_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        M.compute_all(np.zeros((32, 32)), np.zeros((32, 31)))


def _lowpass_z(x, keep):
    """x with every axial frequency above index `keep` removed (an ideal low-pass along Z)."""
    f = np.fft.rfft(x, axis=0)
    f[keep + 1:] = 0
    return np.fft.irfft(f, n=x.shape[0], axis=0)


def test_axial_frc_crosses_where_an_ideal_axial_low_pass_cuts():
    rng = np.random.default_rng(0)
    truth = rng.random((64, 16, 16))
    # Plane k_z = 10 of 64 planes of 0.1 um: 10 / 6.4 um^-1, so the agreement ends near 0.64 um.
    cut = _lowpass_z(truth, 10)
    freq, corr = M.axial_frc_curve(cut, truth, z_size=0.1)
    assert freq[9] == pytest.approx(10 / 6.4) and len(freq) == 32
    # the Tukey window leaks into a ring or two; above, chance correlation of 256 values per plane (std 1/16)
    assert corr[:8].min() > 0.9 and np.abs(corr[12:]).max() < 0.25
    res = M.axial_frc_resolution(cut, truth, z_size=0.1)
    assert 6.4 / 14 < res < 6.4 / 10  # cut at ring 10; leakage and the 3-ring smoothing move it out a little
    assert M.axial_frc_resolution(truth, truth, z_size=0.1) == pytest.approx(0.2)  # Nyquist
    # Lateral blur does not change the axial agreement of the low frequencies of Z
    lateral = ndi.gaussian_filter(truth, (0, 2, 2))
    assert M.axial_frc_resolution(_lowpass_z(lateral, 10), lateral, z_size=0.1) == pytest.approx(res, rel=0.05)


def test_axial_frc_needs_a_stack():
    with pytest.raises(MetricUnavailable, match="2D"):
        M.axial_frc_curve(np.ones((16, 16)), np.ones((16, 16)))
    with pytest.raises(MetricUnavailable, match="too thin"):
        M.axial_frc_curve(np.random.rand(4, 16, 16), np.random.rand(4, 16, 16))
