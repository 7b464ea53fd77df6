"""View makers and their counter-based randomness (skd.augment: counter, base, images, rows)."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skd import MLP, DistillationClassifier
from skd.augment import Affine, CutMix, MixUp, Munge, Noise, Shift, ViewMaker
from skd.augment.counter import (
    BETA_DRAWS,
    box_muller,
    counter_uniforms,
    lowbias32,
    seed_state,
    symmetric_beta,
)
from skd.augment.images import affine_grid, affine_thetas
from skd.augment.rows import mix_rows, munge_rows

uint32 = st.integers(0, 2**32 - 1)
seeds = st.integers(0, 2**63 - 1)
keys = st.integers(0, 2**31 - 1)


def lowbias32_reference(x: int) -> int:
    """Wellons' lowbias32 on Python ints, wrapping at 32 bits."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def makers_for(X):
    """One of every view maker, fitted on the digits rows ``X`` (8x8 images)."""
    return [Affine(image_shape=(1, 8, 8), scale=(0.9, 1.1)),
            Shift(image_shape=(1, 8, 8), interpolation="nearest"), CutMix(image_shape=(1, 8, 8)),
            MixUp(alpha=0.4), Munge().fit(X), Noise(scale=0.2).fit(X), Noise()]


@pytest.fixture(scope="module")
def X(digits):
    return torch.as_tensor(digits[0][:300])


# --- the counter-based generator ---------------------------------------------------------------

@given(st.lists(uint32, min_size=1, max_size=50))
def test_lowbias32_on_int64_tensors_equals_the_32_bit_reference(values):
    hashed = lowbias32(torch.tensor(values, dtype=torch.int64))
    assert hashed.tolist() == [lowbias32_reference(v) for v in values]
    assert int(hashed.max()) < 2**32 and int(hashed.min()) >= 0


def test_lowbias32_never_overflows_int64_at_the_largest_word():
    top = torch.tensor([2**32 - 1, 2**32 - 2, 0x80000000], dtype=torch.int64)
    assert lowbias32(top).tolist() == [lowbias32_reference(v) for v in top.tolist()]


@given(seeds, st.lists(keys, min_size=1, max_size=20), keys, st.integers(1, 8))
def test_a_views_draws_depend_only_on_seed_row_and_view(seed, rows, view, n_draws):
    together = counter_uniforms(seed, torch.tensor(rows), view, n_draws)
    for position, row in enumerate(rows):
        alone = counter_uniforms(seed, torch.tensor([row]), torch.tensor([view]), n_draws)[0]
        assert torch.equal(together[position], alone)


@given(seeds, keys, keys, st.data())
def test_different_rows_views_and_seeds_give_different_draws(seed, row, view, data):
    base = counter_uniforms(seed, row, view, 4)
    other_row = data.draw(keys.filter(lambda r: r != row))
    other_view = data.draw(keys.filter(lambda v: v != view))
    other_seed = data.draw(seeds.filter(lambda s: s != seed))
    assert not torch.equal(base, counter_uniforms(seed, other_row, view, 4))
    assert not torch.equal(base, counter_uniforms(seed, row, other_view, 4))
    assert not torch.equal(base, counter_uniforms(other_seed, row, view, 4))


@given(seeds)
def test_uniforms_lie_in_0_1_with_the_uniform_mean_and_variance(seed):
    u = counter_uniforms(seed, torch.arange(20000), torch.arange(20000) % 7, 3).double()
    assert u.dtype == torch.float64 and 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float(u.var()) - 1 / 12) < 0.003
    # 24-bit multiples of 2**-24: exact in float32, hence the same on every device
    assert torch.equal(u * 2**24, torch.floor(u * 2**24))


def test_box_muller_gives_standard_normals():
    u = counter_uniforms(3, torch.arange(100000), 0, 2)
    z = box_muller(u[:, 0], u[:, 1]).double().numpy()
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0, 2.0])
def test_symmetric_beta_has_the_beta_distribution(alpha):
    lam = symmetric_beta(counter_uniforms(11, torch.arange(100000), 0, BETA_DRAWS), alpha).double().numpy()
    assert abs(lam.mean() - 0.5) < 0.01
    assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.005
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    np.testing.assert_allclose(np.quantile(lam, levels), stats.beta(alpha, alpha).ppf(levels), atol=0.01)


def test_symmetric_beta_with_alpha_zero_is_one():
    assert torch.equal(symmetric_beta(torch.rand(5, BETA_DRAWS), 0.0), torch.ones(5))


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True, "0"])
def test_a_bad_seed_is_refused_naming_it(seed):
    with pytest.raises(ValueError, match="seed must be an int in"):
        seed_state(seed)


