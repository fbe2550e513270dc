"""Prepare a benchmark from its publisher's distribution into the folder the loaders read.

    python -m data.prepare har --download                 # fetch from UCI, write data/HAR/{train,val,test}.pt
    python -m data.prepare epilepsy --source data.zip     # an archive (or folder, or CSV) downloaded by hand
    python -m data.prepare uwave --download               # UCR UWaveGestureLibraryX/Y/Z -> train_new.pt/test_new.pt
    python -m data.prepare BasicMotions --download        # any UEA/UCR dataset: <Name>_TRAIN.ts/_TEST.ts
    python -m data.prepare epilepsy --download --if-missing   # what run.sh does: nothing when the folder is there
    python -m data.prepare ucr --UCR_folder ArrowHead --download --if-missing   # run.sh ucr: the folder main.py reads

Downloads come from the publisher, or from a mirror laid out like it: --base-url, or $TIMEMAE_MIRROR.

The output is built in a hidden sibling folder, loaded back with datautils.load_dataset as a check, and only
then renamed to its final name: an interrupted or failed run never leaves a half-written dataset folder.
"""
import os
import shutil
import sys
import tempfile
import urllib.parse

from data.catalog import SHA256, lookup
from data.download import Unreachable, fetch
from data.formats import did_you_mean
from data.sources import SourceTree, UnreadableArchive
from datautils import load_dataset, resolve_folder
from common.cli import ArgumentParser
from common.errors import TimeMAEError, WriteError
from common.modes import umask


URL_SCHEMES = ("https", "http", "ftp", "file")   # what urllib fetches
MIRROR_ENV = "TIMEMAE_MIRROR"  # base URL of a mirror of the publishers' files (default of --base-url)


def default_out(source):
    """$TIMEMAE_DATA/<Folder> when set, else data/<Folder>: where `main.py --dataset ...` looks by default."""
    return resolve_folder(source.loader, None, source.ucr_folder)


def prepare(dataset, out=None, download=False, sources=(), cache=None, base_url=None, overwrite=False, log=print,
            archive=False):
    """Build `dataset` into `out` from the publisher's files (download=True) or local `sources`; returns the
    DatasetSplits that datautils reads from the result. archive: `dataset` names a UEA/UCR archive set (lookup)."""
    source = lookup(dataset, archive)
    out = os.path.abspath(out or default_out(source))
    if download == bool(sources):
        raise TimeMAEError("pass either --download (fetch from the publisher) or --source PATH (an archive or "
                           "folder already downloaded)")
    base_url = base_url or None   # an empty --base-url or $TIMEMAE_MIRROR: the publisher
    if download and base_url is not None and urllib.parse.urlsplit(base_url).scheme not in URL_SCHEMES:
        raise TimeMAEError(f"--base-url (or ${MIRROR_ENV}) {base_url!r} is not a URL: expected the address of a "
                           f"mirror laid out like the publisher's ({', '.join(s + '://...' for s in URL_SCHEMES)})")
    _check_target(out, overwrite)
    parent = os.path.dirname(out)
    try:   # the first write: an --out that cannot be written is refused before anything is downloaded
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    except OSError as e:
        reason = "a part of that path is a file" if isinstance(e, (FileExistsError, NotADirectoryError)) \
            else e.strerror
        raise WriteError(f"--out {out}: cannot write in {parent} ({reason}); expected a folder this user can "
                         "create and write in") from None
    try:
        os.chmod(staging, 0o777 & ~umask())   # mkdtemp makes 0700 folders: the dataset gets os.makedirs' mode
        if download:
            sources = _fetch_all(source, dataset, out, cache or os.path.join(parent, "downloads"), base_url, log)
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=parent) as work:
            tree = SourceTree(sources, work)
            try:
                source.build(tree, staging)
                # what the loaders will see; a set with gaps is read as --gaps interpolate reads it (a run refuses
                # it without that flag, and says so)
                splits = load_dataset(source.loader, staging, source.ucr_folder, gaps="interpolate")
            except UnreadableArchive as e:
                if not (download and e.path in sources):
                    raise
                os.remove(e.path)   # kept, it would fail every run again
                raise TimeMAEError(f"{e}: the downloaded copy was deleted; run the same command again to download "
                                   "it anew") from None
            except TimeMAEError as e:
                raise TimeMAEError(_source_names(str(e), tree, staging)) from None
            except OSError as e:   # a source file that cannot be read (a link to nothing, say), or a full disk
                raise TimeMAEError(_source_names(f"cannot prepare {source.name}: {e.filename}: {e.strerror}", tree,
                                                 staging)) from None
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    n_val = 0 if splits.val_x is None else len(splits.val_x)
    log(f"{source.name}: wrote {out}: train {len(splits.train_x)}, val {n_val}, test {len(splits.test_x)}; "
        f"{splits.channels} channels x {splits.seq_len} steps; {splits.num_classes} classes")
    return splits


