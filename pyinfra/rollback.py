"""Roll the API back to the previous image: `uv run pyinfra inventory.py rollback.py`.

Runs `prodstack-release rollback` on each web host. During a blue/green bake it points
nginx back at the old set at once (still running, already warm). Otherwise it deploys the
previous image with the configured strategy, health-gated as a deploy, without
migrations. Then pin `image` to the previous tag (printed in the output) or fix
forward, or the next deploy brings the new image back.
"""

from pyinfra import host
from pyinfra.operations import server

if "web" in host.groups:
    server.shell(
        name="Roll back to the previous image (always runs: it is the requested action)",
        commands=["/usr/local/sbin/prodstack-release rollback",
                  "/usr/local/sbin/prodstack-release status"],
    )  # fmt: skip
