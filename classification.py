"""Evaluation protocols as pure functions: representation extraction, the FineLast linear probe, scores."""
import math

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from common.errors import TimeMAEError


def scores(y_true, y_pred):
    """Accuracy and macro-F1 (both in [0, 1])."""
    return {"acc": float(accuracy_score(y_true, y_pred)),
            "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "classes_predicted": int(len(np.unique(y_pred)))}


@torch.inference_mode()
def extract_representations(model, x, batch_size, padded=None, each_phase=False):
    """Series representations (N, representation_size) of x (N, T, C), a tensor on the model's device, pooled
    as the model's config says (TimeMAE.represent), in eval mode; each_phase: (K, N, representation_size), the
    representation at each phase of the window grid (TimeMAE.phase_representations) instead of their mean.
    padded: whether x may hold padding (None: check each batch; TimeMAE.window_padding)."""
    was_training = model.training
    model.eval()
    encode = model.phase_representations if each_phase else model.represent
    reps = torch.cat([encode(xb, padded) for xb in x.split(batch_size)], dim=int(each_phase))
    model.train(was_training)
    return reps.float().cpu().numpy()


@torch.inference_mode()
def predict(model, x, batch_size, padded=None):
    """Class predictions (N,) of the fine-tuned model; padded: see extract_representations."""
    was_training = model.training
    model.eval()
    pred = torch.cat([model(xb, padded).argmax(-1) for xb in x.split(batch_size)])
    model.train(was_training)
    return pred.cpu().numpy()


@torch.inference_mode()
def predict_proba(model, x, batch_size):
    """Class probabilities (N, num_classes) of a model with a trained head: softmax of its logits."""
    was_training = model.training
    model.eval()
    proba = torch.cat([model(xb).float().softmax(-1) for xb in x.split(batch_size)])
    model.train(was_training)
    return proba.cpu().numpy()


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread. The probes' LogisticRegression (lbfgs) spends its time in
    matrix-vector products of a few thousand rows, which OpenBLAS runs an order of magnitude slower on two threads
    than on one (the raw-series C grid on Epilepsy: 7.6 s against 0.6 s on 2 cores). The probe is the same up to
    the solver's tolerance (a thread count changes the order of its sums, not the optimum it converges to)."""
    return threadpool_limits(1, user_api="blas")


def logistic_regression(C=1.0, seed=0):
    """The FineLast probe's classifier, unfitted, for standardised features."""
    return LogisticRegression(C=C, max_iter=1000, random_state=seed)


def logistic_probe(C=1.0, seed=0):
    """The FineLast probe, unfitted: StandardScaler + LogisticRegression."""
    return make_pipeline(StandardScaler(), logistic_regression(C, seed))


def standardised_one_nn():
    """1-NN (Euclidean) on standardised features, unfitted."""
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=1))


RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def standardised_ridge():
    """Ridge classification on standardised features, its alpha of RIDGE_ALPHAS chosen by leave-one-out over the
    series it is fitted on (closed form: no selection split needed), unfitted."""
    return make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=RIDGE_ALPHAS))


def fit_probe(train_repr, train_y, seed=0, C=1.0):
    """The FineLast probe: StandardScaler + LogisticRegression fitted on frozen training representations."""
    with one_blas_thread():
        return logistic_probe(C, seed).fit(train_repr, train_y)


def linear_probe(train_repr, train_y, test_repr, test_y, seed=0, C=1.0):
    """FineLast: the probe fitted on training representations; returns test accuracy and macro-F1."""
    return scores(test_y, fit_probe(train_repr, train_y, seed, C).predict(test_repr))


# the probes with no C to choose (tools.pooling --probes): 1-NN (Euclidean) on standardised representations, the
# raw series' classic baseline put on the representation; a ridge classifier, its alpha by leave-one-out
UNTUNED_PROBES = {"nn1": standardised_one_nn, "ridge": standardised_ridge}


def untuned_probe(kind, train_repr, train_y):
    """The probe `kind` of UNTUNED_PROBES fitted on standardised frozen representations."""
    with one_blas_thread():
        return UNTUNED_PROBES[kind]().fit(train_repr, train_y)


def fold_count(y, folds):
    """K of a stratified K-fold over labels y: `folds`, capped by the smallest class's count (every fold then holds
    each class). Refused (TimeMAEError) for `folds` < 2 or a class of one series, which leaves no K >= 2."""
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if folds < 2 or smallest < 2:
        raise TimeMAEError(f"K-fold accuracy needs K >= 2 (got {folds}) and at least 2 labelled series of every "
                           f"class (the smallest has {smallest})")
    return min(folds, smallest)


def cross_validated_accuracy(reps, y, grid, folds, seed=0, probe="logistic"):
    """K-fold accuracy (stratified, shuffled by `seed`; K at most the smallest class's count) of a probe on
    labelled representations: for the logistic probe the best C of `grid` and its accuracy, for nn1 and ridge
    (None, its accuracy). Every series is scored once, by a probe that did not see it: a selection figure for
    small sets, steadier than a split of a few dozen series, and with less of the edge a run's own settings have
    on the split that chose its checkpoint (a fifth of the series). Pass labelled training series only, never
    test."""
    splitter = StratifiedKFold(fold_count(y, folds), shuffle=True, random_state=seed)

    def accuracy(model):
        with one_blas_thread():
            return float(np.mean(cross_val_predict(model, reps, y, cv=splitter) == y))
    if probe in UNTUNED_PROBES:   # nothing to choose from the grid (ridge picks its alpha inside each fold)
        return None, accuracy(UNTUNED_PROBES[probe]())
    if probe != "logistic":
        raise TimeMAEError(f"no K-fold accuracy for the probe {probe!r}: logistic, {', '.join(UNTUNED_PROBES)}")
    return max(((C, accuracy(logistic_probe(C, seed))) for C in sorted(grid)),
               key=lambda c_acc: c_acc[1])   # max keeps the first, the smaller C, on ties (as select_probe)


