"""`template()`: files.template with paths under pyinfra/templates/ and settings as data."""

from __future__ import annotations

from pathlib import Path

from pyinfra import logger
from pyinfra.operations import files, systemd

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FILES = Path(__file__).resolve().parents[1] / "files"
# Where files holding secrets are uploaded before they are copied into place: 0700 and
# owned by the SSH user, so no other user can read one for an instant (tasks/base.py).
UPLOAD_DIR = "/var/lib/prodstack/upload"


def template(*, src: str, dest: str, mode: str = "644", user="root", group="root",
             secret: bool = False, **data):  # fmt: skip
    """Render templates/<src> to dest. Every template is also rendered by the unit tests.
    `secret=True` for a file that holds a secret: uploaded through UPLOAD_DIR."""
    extra = {"_temp_dir": UPLOAD_DIR} if secret else {}
    return files.template(
        src=str(TEMPLATES / src),
        dest=dest,
        mode=mode,
        user=user,
        group=group,
        **extra,
        **data,
    )


def no_diff_of_secrets() -> None:
    """pyinfra's `--diff` prints every file it changes, whole, before and after: the app's
    environment, the exporters' settings and the keys hold secrets. It is turned off for
    the run, loudly; `prodstack plan --profile vps` and `prodstack diff` show the same
    changes with every secret redacted."""
    from pyinfra import state

    if state.config.DIFF:
        banner("--diff is off for this run: the files it would print hold secrets. See the "
               "changes with `prodstack plan --profile vps` or `prodstack diff`, secrets "
               "redacted.")  # fmt: skip
        state.config.DIFF = False


def banner(text: str) -> None:
    """A warning the operator cannot miss among pyinfra's operation lines."""
    logger.warning("\n" + "!" * 78 + f"\n{text}\n" + "!" * 78)


def unit_file(*, label: str, **kwargs):
    """template() for a systemd unit or drop-in, and a daemon-reload when it changed.
    Returns the template operation (its change is what a restart waits on)."""
    op = template(**kwargs)
    systemd.daemon_reload(name=f"Reload systemd units ({label})", _if=op.did_change)
    return op


def put_secret(*, src: str, dest: str, mode: str = "600", **kwargs):
    """Upload a local file that holds a secret (a private key) through UPLOAD_DIR."""
    return files.put(src=src, dest=dest, mode=mode, _temp_dir=UPLOAD_DIR, **kwargs)


def put(*, src: str, dest: str, mode: str = "755", **kwargs):
    """Upload a static file from pyinfra/files/."""
    return files.put(
        src=str(FILES / src), dest=dest, mode=mode, user="root", group="root", **kwargs
    )


def timers(cfg, units: tuple[str, ...], *, label: str, **data) -> None:
    """Install systemd units from templates/<unit>.j2.<type> (rendered with cfg and
    `data`), reload systemd only when one changed, and keep every timer among them
    enabled and running."""
    ops = [
        template(
            name=f"Unit {unit}",
            src=unit.replace(".", ".j2.", 1),
            dest=f"/etc/systemd/system/{unit}",
            cfg=cfg,
            **data,
        )
        for unit in units
    ]
    systemd.daemon_reload(
        name=f"Reload systemd units ({label})", _if=lambda: any(op.did_change() for op in ops)
    )
    for unit in units:
        if unit.endswith(".timer"):
            systemd.service(name=f"{unit} enabled", service=unit, running=True, enabled=True)


def restart_on_change(unit: str, trigger, *, label: str, reload: bool = False) -> None:
    """Keep a service running and enabled; restart (or reload) it when `trigger` changed."""
    systemd.service(name=f"{label} running and enabled", service=unit, running=True,
                    enabled=True)  # fmt: skip
    systemd.service(
        name=f"{'Reload' if reload else 'Restart'} {label} for the new configuration",
        service=unit,
        restarted=not reload,
        reloaded=reload,
        _if=trigger,
    )
