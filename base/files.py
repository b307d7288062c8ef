"""Writing output files whole or not at all."""

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["write_files"]


def write_files(out_dir, files, *, mode=None):
    """Write ``{name: text}`` into ``out_dir``: all files appear whole, or none of them do.

    Every file is first written to a temporary name beside its target, then
    all are renamed; on any error the temporaries and the files already
    renamed are removed (a directory this call created is removed too).  The
    files get the permissions the umask gives (``0o666 & ~umask``), as ``open``
    would, not the owner-only mode of a temporary file.
    """
    umask = os.umask(0)
    os.umask(umask)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    temps, done = [], []
    try:
        for name, text in files.items():
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
            temps.append(Path(tmp))
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, name in zip(temps, files):
            os.replace(tmp, out_dir / name)
            done.append(out_dir / name)
    except BaseException:
        for path in temps + done:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return done
