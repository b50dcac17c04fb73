"""`python -m ld ...`: the `latentdiffuser` command, for an environment whose scripts are not on PATH."""

from ld.cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