def test_negative_or_float_keys_are_refused():
    with pytest.raises(ValueError, match="rows must be >= 0"):
        counter_uniforms(0, torch.tensor([-1]), 0, 2)
    with pytest.raises(ValueError, match="view_ids must hold integers"):
        counter_uniforms(0, torch.tensor([1]), torch.tensor([0.5]), 2)


# --- identities ------------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def matrix(data, n: int, f: int) -> torch.Tensor:
    return torch.tensor(data.draw(st.lists(finite, min_size=n * f, max_size=n * f))).reshape(n, f)


@given(st.integers(1, 6), st.integers(1, 5), st.data())
def test_mixup_with_lambda_one_is_the_identity(n, f, data):
    rows, partners = matrix(data, n, f), matrix(data, n, f)
    assert torch.equal(mix_rows(rows, partners, torch.ones(n)), rows)


def test_mixup_with_alpha_zero_makes_every_view_its_row(X):
    assert torch.equal(MixUp(alpha=0.0).views(X, torch.arange(50), 3, seed=1), X[:50])
    assert torch.equal(MixUp(alpha=0.0)(X[:50]), X[:50])


@given(st.floats(1e-3, 1e3) | st.just(float("inf")), st.integers(0, 2**31 - 1))
def test_munge_with_p_zero_is_the_identity(s, seed):
    X = torch.as_tensor(np.random.default_rng(0).normal(size=(40, 5)), dtype=torch.float32)
    maker = Munge(p=0.0, s=s).fit(X)
    assert torch.equal(maker.views(X, torch.arange(40), torch.arange(40) % 3, seed), X)
    assert torch.equal(maker(X), X)


@given(st.integers(1, 3), st.integers(2, 12), st.integers(2, 12), st.integers(0, 1000))
def test_affine_with_no_rotation_shift_or_zoom_is_the_identity(channels, height, width, seed):
    X = torch.as_tensor(np.random.default_rng(seed).normal(size=(6, channels * height * width)),
                        dtype=torch.float32)
    maker = Affine(image_shape=(channels, height, width), degrees=0.0, translate=(0.0, 0.0))
    torch.testing.assert_close(maker.views(X, torch.arange(6), 0, seed), X, atol=1e-5, rtol=0)
    torch.testing.assert_close(maker(X), X, atol=1e-5, rtol=0)


@given(st.integers(1, 6), st.integers(1, 5), st.floats(1e-3, 1e3), st.data())
def test_munge_rows_without_swaps_is_the_identity(n, f, s, data):
    rows, neighbours, normals = (matrix(data, n, f) for _ in range(3))
    no_swap = torch.zeros(n, f, dtype=torch.bool)
    assert torch.equal(munge_rows(rows, neighbours, no_swap, normals, s), rows)
    assert torch.equal(munge_rows(rows, neighbours, ~no_swap, torch.zeros(n, f), s), neighbours)


def test_noise_of_scale_zero_and_cutmix_of_alpha_zero_are_the_identity(X):
    assert torch.equal(Noise(scale=0.0).fit(X).views(X, torch.arange(20), 1, 0), X[:20])
    assert torch.equal(CutMix(image_shape=(1, 8, 8), alpha=0.0).views(X, torch.arange(20), 1, 0), X[:20])


# --- what each view is -----------------------------------------------------------------------

@given(st.integers(1, 5), st.integers(1, 12), st.integers(1, 12), st.integers(0, 1000))
def test_the_broadcast_affine_grid_equals_torchs(n, height, width, seed):
    thetas = torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 2, 3)), dtype=torch.float32)
    expected = torch.nn.functional.affine_grid(thetas, [n, 1, height, width], align_corners=False)
    torch.testing.assert_close(affine_grid(thetas, height, width), expected, atol=1e-5, rtol=1e-5)


def test_an_affine_shift_moves_the_image_by_whole_pixels():
    image = torch.arange(1.0, 65.0).reshape(1, 1, 8, 8)
    # u = 1 shifts by +translate of the width: 1/8 of 8 pixels is one pixel to the right (and down)
    theta = affine_thetas(torch.tensor([[0.5, 1.0, 1.0, 0.0]]), 0.0, (1 / 8, 2 / 8), (1.0, 1.0), 8, 8)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 8, 8], align_corners=False)
    shifted = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    expected = torch.zeros_like(image)
    expected[..., 2:, 1:] = image[..., :-2, :-1]
    torch.testing.assert_close(shifted, expected, atol=1e-4, rtol=0)


