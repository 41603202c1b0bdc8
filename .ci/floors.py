"""Prints the lowest versions pyproject.toml declares, one ``name==version``
a line: every runtime dependency's and, with ``--also NAME``, that optional
dependency's (e.g. the example's flax)."""

import argparse
import pathlib
import re

import tomllib

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--also", action="append", default=[], metavar="NAME")
args = parser.parse_args()
project = tomllib.loads(
    (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
)["project"]
optional = [s for specs in project["optional-dependencies"].values() for s in specs]
floors = {}
for spec in project["dependencies"] + optional:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", spec)
    if match:
        floors.setdefault(match[1], match[2])
for name in [re.split(r"[<>=! ]", s)[0] for s in project["dependencies"]] + args.also:
    if name not in floors:
        raise SystemExit(f"pyproject.toml declares no floor (>=) for {name}")
    print(f"{name}=={floors[name]}")