def _source_names(message, tree, staging):
    """`message` naming the user's files rather than their hidden copies: a file copied into `staging` as the
    source file it copies, and a file extracted from a zip as <archive>/<member>. Only the files found so far are
    looked at (a copied file was found to be copied): wording an error extracts nothing."""
    for name in os.listdir(staging):
        found = tree.seen(name)
        if found:
            message = message.replace(os.path.join(staging, name), found[0])
    return tree.origins(message)


def _fetch_all(source, dataset, out, cache, base_url, log):
    """The paths of the source's downloads in `cache` (fetched unless a verified copy is there)."""
    try:
        return [fetch(url, os.path.join(cache, name), SHA256.get(name), log=log)
                for url, name in source.downloads(base_url)]
    except Unreachable as e:
        files = " ".join(f"--source {name}" for _, name in source.downloads(base_url))
        raise TimeMAEError(f"{e.reason}; this machine looks offline: download "
                           f"{' '.join(url for url, _ in source.downloads(base_url))} on a machine with network, "
                           f"copy it here and run: python -m data.prepare {dataset} {files} --out {out}") from None
    except OSError as e:
        raise WriteError(f"--cache {cache}: cannot keep the download there ({e.strerror}); expected a folder this "
                         "user can create and write in") from None


def run_target(dataset, data_path=None, ucr_folder=None):
    """(name to prepare, its folder) for the run `main.py --dataset DATASET [--data_path P] [--UCR_folder N]`:
    for a named benchmark the dataset and P; for ucr the archive name N and the folder main.py reads N from
    (datautils.resolve_folder)."""
    if dataset != "ucr":
        return dataset, data_path
    if not ucr_folder:
        raise TimeMAEError("ucr needs --UCR_folder <Name>, a UEA/UCR archive name such as ArrowHead")
    return ucr_folder, resolve_folder(dataset, data_path, ucr_folder)


def is_prepared(dataset, out=None):
    """Whether the output folder of `dataset` (`out`, or the default one) exists and holds files."""
    out = out or default_out(lookup(dataset))
    return os.path.isdir(out) and bool(os.listdir(out))


def _check_target(out, overwrite):
    if os.path.isfile(out):
        raise TimeMAEError(f"--out {out} is a file, not a folder")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise TimeMAEError(f"{out} already holds files; pass --overwrite to replace it (the old folder is kept "
                           "until the new one is complete)")


def _publish(staging, out):
    """Rename the finished folder into place; an existing one is moved aside first and removed last."""
    old = None
    if os.path.isdir(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, "previous"))
    os.rename(staging, out)
    if old:
        shutil.rmtree(old)


def build_parser():
    p = ArgumentParser(
        prog="python -m data.prepare",
        description="Prepare a benchmark (har, epilepsy, uwave, ps, ad, or any UEA/UCR dataset by name) from its "
                    "publisher's distribution into the files the TimeMAE loaders read.")
    p.add_argument("dataset", help="har, epilepsy, uwave (paper's 896/3582 split), ps (PhonemeSpectra), "
                                   "ad (SpokenArabicDigits), or a UEA/UCR archive name such as BasicMotions")
    p.add_argument("--download", action="store_true", help="fetch the publisher's files (kept in --cache)")
    p.add_argument("--source", action="append", default=[], metavar="PATH",
                   help="an already downloaded zip, extracted folder or file (repeat for several, e.g. the "
                        "three UWaveGestureLibraryX/Y/Z zips)")
    p.add_argument("--out", default=None, help="output folder; default $TIMEMAE_DATA/<Name> if set, else "
                                               "data/<Name>")
    p.add_argument("--cache", default=None, help="where downloads are kept; default <out's parent>/downloads")
    p.add_argument("--base-url", default=os.environ.get(MIRROR_ENV),
                   help=f"fetch from this base URL (a mirror laid out like the publisher's) instead; default "
                        f"${MIRROR_ENV} when set")
    p.add_argument("--if-missing", action="store_true",
                   help="do nothing when the output folder already holds files (run.sh prepares a dataset this way "
                        "before its first run)")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that already holds files")
    p.add_argument("--data_path", default=None, help="main.py's --data_path, as run.sh passes it: the output "
                                                      "folder, or for ucr the folder or its parent")
    p.add_argument("--UCR_folder", default=None, help="main.py's --UCR_folder: with dataset ucr, the UEA/UCR "
                                                       "archive name to prepare")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = None
    try:
        dataset, folder = run_target(args.dataset, args.data_path, args.UCR_folder)
        out = args.out or folder
        if args.if_missing and is_prepared(dataset, out):
            return 0
        prepare(dataset, out=out, download=args.download, sources=args.source, cache=args.cache,
                base_url=args.base_url, overwrite=args.overwrite, archive=args.dataset == "ucr")
    except TimeMAEError as e:
        # a name one typo off a set beside it gets a hint, only when it fails (FordA beside FordB is a real set)
        hint = did_you_mean(out) if args.if_missing and out else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