def test_an_affine_quarter_turn_is_rot90():
    image = torch.arange(1.0, 37.0).reshape(1, 1, 6, 6)
    theta = affine_thetas(torch.tensor([[1.0, 0.5, 0.5, 0.0]]), 90.0, (0.0, 0.0), (1.0, 1.0), 6, 6)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 6, 6], align_corners=False)
    turned = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    assert any(torch.allclose(turned, torch.rot90(image, k, dims=(2, 3)), atol=1e-3) for k in (1, -1))


def test_a_non_square_rotation_keeps_lengths_in_pixels():
    # a 30-degree turn of a wide image moves a pixel's centre along a circle (no shear from the aspect)
    theta = affine_thetas(torch.tensor([[1.0, 0.5, 0.5, 0.0]]), 30.0, (0.0, 0.0), (1.0, 1.0), 4, 16)[0]
    half = torch.tensor([16 / 2, 4 / 2])
    point = torch.tensor([0.5, 0.25])  # grid units
    moved = theta[:, :2] @ point
    assert torch.allclose((moved * half).norm(), (point * half).norm(), atol=1e-5)


def test_munge_swaps_to_the_neighbour_with_sd_distance_over_s():
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.normal(size=(30, 4)), dtype=torch.float32)
    exact = Munge(p=1.0, s=float("inf")).fit(X)
    neighbours = X[exact.neighbours_]
    assert torch.equal(exact.views(X, torch.arange(30), 0, 5), neighbours)
    # the nearest other row, in standardized units
    standard = (X / X.std(0, correction=0)).double()
    distances = torch.cdist(standard, standard).fill_diagonal_(float("inf"))
    assert torch.equal(exact.neighbours_, distances.argmin(1))
    views = Munge(p=1.0, s=2.0).fit(X).views(X, torch.tensor([3]), torch.arange(20000), 5).double()
    gap = (X[3] - neighbours[3]).abs().double()
    torch.testing.assert_close(views.mean(0), neighbours[3].double(), atol=0.05 * gap.max().item(), rtol=0)
    torch.testing.assert_close(views.std(0), gap / 2.0, rtol=0.05, atol=1e-6)


def test_munge_swaps_each_attribute_with_probability_p():
    X = torch.as_tensor(np.random.default_rng(1).normal(size=(50, 6)), dtype=torch.float32)
    views = Munge(p=0.3, s=float("inf")).fit(X).views(X, torch.arange(50)[:, None], torch.arange(200), 9)
    swapped = (views != X[:, None, :]).double().mean()
    assert abs(float(swapped) - 0.3) < 0.02


def test_munge_neighbours_exclude_the_row_itself_even_with_duplicates():
    X = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 6.0]])
    neighbours = Munge().fit(X).neighbours_
    assert neighbours.tolist() == [1, 0, 3, 2]


def test_noise_has_scale_standard_deviations_per_feature(X):
    maker = Noise(scale=0.3).fit(X)
    views = maker.views(X, torch.arange(len(X))[:, None], torch.arange(50), 2)
    varying = maker.scale_ > 0
    z = (views - X[:, None, :])[..., varying] / maker.scale_[varying]
    assert abs(float(z.std()) - 0.3) < 0.01 and abs(float(z.mean())) < 0.01


def test_noise_leaves_constant_features_alone(X):
    constant = X[:, 0] == X[0, 0]
    assert bool(constant.all())  # digits' first pixel is 0 everywhere
    assert torch.equal(Noise(scale=0.5).fit(X).views(X, torch.arange(20), 3, 1)[:, 0], X[:20, 0])
    assert torch.equal(Noise(scale=0.5)(X[:20])[:, 0], X[:20, 0])


def test_cutmix_pastes_a_box_of_the_partner_covering_the_smaller_share():
    X = torch.cat([torch.zeros(1, 64), torch.ones(1, 64)])
    views = CutMix(image_shape=(1, 8, 8)).views(X, torch.zeros(400, dtype=torch.long), torch.arange(400), 0)
    pasted = views.reshape(400, 8, 8)
    assert set(views.unique().tolist()) <= {0.0, 1.0}
    assert float(pasted.mean((1, 2)).max()) <= 0.5  # the row keeps the larger share
    for view in pasted:  # a box: the pasted pixels fill the rectangle they span
        ys, xs = torch.nonzero(view, as_tuple=True)
        if len(ys):
            assert len(ys) == (int(ys.max()) - int(ys.min()) + 1) * (int(xs.max()) - int(xs.min()) + 1)
    assert float(pasted.mean()) > 0.05  # partners are drawn from all of X: some views mix row 1 in


