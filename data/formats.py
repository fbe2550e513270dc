"""Text formats of the UEA/UCR archive (`.ts`, `.arff`, the UCR 2018 archive's `.tsv`) read into NaN-padded
arrays (N, T_max, C) with their labels, and the folder and archive names of the paper's benchmarks."""
import difflib
import os

import numpy as np

from common.errors import TimeMAEError

DEFAULT_FOLDERS = {"har": "HAR", "epilepsy": "Epilepsy", "uwave": "UWave", "ps": "PhonemeSpectra",
                   "ad": "SpokenArabicDigits"}
UEA_NAMES = {"uwave": "UWaveGestureLibrary", "ps": "PhonemeSpectra", "ad": "SpokenArabicDigits"}


def stack_ragged(series, path):
    """series: list over samples of lists over channels of 1-D arrays, the channels of a series of one length
    (the readers check it) -> (N, T_max, C), NaN-padded."""
    channels = {len(s) for s in series}
    if len(channels) != 1:
        raise TimeMAEError(f"{path}: series have different channel counts {sorted(channels)}")
    lengths = np.array([len(s[0]) for s in series])                            # (N,) T_i
    x = np.full((len(series), lengths.max(), channels.pop()), np.nan, dtype=np.float32)
    x[np.arange(x.shape[1]) < lengths[:, None]] = np.concatenate([np.stack(s, -1) for s in series])  # (sum T_i, C)
    return x


def float32_values(x, what):
    """x as a float32 array; a value beyond float32's range (|v| > 3.4e38), which the cast would make inf, is
    refused rather than reported later as a non-finite value."""
    with np.errstate(over="ignore"):
        out = np.asarray(x, dtype=np.float32)
    inf = np.isinf(out)
    overflow = int(np.isfinite(np.asarray(x, dtype=np.float64)[inf]).sum()) if inf.any() else 0
    if overflow:
        raise TimeMAEError(f"{what}: {overflow} value(s) beyond float32's range (|v| > 3.4e38), the model's "
                           "precision: rescale the data")
    return out


def _floats(text, path, lineno):
    try:
        values = [float("nan") if v.strip() == "?" else float(v) for v in text.split(",")]
    except ValueError:
        raise TimeMAEError(f"{path}:{lineno}: cannot parse values {text[:60]!r}") from None
    return float32_values(values, f"{path}:{lineno}")


def _content_lines(path, comment, strip=str.strip):
    """(line number, line stripped by `strip`) of every non-empty line that is not a comment (comment None: no
    comments)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:   # -sig: a byte-order mark is no text
            for lineno, line in enumerate(f, 1):
                line = strip(line)
                if line and (comment is None or not line.startswith(comment)):
                    yield lineno, line
    except OSError as e:   # a folder, a link to nothing, no permission, a read error
        raise TimeMAEError(f"cannot read {path}: {e.strerror or e}; expected a text file of series") from None


def _data_lines(path, comment, strip=str.strip):
    """(line number, stripped line) of every data row: after the `@data` header line, or (comment None: a file
    without header or comments) every line."""
    lines = _content_lines(path, comment, strip)
    if comment is not None:
        for _, line in lines:                     # the header, up to and including @data
            if line.lower().startswith("@data"):
                break
    yield from lines


def _header_lines(path, comment):
    """Every non-empty, non-comment line before `@data`, stripped, split into (lower-case keyword, rest)."""
    for _, line in _content_lines(path, comment):
        keyword, *rest = line.split(None, 1)
        if keyword.lower() == "@data":
            return
        yield keyword.lower(), rest[0].strip() if rest else ""


def _header(path, comment):
    """The `@` lines before `@data`, as {lower-case keyword: the rest of the line}."""
    return dict(_header_lines(path, comment))


def _read_rows(path, comment, split_row, strip=str.strip):
    """Parse every data row (lines stripped by `strip`) with split_row(line) -> (channel strings, label or None)
    into (N, T_max, C) and the labels (None for a file without them); a ValueError of split_row is a malformed
    row, and an empty label or '?' a missing one."""
    series, labels = [], []
    for lineno, line in _data_lines(path, comment, strip):
        try:
            dims, label = split_row(line)
        except ValueError as e:
            raise TimeMAEError(f"{path}:{lineno}: {e}") from None
        if not dims:
            raise TimeMAEError(f"{path}:{lineno}: expected values and a label")
        series.append([_floats(d, path, lineno) for d in dims])
        lengths = [len(d) for d in series[-1]]
        if len(set(lengths)) > 1:   # padding one channel would pass its missing tail off as the series' end
            raise TimeMAEError(f"{path}:{lineno}: the series' channels have different lengths {lengths}; every "
                               "channel of a series needs the same length")
        label = label if label is None else label.strip().strip("'\"")
        if label in ("", "?"):   # '?' is how .ts and .arff write a missing value
            raise TimeMAEError(f"{path}:{lineno}: the label is missing ({label or 'empty'}); every series needs a "
                               "label")
        labels.append(label)
    if not series:
        raise TimeMAEError(f"{path}: no series" + (" after an @data line" if comment is not None else ""))
    x = stack_ragged(series, path)
    steps = np.flatnonzero(~np.isnan(x).all(axis=(0, 2)))     # a NaN tail that no series fills is not a step
    return x[:, : steps[-1] + 1 if len(steps) else 0], None if labels[0] is None else np.array(labels)


def read_ts(path):
    """sktime/aeon `.ts` text: `@` header lines, then one series per line, channels split by ':', label last
    (labels None under `@classLabel false`; a label that `@classLabel true ...` does not declare is refused)."""
    header = _header(path, "#")
    if header.get("@timestamps", "false").lower() != "false":
        raise TimeMAEError(f"{path}: timestamped series (@timestamps true) are not supported; write the values "
                           "alone, one series per line")
    if header.get("@targetlabel", "false").lower() != "false":
        raise TimeMAEError(f"{path}: @targetLabel true: its values are regression targets, not the class labels "
                           "this classifier needs")
    declared = [v.strip("'\"") for v in header.get("@classlabel", "").split()] or ["true"]
    labelled = declared[0].lower() != "false"

    def split_row(line):
        if not labelled:
            return line.split(":"), None
        *dims, label = line.split(":")
        if "," in label.strip():   # values where the label should be
            raise ValueError(f"no label after the values, which the header's @classLabel {' '.join(declared)} asks "
                             "for (@classLabel false: series without labels)")
        return dims, label
    x, labels = _read_rows(path, "#", split_row)
    if labelled:
        _check_declared(path, labels, declared[1:], "@classLabel")
    return x, labels


def _check_declared(path, labels, declared, where):
    """Labels outside the header's declared classes (none declared: no check) are a one-line error."""
    unknown = sorted(set(labels.tolist()) - set(declared)) if declared else []
    if unknown:
        raise TimeMAEError(f"{path}: labels {unknown[:5]} are not among those {where} declares ({' '.join(declared)})")


