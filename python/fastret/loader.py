"""Salt loader entry point: tells Salt where fastret's returner modules are."""

import os

RETURNERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "returners")


def get_dirs():
    """Entry point of group ``salt.loader``: loader type -> directories."""
    return {"returners": [RETURNERS_DIR]}
