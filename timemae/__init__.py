"""TimeMAE from Python, in the scikit-learn and aeon conventions (docs/api.md):

    from timemae import TimeMAEEncoder, TimeMAEClassifier, load
    enc = TimeMAEEncoder(num_epoch_pretrain=20).fit(X)          # X: (n_cases, n_channels, n_timepoints)
    Z = enc.transform(X)                                         # (n_cases, 2 d_model): mean and max
    clf = TimeMAEClassifier().fit(X, y); clf.predict(X_new)
    clf.save("clf.pkl"); load("clf.pkl").predict_proba(X_new)

Both estimators train through engine.pipeline.run, main.py's engine, with run.sh's UCR/UEA preset
(preset='ucr'; preset=None: main.py's defaults).
"""
from timemae.estimators import TimeMAEClassifier, TimeMAEEncoder, load

__all__ = ["TimeMAEClassifier", "TimeMAEEncoder", "load"]
