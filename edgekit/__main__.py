"""`python -m edgekit` runs the CLI."""

from edgekit.cli import cli

if __name__ == "__main__":
    cli()
