"""Reading the refer toolkit's ``refs(umd).p`` without letting it run code.

The file is a pickle downloaded from the internet, and unpickling can execute anything a pickle names. The
refs are plain lists, dicts, strings and numbers, which pickle encodes with opcodes that need no globals; so
this unpickler refuses every global (``find_class``) and every persistent id, which is what code execution
through pickle requires. Python 2 era strings are read as latin-1.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from ivt_core.errors import InvalidInputError


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: only plain containers and scalars allowed")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refuses persistent ids")


def load_plain_pickle(path: Path) -> object:
    """Unpickle ``path`` if it holds only plain data. Raises InvalidInputError naming the file otherwise."""
    try:
        data = path.read_bytes()
        return _PlainDataUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InvalidInputError(f"{path} was refused: {exc}. It is not a plain refer refs file.") from exc
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as exc:
        raise InvalidInputError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc})") from exc
