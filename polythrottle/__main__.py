from polythrottle.cli import run

run()
