"""Write pyinfra/secrets.env with fresh random secrets, unless it exists (never overwrites).

    uv run python pyinfra/new_secrets.py [PATH]

The file is gitignored. Keep a copy in your password manager: the DR runbook needs it.
"""

import secrets
import sys
from pathlib import Path

# BACKUP_CIPHER_PASSPHRASE encrypts the backups: without it they cannot be restored.
NAMES = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "API_TOKEN", "BACKUP_CIPHER_PASSPHRASE")


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "secrets.env"
    if path.exists():
        print(f"{path} exists; not touching it", file=sys.stderr)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{name}={secrets.token_urlsafe(32)}" for name in NAMES]
    path.touch(mode=0o600)
    path.write_text(
        "# prodstack secrets: outside git, mode 0600. PRODSTACK_<NAME> env vars override.\n"
        "# Add BACKUP_S3_ACCESS_KEY_ID / BACKUP_S3_SECRET_ACCESS_KEY with backup_s3_bucket.\n"
        + "\n".join(lines)
        + "\n"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