def test_mixup_partners_come_from_the_batch_online_and_from_all_rows_when_booked(X):
    batch = X[:1].expand(16, -1)  # a batch of one repeated row: every online partner is that row
    torch.testing.assert_close(MixUp(alpha=1.0)(batch), batch)
    views = MixUp(alpha=1.0).views(X, torch.zeros(64, dtype=torch.long), torch.arange(64), 0)
    assert not torch.allclose(views, X[:1].expand(64, -1))


# --- reproducibility -------------------------------------------------------------------------

def test_views_are_the_same_across_calls_and_positions(X):
    rows = torch.tensor([5, 17, 5, 290])
    view_ids = torch.tensor([0, 3, 1, 2])
    for maker in makers_for(X):
        first = maker.views(X, rows, view_ids, seed=7)
        assert torch.equal(first, maker.views(X, rows, view_ids, seed=7)), maker
        # the same (row, view) anywhere in a larger request gives the same view
        wider = maker.views(X, torch.cat([torch.arange(10), rows]),
                            torch.cat([torch.arange(10) % 4, view_ids]), 7)
        assert torch.equal(wider[10:], first), maker
        assert not torch.equal(maker.views(X, rows, view_ids + 1, seed=7), first), maker
        assert not torch.equal(maker.views(X, rows, view_ids, seed=8), first), maker


def test_the_steps_unchecked_view_batch_gives_the_same_views(X):
    rows, view_ids = torch.tensor([9, 2, 9]), torch.tensor([1, 1, 4])
    for maker in makers_for(X):
        assert torch.equal(maker.view_batch(X, rows, view_ids, 3), maker.views(X, rows, view_ids, 3)), maker


def test_views_keep_the_dtype_of_X(X):
    X64 = X.double()
    for maker in makers_for(X64):
        assert maker.views(X64, torch.arange(4), 0, 1).dtype == torch.float64, maker
        assert maker(X64[:16]).dtype == torch.float64, maker


def test_views_broadcast_rows_against_view_numbers(X):
    views = Affine(image_shape=(1, 8, 8)).views(X, torch.arange(5)[:, None], torch.arange(3)[None, :], 0)
    assert views.shape == (5, 3, 64)
    assert torch.equal(views[2, 1], Affine(image_shape=(1, 8, 8)).views(X, 2, 1, 0))


_CHILD = """
import sys, numpy as np, torch
from sklearn.datasets import load_digits
sys.path.insert(0, {tests!r})
from test_views import makers_for
X = torch.as_tensor((load_digits().data[:300] / 16.0).astype(np.float32))
rows = torch.arange(0, 300, 7)
for maker in makers_for(X):
    sys.stdout.write(maker.views(X, rows, rows % 5, 2024).numpy().tobytes().hex() + "\\n")
"""


