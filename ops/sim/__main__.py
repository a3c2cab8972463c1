"""``python -m ops.sim --host 127.0.0.1 --port 9100 --rpm 600 --tpm 60000 [--config sim.yaml]``."""

import typer

from ops.sim.cli import sim


def main() -> None:
    typer.run(sim)


if __name__ == "__main__":
    main()
