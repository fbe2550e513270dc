"""Where each dataset comes from (publisher URLs, recorded SHA-256 digests) and which builder prepares it."""
import functools
import re
from dataclasses import dataclass
from typing import Callable, Optional

from data.builders import build_epilepsy, build_har, build_uwave, copy_uea, UWAVE_AXES
from data.formats import DEFAULT_FOLDERS, UEA_NAMES
from common.errors import TimeMAEError

UCI_URL = "https://archive.ics.uci.edu/static/public"               # UCI Machine Learning Repository
UEA_URL = "https://www.timeseriesclassification.com/aeon-toolkit"   # UEA & UCR Time Series Classification

# SHA-256 of a publisher's file, by file name, where one is known; other files have their digest printed when
# downloaded, to be recorded here. HAR: the UCI archive as published (the same digest is pinned by independent
# public projects); a changed file is refused.
SHA256 = {
    "human+activity+recognition+using+smartphones.zip":
        "c00b803081a5c797cd5e4b83700a9810b38d53d9d84e01917e090e1fdbc81031",
}

ALIASES = {"phonemespectra": "ps", "spokenarabicdigits": "ad"}  # full UEA names of the paper's benchmarks
UEA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class DatasetSource:
    name: str                 # what the user reads in messages
    loader: str               # the --dataset name datautils.load_dataset reads it by
    base_url: str             # the publisher's
    files: tuple              # paths below base_url, one download each
    build: Callable           # build(tree, out_folder)
    ucr_folder: Optional[str] = None  # --UCR_folder for generic UEA/UCR datasets

    def downloads(self, base_url=None):
        """(url, file name) of every file, from `base_url` instead of the publisher's when given (mirrors)."""
        base = (base_url or self.base_url).rstrip("/")
        return [(f"{base}/{path}", path.rsplit("/", 1)[-1]) for path in self.files]


def _uea(name, loader="ucr"):
    return DatasetSource(name=name, loader=loader, base_url=UEA_URL, files=(f"{name}.zip",),
                         build=functools.partial(copy_uea, name=name),
                         ucr_folder=name if loader == "ucr" else None)


def lookup(dataset, archive=False):
    """The source of `dataset`: har, epilepsy, uwave, ps, ad, or any UEA/UCR archive name (e.g. BasicMotions);
    archive=True (main.py's --dataset ucr): the archive's set of that name, even where a benchmark shares it (the
    archive's Epilepsy, 3 channels and 4 classes, is not the paper's UCI Epilepsy)."""
    if archive and UEA_NAME.match(dataset):
        return _uea(dataset)
    key = ALIASES.get(dataset.lower(), dataset.lower())
    if key == "har":
        return DatasetSource("HAR", "har", UCI_URL, ("240/human+activity+recognition+using+smartphones.zip",),
                             build_har)
    if key == "epilepsy":
        return DatasetSource("Epilepsy", "epilepsy", UCI_URL, ("388/epileptic+seizure+recognition.zip",),
                             build_epilepsy)
    if key == "uwave":
        return DatasetSource(DEFAULT_FOLDERS["uwave"], "uwave", UEA_URL, tuple(f"{a}.zip" for a in UWAVE_AXES),
                             build_uwave)
    if key in ("ps", "ad"):
        return _uea(UEA_NAMES[key], loader=key)
    if not UEA_NAME.match(dataset):
        raise TimeMAEError(f"{dataset!r} is not a dataset name: use har, epilepsy, uwave, ps, ad, or a UEA/UCR "
                           "archive name such as BasicMotions")
    return _uea(dataset)