def test_views_are_the_same_bytes_in_another_process(X):
    from pathlib import Path

    child = _CHILD.format(tests=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    rows = torch.arange(0, 300, 7)
    here = [maker.views(X, rows, rows % 5, 2024).numpy().tobytes().hex() for maker in makers_for(X)]
    assert out == here


def test_online_views_follow_torchs_generator(X):
    for maker in makers_for(X):
        torch.manual_seed(3)
        first = maker(X[:64], None)
        torch.manual_seed(3)
        assert torch.equal(first, maker(X[:64], None)), maker
        assert first.shape == (64, 64) and first.dtype == X.dtype
        assert not torch.equal(first, X[:64]), maker


# --- settings and errors ---------------------------------------------------------------------

def test_makers_are_scikit_learn_parameter_objects():
    maker = Affine(image_shape=(1, 28, 28), degrees=5.0)
    assert maker.get_params()["degrees"] == 5.0
    assert repr(maker) == "Affine(degrees=5.0, image_shape=(1, 28, 28))"
    assert clone(maker).get_params() == maker.get_params()
    assert maker.set_params(degrees=3.0).degrees == 3.0
    assert sorted(Shift().get_params()) == ["fill", "image_shape", "interpolation", "translate"]
    assert isinstance(Munge(), ViewMaker) and callable(Munge())


@pytest.mark.parametrize("maker, match", [
    (Munge(p=1.5), r"p of Munge must be a number in \[0, 1\]; got 1.5"),
    (Munge(p=-0.1), r"p of Munge must be a number in \[0, 1\]"),
    (Munge(s=0.0), r"s of Munge must be a number > 0"),
    (Noise(scale=-1.0), r"scale of Noise must be a number >= 0; got -1.0"),
    (MixUp(alpha=-0.2), r"alpha of MixUp must be a number >= 0"),
    (CutMix(image_shape=(1, 8, 8), alpha=-1), r"alpha of CutMix must be a number >= 0"),
    (Affine(image_shape=(1, 8, 8), degrees=-5), r"degrees of Affine must be a number >= 0"),
    (Affine(image_shape=(1, 8, 8), translate=(0.1, 2.0)),
     r"translate of Affine must be a number in \[0, 1\]"),
    (Affine(image_shape=(1, 8, 8), scale=(1.2, 0.8)), r"scale of Affine must be \(low, high\)"),
    (Affine(image_shape=(1, 8, 8), interpolation="cubic"), r"interpolation of Affine must be 'bilinear' or"),
    (Affine(image_shape=(1, 28, 28)), r"image_shape=\(1, 28, 28\) of Affine holds 784 values, but X has 64"),
    (Shift(), r"image_shape of Shift must be \(channels, height, width\)"),
    (CutMix(image_shape=(8, 8)), r"image_shape of CutMix must be \(channels, height, width\)"),
])
def test_bad_settings_are_refused_naming_the_parameter(X, maker, match):
    for use in (lambda: maker.fit(X), lambda: maker.views(X, torch.arange(3), 0, 0), lambda: maker(X[:8])):
        with pytest.raises(ValueError, match=match):
            use()


@pytest.mark.parametrize("sparse", [lambda X: scipy.sparse.csr_matrix(X.numpy()), lambda X: X.to_sparse()])
def test_a_view_maker_on_sparse_X_is_refused(X, sparse):
    for maker in (MixUp(), Noise(), Munge(), Affine(image_shape=(1, 8, 8))):
        with pytest.raises(TypeError, match="is sparse; view makers need dense features"):
            maker.views(sparse(X), torch.arange(3), 0, 0)
        with pytest.raises(TypeError, match="is sparse"):
            maker.fit(sparse(X))
    with pytest.raises(TypeError, match="X of MixUp is sparse"):
        MixUp()(X[:8].to_sparse())


def test_booked_view_errors_name_what_to_do(X):
    with pytest.raises(ValueError, match=r"Munge.views needs the training rows' neighbours: call maker.fit"):
        Munge().views(X, torch.arange(3), 0, 0)
    with pytest.raises(ValueError, match="Munge.views has 100 rows, but Munge was fitted on 300"):
        Munge().fit(X).views(X[:100], torch.arange(3), 0, 0)
    with pytest.raises(ValueError, match=r"rows of MixUp.views must be indices into X, in \[0, 300\)"):
        MixUp().views(X, torch.tensor([0, 300]), 0, 0)
    with pytest.raises(ValueError, match="rows of MixUp.views must hold integers"):
        MixUp().views(X, torch.tensor([0.0, 1.0]), 0, 0)
    with pytest.raises(ValueError, match="view_ids of MixUp.views must be >= 0"):
        MixUp().views(X, torch.tensor([0, 1]), -1, 0)
    with pytest.raises(ValueError, match="Noise was fitted on 64 features, but X has 10"):
        Noise().fit(X).views(X[:, :10], torch.arange(3), 0, 0)
    with pytest.raises(ValueError, match="MUNGE needs at least 2"):
        Munge().fit(X[:1])


# --- in a fit --------------------------------------------------------------------------------

@pytest.mark.parametrize("maker", [Affine(image_shape=(1, 8, 8)), MixUp(), Munge(), Noise(0.1)])
def test_a_view_maker_is_an_augment_with_an_online_teacher(digits, make_student, make_teacher, maker):
    X, y = digits
    teacher = make_teacher()
    clf = make_student(teacher=teacher, augment=maker, augment_mode="replace", max_epochs=2).fit(X, y)
    assert teacher.samples == 2 * len(X)  # every training batch's views, labelled online
    assert clf.score(X, y) > 0.5
    assert clone(clf).get_params()["augment"].get_params() == maker.get_params()


def test_augment_params_reach_the_view_maker_and_a_grid_search_over_them_fits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)[:300]
    clf = DistillationClassifier(MLP, loss="ce", augment=Affine(image_shape=(1, 8, 8)),
                                 augment_mode="replace", max_epochs=1, device="cpu", random_state=0)
    assert clf.set_params(augment__degrees=5.0).augment.degrees == 5.0
    assert clf.get_params()["augment__degrees"] == 5.0
    search = GridSearchCV(clf, {"augment__degrees": [0.0, 10.0]}, cv=2, error_score="raise").fit(X, y[:300])
    assert [p["augment__degrees"] for p in search.cv_results_["params"]] == [0.0, 10.0]
    with pytest.raises(ValueError, match="augment__degrees needs augment to be a view maker"):
        DistillationClassifier(MLP, augment=lambda X, y: X).set_params(augment__degrees=5.0)