def accuracy_standard_error(acc, n):
    """The binomial standard error sqrt(p(1-p)/n) of an accuracy p measured on n series: the margin of the
    one-standard-error rule (--fineall_margin 1se)."""
    return math.sqrt(max(acc * (1.0 - acc), 0.0) / n)


def probe_as_head(probe, num_classes):
    """The fitted probe as the weight (K, d) and bias (K,) of a linear head over raw representations: the
    scaler folded in, w' = w / s, b' = b - w' . m; a binary probe's one logit z becomes the logits (0, z),
    whose softmax is LogisticRegression's sigmoid."""
    scaler, lr = probe[0], probe[-1]
    weight = lr.coef_ / scaler.scale_                                         # (K or 1, d)
    bias = lr.intercept_ - weight @ scaler.mean_                              # (K or 1,)
    if num_classes == 2 and weight.shape[0] == 1:
        weight, bias = np.concatenate([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    return torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32)


def select_probe(fit_repr, fit_y, sel_repr, sel_y, grid, seed=0):
    """The probe of `grid` (StandardScaler + LogisticRegression fitted on the fit split) that is most accurate
    on the selection split (the smaller C on ties, i.e. the stronger regularisation): (C, the fitted probe, its
    selection scores). The representations are standardised once for the whole grid, and the chosen probe is
    returned fitted, so scoring it on test fits nothing again: each probe is the one `fit_probe` would fit."""
    scaler = StandardScaler().fit(fit_repr)
    fit_z, sel_z = scaler.transform(fit_repr), scaler.transform(sel_repr)

    def fitted(C):
        with one_blas_thread():
            return logistic_regression(C, seed).fit(fit_z, fit_y)
    C, lr, sel = most_accurate(grid, fitted, sel_z, sel_y)
    return C, Pipeline([("standardscaler", scaler), ("logisticregression", lr)]), sel


def most_accurate(grid, fitted, sel_x, sel_y):
    """(C, fitted(C), its selection scores) for the C of `grid` whose probe is most accurate on (sel_x, sel_y),
    the smaller C on ties (the stronger regularisation)."""
    best = None
    for C in sorted(grid):
        probe = fitted(C)
        sel = scores(sel_y, probe.predict(sel_x))
        if best is None or sel["acc"] > best[2]["acc"]:
            best = (C, probe, sel)
    return best


def flat_series(x):
    """(N, T, C) normalised series, NaN padding as 0 (the mean) -> (N, T*C) feature vectors."""
    return np.nan_to_num(np.asarray(x, dtype=np.float64).reshape(len(x), -1), nan=0.0)


def nearest_neighbour(train_x, train_y, test_x, test_y):
    """1-NN with Euclidean distance on the raw normalised series: the classic time-series baseline."""
    clf = KNeighborsClassifier(n_neighbors=1).fit(flat_series(train_x), train_y)
    return scores(test_y, clf.predict(flat_series(test_x)))


class PhaseSampleProbe:
    """The FineLast probe fitted on each grid phase's representation as a sample of its own (K x n rows, the labels
    repeated); a series gets the class of the mean of its K phases' probabilities. Representations (K, n, D)."""

    def __init__(self, C=1.0, seed=0):
        self.C, self.seed = C, seed

    def fit(self, reps, y):
        self.probe_ = fit_probe(reps.reshape(-1, reps.shape[-1]), np.tile(y, len(reps)), self.seed, self.C)
        return self

    def predict(self, reps):
        p = self.probe_.predict_proba(reps.reshape(-1, reps.shape[-1])).reshape(*reps.shape[:2], -1)  # (K, m, classes)
        return self.probe_.classes_[p.mean(0).argmax(1)]


def select_phase_sample_probe(fit_reps, fit_y, sel_reps, sel_y, grid, seed=0):
    """select_probe for PhaseSampleProbe: (C, the fitted probe, its selection scores), the most accurate C of
    `grid` on the selection split, the smaller on ties."""
    return most_accurate(grid, lambda C: PhaseSampleProbe(C, seed).fit(fit_reps, fit_y), sel_reps, sel_y)


def refit_probe(probe, x, y, seed=0):
    """The probe `select_probe` chose, fitted again with its C on (x, y): typically fit and selection series
    together, once the selection split has done its job."""
    return fit_probe(x, y, seed, probe[-1].C)


def raw_baselines(fit_x, fit_y, sel_x, sel_y, test_x, test_y, grid, seed=0, refit=False):
    """Baselines on the raw normalised series, scored on test: 1-NN (Euclidean) and a linear probe
    (StandardScaler + LogisticRegression) whose C is chosen on the selection split. They fit on (fit_x, fit_y),
    or with `refit` (the selection split is then labelled training data, not test) on fit and selection series
    together, like FineLast's probe."""
    fit, sel, test = flat_series(fit_x), flat_series(sel_x), flat_series(test_x)
    C, probe, _ = select_probe(fit, fit_y, sel, sel_y, grid, seed=seed)
    if refit:
        fit_x, fit_y = np.concatenate([fit_x, sel_x]), np.concatenate([fit_y, sel_y])
        probe = refit_probe(probe, np.concatenate([fit, sel]), fit_y, seed)
    return {"nn1": nearest_neighbour(fit_x, fit_y, test_x, test_y),
            "logistic": {**scores(test_y, probe.predict(test)), "C": C}}
