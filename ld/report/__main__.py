"""`python -m ld.report report SUITE --results URI ...`: `latentdiffuser report` without the rest of the CLI."""

from ld.report import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
