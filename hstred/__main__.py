from hstred.cli import run

run()
