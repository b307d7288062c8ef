"""Real English text that ships with Python: sentences from standard-library docstrings.

Nothing is downloaded and no text is stored in the repository.  The
sentences are collected from a fixed list of modules, cleaned, deduplicated
and sorted, then split into calibration and evaluation sets by a hash of the
sentence, so the two sets are disjoint and the same on every machine with
the same Python.
"""

import hashlib
import importlib
import inspect
import re
from functools import lru_cache

__all__ = ["sentences", "calibration_sentences", "evaluation_sentences", "MODULES"]

MODULES = (
    "abc argparse ast asyncio base64 bisect calendar cmd codecs collections configparser "
    "contextlib copy csv dataclasses datetime decimal difflib dis email enum fileinput "
    "fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html "
    "http.client http.server imaplib inspect io ipaddress itertools json locale logging "
    "lzma mailbox math mimetypes multiprocessing numbers operator optparse os pathlib "
    "pickle pkgutil platform plistlib poplib pprint queue quopri random re sched secrets "
    "selectors shelve shlex shutil smtplib socket socketserver sqlite3 ssl statistics "
    "string struct subprocess tarfile tempfile textwrap threading timeit tokenize trace "
    "traceback types typing unittest urllib.parse urllib.request uuid warnings wave "
    "weakref xml.dom.minidom xml.etree.ElementTree zipfile zoneinfo"
).split()

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z]+")


def _docstrings(module):
    seen = set()
    yield inspect.getdoc(module) or ""
    for _, obj in sorted(vars(module).items()):
        if id(obj) in seen or getattr(obj, "__module__", None) != module.__name__:
            continue
        seen.add(id(obj))
        yield inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            for _, member in sorted(vars(obj).items()):
                if callable(member):
                    yield inspect.getdoc(member) or ""


def _clean(paragraph):
    text = " ".join(paragraph.split())
    for s in _SPLIT.split(text):
        words = s.split()
        if not 6 <= len(words) <= 40 or not s.endswith("."):
            continue
        alpha = sum(len(w) for w in _WORD.findall(s))
        if alpha < 0.75 * len(s.replace(" ", "")):   # mostly prose, not code or tables
            continue
        if any(tok in s for tok in (">>>", "::", "==", "->", "${", "\\")):
            continue
        yield s


@lru_cache(maxsize=1)
def sentences():
    """All cleaned, unique sentences, sorted."""
    out = set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for doc in _docstrings(module):
            for paragraph in doc.split("\n\n"):
                out.update(_clean(paragraph))
    return tuple(sorted(out))


def _bucket(sentence):
    return int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:4], "big") % 4


def calibration_sentences(n=None):
    """A quarter of the sentences (hash bucket 0), for fitting codebooks."""
    s = [x for x in sentences() if _bucket(x) == 0]
    return s[:n] if n else s


def evaluation_sentences(n=None):
    """The other three quarters, never used for fitting.  With ``n``, an even spread."""
    s = [x for x in sentences() if _bucket(x) != 0]
    if n and n < len(s):
        step = len(s) / n
        s = [s[int(k * step)] for k in range(n)]
    return s
