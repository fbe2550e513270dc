"""benchmarks/throughput.py: one row per device, shape and task, written to the CSV it prints."""
import pandas as pd
import pytest

from benchmarks import throughput


def test_benchmark_writes_a_row_per_shape_and_task(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    throughput.main(["--device", "cpu", "--threads", "1", "--shapes", "epilepsy", "--batch_size", "8",
                     "--eval_series", "16", "--reps", "1", "--steps", "1", "--warmup", "0", "--out", str(out)])
    table = pd.read_csv(out)
    assert list(zip(table["shape"], table["task"])) == [("epilepsy", t) for t in ("pretrain", "finetune", "represent")]
    assert (table["series_per_s"] > 0).all() and (table["ms_per_batch"] > 0).all()
    assert (table["windows"] == 12).all()                          # 178 steps / window 16, rounded up
    pre = table[table["task"] == "pretrain"]
    assert (pre["gflop_per_batch"] > 0).all() and (pre["of_matmul"] > 0).all()
    assert "of_matmul" in capsys.readouterr().out


def test_benchmark_refuses_unknown_shapes():
    with pytest.raises(SystemExit):
        throughput.parse(["--shapes", "har,imagenet"])
