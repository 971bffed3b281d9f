"""Checkers for the exercises in lessons/: each grades a student's answer against the library and says what is wrong."""
