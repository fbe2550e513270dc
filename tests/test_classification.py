"""The FineLast probe's pure functions: the probe itself, its C chosen on the selection split, the floor."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import classification
from classification import cross_validated_accuracy, fit_probe, linear_probe, select_probe, untuned_probe
from common.errors import TimeMAEError
from scale_helpers import majority_accuracy


def _blobs(n, seed, minority=0.2):
    """Two Gaussian classes 3 std apart in 4 dimensions, the first (label 0) a `minority` share."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) > minority).astype(np.int64)
    x = rng.standard_normal((n, 4)) + 3.0 * y[:, None]
    return x, y


def test_probe_separates_blobs_and_beats_the_majority_floor():
    (x, y), (xt, yt) = _blobs(200, 0), _blobs(100, 1)
    res = linear_probe(x, y, xt, yt)
    assert res["acc"] > 0.95 and res["f1"] > 0.9 and res["acc"] > majority_accuracy(y, yt)


def test_nearest_neighbour_probe_takes_the_label_of_the_closest_series_after_standardising():
    """Standardised by the training series' mean and std, then the label of the nearest training series: a
    feature on a thousand times the scale of another no longer decides alone (it would without the scaling)."""
    (x, y), (xt, _) = _blobs(60, 0), _blobs(40, 1)
    x, xt = x * [1000.0, 1, 1, 1], xt * [1000.0, 1, 1, 1]
    mean, std = x.mean(0), x.std(0)
    dist = (((xt - mean) / std)[:, None] - ((x - mean) / std)[None]) ** 2          # (40, 60, 4)
    expected = y[dist.sum(-1).argmin(1)]
    assert np.array_equal(untuned_probe("nn1", x, y).predict(xt), expected)
    assert not np.array_equal(expected, y[((xt[:, None] - x[None]) ** 2).sum(-1).argmin(1)])


def test_ridge_probe_standardises_and_takes_the_alpha_leave_one_out_prefers():
    """Written out: standardise by the training series, score each alpha of RIDGE_ALPHAS by the squared error of
    ridge fits that leave one series out (targets +-1 per class), refit with the best and predict the highest
    score. A feature on a thousand times the scale of another is standardised first."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler
    (x, y), (xt, _) = _blobs(40, 0), _blobs(40, 10)
    x, xt = x * [1000.0, 1, 1, 1], xt * [1000.0, 1, 1, 1]
    scaler = StandardScaler().fit(x)
    zx, zt = scaler.transform(x), scaler.transform(xt)
    codes = np.where(np.arange(y.max() + 1) == y[:, None], 1.0, -1.0)             # (n, K)
    every = np.arange(len(y))

    def left_out_error(alpha):
        return sum(((Ridge(alpha=alpha).fit(zx[every != i], codes[every != i]).predict(zx[i:i + 1]) - codes[i])
                    ** 2).sum() for i in every)
    errors = [left_out_error(a) for a in classification.RIDGE_ALPHAS]
    best = classification.RIDGE_ALPHAS[int(np.argmin(errors))]
    probe = untuned_probe("ridge", x, y)
    assert probe[-1].alpha_ == best and sorted(errors)[0] < sorted(errors)[1]      # one best alpha
    assert np.array_equal(probe.predict(xt), Ridge(alpha=best).fit(zx, codes).predict(zt).argmax(1))


def test_phase_sample_probe_fits_every_phase_as_a_series_and_averages_the_phases_probabilities():
    """(K, n, D) representations: one probe on the K*n rows (labels repeated); a series' class is the argmax of
    the mean of its K probability vectors, which here differs from phase 0's own class and from a majority vote."""
    rng = np.random.default_rng(0)
    y, y_new = np.repeat([0, 1, 2], 10), np.repeat([0, 1, 2, 0], 10)
    reps = rng.normal(size=(3, 30, 4)) + 0.5 * y[None, :, None]                 # (K, n, D)
    new = rng.normal(size=(3, 40, 4)) + 0.5 * y_new[None, :, None]
    probe = classification.PhaseSampleProbe(C=1.0, seed=0).fit(reps, y)
    stacked = fit_probe(reps.reshape(90, 4), np.tile(y, 3), seed=0, C=1.0)
    assert np.array_equal(probe.probe_[-1].coef_, stacked[-1].coef_)
    mean = np.mean([stacked.predict_proba(new[k]) for k in range(3)], axis=0).argmax(1)
    assert np.array_equal(probe.predict(new), mean)
    votes = np.stack([stacked.predict(new[k]) for k in range(3)])               # (K, m)
    majority = np.array([np.bincount(v, minlength=3).argmax() for v in votes.T])
    assert (mean != votes[0]).any() and (mean != majority).any()


