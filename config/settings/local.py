"""Single-host development run (`make run`): SQLite under var/, embedded broker, debug on."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DEBUG", True)

# The single-host run keeps its state under var/; create it so a first `migrate` just works.
VAR_DIR.mkdir(parents=True, exist_ok=True)  # noqa: F405
