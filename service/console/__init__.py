"""How every ``ztml`` command talks to the terminal: failures and progress on stderr.

Each package's command line (``service/*/cli.py``) reports through these helpers, so all
commands fail and show progress the same way; ``service.cli`` only wires the commands.
"""

from service.console.failure import err_console, fail
from service.console.progress import work_progress

__all__ = ["err_console", "fail", "work_progress"]
