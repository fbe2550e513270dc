"""Checkpoint selection (engine/record.py, RunRecord.offer): the most accurate on the selection split, and of
equally accurate ones the one whose probe has the lowest log-loss there; without a log-loss (fine-tuning steps)
the earlier of equals stays."""
import math

import torch

from engine.distributed import Dist
from engine.record import RunRecord


def _record(tmp_path):
    return RunRecord(str(tmp_path), Dist(torch.device("cpu")), log=lambda *_: None)


def _model():
    model = torch.nn.Linear(2, 2)
    model.config = {}                                       # what a checkpoint stores beside the weights
    return model


def test_equal_accuracy_goes_to_the_lower_log_loss(tmp_path):
    record, model = _record(tmp_path), _model()
    assert record.offer(model, 0.75, 5, nll=0.60)
    assert not record.offer(model, 0.75, 10, nll=0.70)      # as accurate, less likely: kept out
    assert record.offer(model, 0.75, 15, nll=0.40)          # as accurate, more likely: taken
    assert not record.offer(model, 0.50, 20, nll=0.01)      # less accurate, whatever its log-loss
    assert record.offer(model, 0.875, 25, nll=0.90)         # more accurate, whatever its log-loss
    assert record.best == (0.875, 25, 0.90)


def test_without_a_log_loss_the_earlier_of_equals_stays(tmp_path):
    record, model = _record(tmp_path), _model()
    assert record.offer(model, 0.8, 0) and not record.offer(model, 0.8, 4) and record.offer(model, 0.9, 8)
    assert record.best == (0.9, 8, math.inf)
