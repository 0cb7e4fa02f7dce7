"""The programs prodstack installs on its hosts: prodstack-release, prodstack-backup,
prodstack-restore, prodstack-restore-drill and prodstack-audit.

They run on the host under Debian 12's /usr/bin/python3 with the standard library only,
shipped as one archive (`python -m prodstack.host.zipapp` builds it) that every command
name links to; `__main__` picks the program by the name it was run as."""
