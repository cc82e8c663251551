"""Recipes: ready-made workflows that turn an event into Dastra commands and messages.

A package of the worker role, one concern per module:
`settings` (RECIPES_*), `expressions` (the JMESPath language), `language` (load and check recipe
files, render a step), `runner` (the recipe agents in the worker), `execution` (one run, step by
step), `schedules` (the periodic recipes), `studio` and `studio_runner` (the studio's recipes and
requests, followed and run), `metrics` (the runner's series), `state` (runs in
dastra.recipe-runs.v1), `results` (step results from dastra.command-results.v1) and `privacy`
(triggers read under every payload mode).
"""