def _arff_classes(path):
    """The values the class attribute (the last top-level `@attribute`, outside any relational block) declares
    as `{a,b,...}`; [] when it declares none (a numeric target, say)."""
    depth, spec = 0, ""
    for keyword, rest in _header_lines(path, "%"):
        if keyword == "@end":
            depth -= 1
        elif keyword == "@attribute":
            kind = (rest.split(None, 1) + [""])[1]   # rest: "<name> <type>"
            spec = kind if depth == 0 else spec
            depth += kind.lower() == "relational"
    if not (spec.startswith("{") and spec.endswith("}")):
        return []
    return [v.strip().strip("'\"") for v in spec[1:-1].split(",")]


def read_arff(path):
    """Weka `.arff` as in the UEA/UCR archive: univariate rows `v1,...,vT,label` or multivariate rows
    `'c1v1,...\\nc2v1,...',label` (a relational attribute whose channels are split by a literal \\n); a label the
    class attribute does not declare is refused."""
    def split_row(line):
        if line[0] in "'\"":
            end = line.find(line[0], 1)   # the field's closing quote, not a quoted label's
            return line[1:end].replace("\\n", "\n").split("\n"), line[end + 1:].lstrip(",")
        body, _, label = line.rpartition(",")
        return [body], label
    x, labels = _read_rows(path, "%", split_row)
    _check_declared(path, labels, _arff_classes(path), "the class attribute")
    return x, labels


def read_ucr_tsv(path):
    """The UCR 2018 archive's `.tsv` (`<Name>_TRAIN.tsv`): no header, one univariate series per line, its label
    first and then its values, tab-separated; the archive ends shorter series in NaN, which is padding here. So
    every row of a file has the first row's number of fields, and a row with another (cut short) is refused."""
    first = None   # the first row's field count

    def split_row(line):
        nonlocal first
        label, _, values = line.partition("\t")
        if not values.strip():
            return [], label
        fields = line.count("\t") + 1
        first = first or fields
        if fields != first:
            raise ValueError(f"{fields} tab-separated fields but the first row has {first}: the archive pads every "
                             "series with NaN to the file's length, so one of the two rows is cut short or damaged")
        return [values.replace("\t", ",")], label
    return _read_rows(path, None, split_row, strip=str.rstrip)   # a leading tab is an empty label, not nothing


# the readers of a UEA/UCR dataset's <Name>_TRAIN<ext> and <Name>_TEST<ext>, in order of preference
UEA_READERS = ((".ts", read_ts), (".arff", read_arff), (".tsv", read_ucr_tsv))


def did_you_mean(path):
    """' (did you mean NAME?)' when the folder beside a missing `path` holds an entry of a close name (a typo in
    --UCR_folder or --data_path), else ''."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(parent)
    except OSError:
        return ""
    close = difflib.get_close_matches(name, entries, n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""
