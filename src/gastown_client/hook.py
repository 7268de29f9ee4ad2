"""``gastown-hook``: the Claude Code hook, as ``install-hooks`` runs it.

A launcher: Python compiles a script at every run (about 6 ms for the
client's 500 lines) but loads an imported module's bytecode from its cache,
so the client itself lives in ``hookclient`` and this file only finds it.
Run as ``<python> -I -S .../gastown_client/hook.py`` there is no package on
``sys.path``: the client is imported from this file's directory (appended,
after the standard library), which never loads the ``gastown_client``
package. Imported as ``gastown_client.hook`` (the ``gastown-hook`` console
script, ``python -m gastown_client.hook``, tests) it is the package's module.
Either way it has the client's names.
"""

import sys

if __package__:
    from gastown_client.hookclient import *  # noqa: F403
    from gastown_client.hookclient import main
else:  # a script, or imported from its own directory
    sys.path.append(__file__.rpartition("/")[0] or ".")
    from hookclient import *  # type: ignore[import-not-found]  # noqa: F403
    from hookclient import main  # type: ignore[no-redef]

if __name__ == "__main__":
    sys.exit(main())
