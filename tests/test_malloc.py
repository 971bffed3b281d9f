"""The allocator setting of malloc.py: applied on glibc, and left alone when the user asks."""

import os
import subprocess
import sys

import pytest

from minifope import malloc

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")


def applied(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MINIFOPE_MALLOC"}
    out = subprocess.run([sys.executable, "-c", "import minifope.malloc as m; print(m.APPLIED)"],
                         env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_minifope_sets_the_allocator_on_glibc():
    assert applied() == "True"


@pytest.mark.parametrize("env", [{"MINIFOPE_MALLOC": "default"}, {"MALLOC_ARENA_MAX": "4"}])
def test_a_user_choice_of_allocator_settings_is_left_alone(env):
    assert applied(**env) == "False"


def test_the_settings_are_the_documented_ones():
    assert dict(malloc.SETTINGS) == {malloc.M_MMAP_THRESHOLD: 32 * 2**20,
                                     malloc.M_TRIM_THRESHOLD: 512 * 2**20, malloc.M_ARENA_MAX: 1}
