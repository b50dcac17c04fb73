"""The `ld` command line (placeholder, filled in below)."""


def main(argv=None) -> int:
    raise SystemExit("ld: not yet implemented")
