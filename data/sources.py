"""Finding a distribution's files by name, wherever they sit: in a folder, in a zip, or in a zip inside a zip
(UCI ships HAR as a zip that holds `UCI HAR Dataset.zip`)."""
import fnmatch
import os
import zipfile

from common.errors import TimeMAEError

SKIP_DIRS = {"__MACOSX"}  # resource forks that macOS archivers add; never data


class UnreadableArchive(TimeMAEError):
    """A zip archive that cannot be read; `path`: the archive."""

    def __init__(self, message, path):
        super().__init__(message)
        self.path = path


class SourceTree:
    """The files of one or more sources (zip archives, folders, single files), looked up by base name.

    Zip archives are extracted into `workdir` only when a name is not found among the files already seen."""

    def __init__(self, paths, workdir):
        self.workdir = workdir
        self.files = {}   # base name -> paths, in the order found
        self.zips = []    # archives not extracted yet
        self.extracted = []   # (folder, archive) of every archive extracted, in order
        for path in paths:
            if not os.path.exists(path):
                raise TimeMAEError(f"source {path!r} does not exist")
            if os.path.isdir(path):
                self._walk(path)
            else:
                self._add(path)

    def find_all(self, pattern):
        """Paths whose base name matches the shell pattern, extracting archives until one matches."""
        while True:
            hits = self.seen(pattern)
            if hits or not self.zips:
                return hits
            self._extract(self.zips.pop(0))

    def seen(self, pattern):
        """Paths whose base name matches the shell pattern among the files found so far, shallowest first; no
        archive is extracted."""
        hits = [p for name, paths in self.files.items() if fnmatch.fnmatchcase(name, pattern) for p in paths]
        return sorted(hits, key=lambda p: (p.count(os.sep), p))

    def find(self, *names):
        """The first file called one of `names` (in that order of preference), or None."""
        for name in names:
            hits = self.find_all(name)
            if hits:
                return hits[0]
        return None

    def require(self, *names):
        path = self.find(*names)
        if path is None:
            raise TimeMAEError(f"the source holds no file named {' or '.join(repr(n) for n in names)}; pass the "
                               "archive as the publisher distributes it (or the folder it extracts to)")
        return path

    def origins(self, text):
        """`text` with the paths of extracted files written <archive>/<member>: the folder they were extracted to
        is temporary, and hidden."""
        for target, archive in reversed(self.extracted):   # an inner archive's path holds the outer's folder
            text = text.replace(target + os.sep, archive + "/")
        return text

    def _add(self, path):
        self.files.setdefault(os.path.basename(path), []).append(path)
        if path.lower().endswith(".zip"):
            self.zips.append(path)

    def _walk(self, folder):
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for f in sorted(files):
                if not f.startswith("._"):
                    self._add(os.path.join(root, f))

    def _extract(self, archive):
        target = os.path.join(self.workdir, f"{len(os.listdir(self.workdir))}-"
                                            f"{os.path.splitext(os.path.basename(archive))[0]}")
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(target)  # extractall drops absolute paths and '..' from member names
        except RuntimeError:   # zipfile's error for an encrypted member (the UCR 2018 archive is encrypted)
            raise TimeMAEError(f"{self.origins(archive)} is encrypted: extract it with its password (the UCR "
                               "archive's briefing document gives it) and pass the folder it extracts to") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise UnreadableArchive(f"{self.origins(archive)} is not a readable zip archive ({e})", archive) \
                from None
        self.extracted.append((target, archive))
        self._walk(target)
