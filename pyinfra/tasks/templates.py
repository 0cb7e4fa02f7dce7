"""`template()`: files.template with paths under pyinfra/templates/ and settings as data."""

from __future__ import annotations

from pathlib import Path

from pyinfra.operations import files

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FILES = Path(__file__).resolve().parents[1] / "files"


def template(*, src: str, dest: str, mode: str = "644", user="root", group="root", **data):
    """Render templates/<src> to dest. Every template is also rendered by the unit tests."""
    return files.template(
        src=str(TEMPLATES / src),
        dest=dest,
        mode=mode,
        user=user,
        group=group,
        **data,
    )


def put(*, src: str, dest: str, mode: str = "755", **kwargs):
    """Upload a static file from pyinfra/files/."""
    return files.put(
        src=str(FILES / src), dest=dest, mode=mode, user="root", group="root", **kwargs
    )
