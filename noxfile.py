"""The other end of the torch range in CI (docs/install.md), and mutation testing (docs/testing.md).

    nox -s floor      # torch 2.4.1 + torchvision 0.19.1 (the floor of pyproject.toml), the fast suite
    nox -s mutants    # tools/mutants.py: mutation scores of the modules that compute results (not run in CI)

The newest end is the README's own environment (`pip install -e ".[dev]"`, torch 2.14.1 here). The session
installs its torch first, then tks with the extras the tests use, and checks that installing tks left that torch
as it was: the promise of docs/install.md. SpikingJelly (it asks for torch>=2.6) and the NIR
importers of other frameworks are left out at the floor; their tests skip, saying so. `pytest` arguments go after
`--`, e.g. `nox -s floor -- tests/test_losses.py`.
"""

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["floor"]

FLOOR = ("torch==2.4.1", "torchvision==0.19.1")
EXTRAS = ".[test,vision,events,plots,nir]"
CHECK_TORCH = "import sys, torch; v = torch.__version__; sys.exit(None if v.split('+')[0] == sys.argv[1] else v)"


@nox.session
def floor(session: nox.Session) -> None:
    """The fast suite on the oldest torch tks supports."""
    session.install(*FLOOR)
    session.install("-e", EXTRAS)
    session.run("python", "-c", CHECK_TORCH, "2.4.1")  # the version without its local label (+cu121)
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the modules that compute results; targets after ``--``, e.g. ``losses``."""
    session.install("-e", ".[dev]")
    session.run("python", "tools/mutants.py", *session.posargs)
