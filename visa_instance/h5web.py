"""jupyterlab-h5web's routes, answering a file h5py cannot open with a clear 400.

h5web's own handlers let h5py's OSError through ("Unhandled error", a 500), and the viewer of
a corrupt or truncated `.nxs` then shows nothing a user can act on. The same routes are added in
front of h5web's with its handlers, and only that error turned into a message naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_server.utils import url_path_join
from tornado.web import HTTPError, authenticated

ENDPOINTS = ("attr", "data", "meta", "paths")


def _readable_errors(handler_class: type) -> type:
    """A subclass of one of h5web's handlers whose unreadable files give a 400 with a message."""

    class ReadableErrors(handler_class):  # type: ignore[misc, valid-type]
        @authenticated  # as h5web's own get (which checks it again)
        def get(self) -> None:
            try:
                super().get()
            except (OSError, RuntimeError) as e:  # h5py: not HDF5, a bad superblock, truncated
                name = Path(self.get_query_argument("file", "")).name
                raise HTTPError(400, f"{name} cannot be opened as an HDF5/NeXus file ({e.__class__.__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else 'unreadable'})") from None

    ReadableErrors.__name__ = f"Readable{handler_class.__name__}"
    return ReadableErrors


def h5web_handlers(base_url: str, root_dir: str) -> list[tuple[str, type, dict[str, Any]]]:
    """Routes for h5web's endpoints, or none where jupyterlab-h5web is not installed."""
    try:
        from jupyterlab_h5web import handlers
    except ImportError:
        return []
    classes = {"attr": handlers.AttributeHandler, "data": handlers.DataHandler,
               "meta": handlers.MetadataHandler, "paths": handlers.PathsHandler}
    return [(url_path_join(base_url, "h5web", endpoint), _readable_errors(classes[endpoint]),
             {"base_dir": Path(root_dir)}) for endpoint in ENDPOINTS]