def test_cross_validated_accuracy_scores_every_series_once_by_a_probe_that_did_not_see_it():
    """The K-fold figure, written out: K probes, each fitted without one stratified fold and scoring it; for the
    logistic probe the best C of the grid; K capped by the smallest class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x, y = _blobs(60, 0, minority=0.4)
    x[:, 0] += np.random.default_rng(1).standard_normal(60) * 4    # overlap, so the folds' probes make errors

    def by_hand(x, y, last, k=5):
        hits = 0
        for fit, out in StratifiedKFold(k, shuffle=True, random_state=3).split(x, y):
            model = make_pipeline(StandardScaler(), last).fit(x[fit], y[fit])
            hits += int((model.predict(x[out]) == y[out]).sum())
        return hits / len(y)
    logistic = {C: by_hand(x, y, LogisticRegression(C=C, max_iter=1000, random_state=3)) for C in (1e-3, 1.0)}
    assert logistic[1e-3] != logistic[1.0]
    for C in (1e-3, 1.0):
        assert cross_validated_accuracy(x, y, [C], 5, seed=3) == (C, logistic[C])
    best = max(logistic, key=lambda C: (logistic[C], -C))
    assert cross_validated_accuracy(x, y, [1.0, 1e-3], 5, seed=3) == (best, logistic[best])
    assert cross_validated_accuracy(x, y, [], 5, seed=3, probe="nn1") == (None, by_hand(x, y, KNeighborsClassifier(1)))
    few = np.r_[np.zeros(10, np.int64), np.ones(2, np.int64)]      # 2 series of class 1: 2 folds, not 5
    xf = _blobs(12, 2)[0]
    capped = cross_validated_accuracy(xf, few, [], 5, seed=3, probe="nn1")[1]
    assert capped == by_hand(xf, few, KNeighborsClassifier(1), k=2)
    with pytest.raises(TimeMAEError, match=r"every class \(the smallest has 1\)"):
        cross_validated_accuracy(xf[:11], few[:11], [], 5, probe="nn1")     # one series of class 1: no 2 folds
    with pytest.raises(TimeMAEError, match=r"K >= 2 \(got 1\)"):
        cross_validated_accuracy(xf, few, [], 1, probe="nn1")


def test_C_is_chosen_by_selection_accuracy():
    (x, y), (xs, ys) = _blobs(200, 0), _blobs(100, 1)
    # C = 1e-6 shrinks every weight to ~0, so the probe predicts the majority class: worse on the selection split
    tiny = linear_probe(x, y, xs, ys, C=1e-6)["acc"]
    assert tiny == majority_accuracy(y, ys) < linear_probe(x, y, xs, ys, C=1.0)["acc"]
    assert select_probe(x, y, xs, ys, [1.0, 1e-6])[0] == 1.0


def test_C_ties_go_to_the_stronger_regularisation():
    (x, y), (xs, ys) = _blobs(200, 0), _blobs(100, 1)
    assert linear_probe(x, y, xs, ys, C=1.0)["acc"] == linear_probe(x, y, xs, ys, C=10.0)["acc"]
    assert select_probe(x, y, xs, ys, [10.0, 1.0])[0] == 1.0


def test_selected_probe_is_the_one_fit_probe_fits_and_comes_with_its_selection_scores():
    """Scoring the chosen probe on test fits nothing again, and gives what a fresh fit at that C gives."""
    (x, y), (xs, ys), (xt, _) = _blobs(200, 0), _blobs(100, 1), _blobs(100, 2)
    C, probe, sel = select_probe(x, y, xs, ys, [1e-6, 1.0])
    fresh = fit_probe(x, y, C=C)
    assert C == 1.0 and sel == linear_probe(x, y, xs, ys, C=C)
    np.testing.assert_array_equal(probe.predict(xt), fresh.predict(xt))
    np.testing.assert_array_equal(probe.predict_proba(xt), fresh.predict_proba(xt))


def _blas_threads():
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_probes_fit_with_one_blas_thread_and_restore_the_count(monkeypatch):
    """OpenBLAS's threaded matrix-vector products made the probes' lbfgs fits an order of magnitude slower on
    2 cores: every LogisticRegression fit of the probes runs with one BLAS thread, and the count comes back."""
    seen = []

    class Recording(classification.LogisticRegression):
        def fit(self, *a, **k):
            seen.append(set(_blas_threads().values()))
            return super().fit(*a, **k)

    monkeypatch.setattr(classification, "LogisticRegression", Recording)
    (x, y), (xs, ys) = _blobs(200, 0), _blobs(100, 1)
    with threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        if not before:
            pytest.skip("numpy has no BLAS that threadpoolctl can see")
        select_probe(x, y, xs, ys, [0.1, 1.0])
        fit_probe(x, y)
        classification.raw_baselines(x[:, :, None], y, xs[:, :, None], ys, xs[:, :, None], ys, [1.0])
        assert _blas_threads() == before
    assert len(seen) == 4 and all(threads == {1} for threads in seen)
